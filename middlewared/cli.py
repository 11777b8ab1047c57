"""The ``middlewared`` command: parse options, prepare the data dir, run the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from middlewared import __version__
from middlewared.config import Limits, LoginThrottle, Retention, ServerConfig, Transfers
from middlewared.errors import MiddlewareError

log = logging.getLogger("middlewared")

DEFAULT_DATA_DIR = os.environ.get("MIDDLEWARED_DATA_DIR", "./data")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="middlewared", description=__doc__)
    p.add_argument("--version", action="version", version=f"middlewared {__version__}")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=6000, help="port (0: any free port)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(DEFAULT_DATA_DIR),
        help="where the database, logs and root.password live (default ./data; "
        "/var/lib/middlewared under systemd)",
    )
    p.add_argument(
        "--fs-root",
        type=Path,
        action="append",
        default=[],
        help="a root the filesystem methods may touch (repeatable; default <data-dir>/files)",
    )
    p.add_argument(
        "--plugins-dir",
        type=Path,
        action="append",
        default=[],
        help="a folder of plugin modules to load besides the built-in ones",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--durability",
        choices=["full", "normal"],
        default="full",
        help="full: fsync every group commit; normal: survive crashes, not power loss",
    )
    p.add_argument("--max-frame", type=int, default=Limits.max_frame)
    p.add_argument(
        "--max-frame-unauthenticated", type=int, default=Limits.max_frame_unauthenticated
    )
    p.add_argument("--max-inflight", type=int, default=Limits.max_inflight)
    p.add_argument("--max-pending-events", type=int, default=Limits.max_pending_events)
    p.add_argument(
        "--slow-reader-grace",
        type=float,
        default=Limits.slow_reader_grace_seconds,
        help="seconds a reader past --max-pending-events has to take the 4008 close",
    )
    p.add_argument("--retention-days", type=float, default=Retention.max_age_seconds / 86400)
    p.add_argument("--retention-count", type=int, default=Retention.max_count)
    p.add_argument("--retention-interval", type=float, default=Retention.interval_seconds)
    p.add_argument("--login-max-failures", type=int, default=LoginThrottle.max_failures)
    p.add_argument("--login-window", type=float, default=LoginThrottle.window_seconds)
    p.add_argument("--shutdown-grace", type=float, default=10.0)
    p.add_argument(
        "--max-upload-size",
        type=int,
        default=Transfers.max_upload_bytes,
        help="bytes; larger uploads get 413",
    )
    p.add_argument(
        "--download-start-timeout",
        type=float,
        default=Transfers.download_start_seconds,
        help="seconds an unbuffered download has to start before its job is aborted",
    )
    p.add_argument(
        "--upload-idle-timeout",
        type=float,
        default=Transfers.upload_idle_seconds,
        help="seconds an upload may send nothing before it is cut off (408)",
    )
    p.add_argument(
        "--download-keep",
        type=float,
        default=Transfers.download_keep_seconds,
        help="seconds buffered output is kept after its job ends",
    )
    p.add_argument(
        "--spool-quota-per-user",
        type=int,
        default=Transfers.spool_quota_per_user,
        help="bytes one user's uploads and buffered downloads may hold in the spool at once "
        "(default 4 GiB; 0: no limit); past it an upload gets 507 and a job writing buffered "
        "output fails with EDQUOT",
    )
    p.add_argument(
        "--spool-quota",
        type=int,
        default=Transfers.spool_quota,
        help="bytes all users' uploads and buffered downloads may hold in the spool at once "
        "(default 16 GiB; 0: no limit); past it: 507, ENOSPC",
    )
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir.resolve(),
        fs_roots=tuple(args.fs_root),
        plugin_dirs=tuple(args.plugins_dir),
        limits=Limits(
            args.max_frame_unauthenticated,
            args.max_frame,
            args.max_inflight,
            args.max_pending_events,
            args.slow_reader_grace,
        ),
        retention=Retention(
            args.retention_days * 86400, args.retention_count, args.retention_interval
        ),
        login_throttle=LoginThrottle(args.login_max_failures, args.login_window),
        durability=args.durability,
        shutdown_grace_seconds=args.shutdown_grace,
        transfers=Transfers(
            args.max_upload_size,
            args.download_start_timeout,
            args.download_keep,
            args.upload_idle_timeout,
            spool_quota_per_user=args.spool_quota_per_user,
            spool_quota=args.spool_quota,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    from middlewared.app import Middleware
    from middlewared.http.server import serve

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(Middleware(config)))
    except (OSError, MiddlewareError) as e:
        print(f"middlewared: {e}", file=sys.stderr)
        return 1
    except sqlite3.Error as e:
        from middlewared.store.faults import store_error

        print(
            f"middlewared: {store_error('Cannot use the store', e, args.data_dir)}", file=sys.stderr
        )
        return 1
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (the ``fast`` extra), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
