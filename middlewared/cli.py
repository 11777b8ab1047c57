"""The ``middlewared`` command: parse options, prepare the data dir, run the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from middlewared import __version__, configfile
from middlewared.config import (
    CommandLimits,
    ConnectionLimits,
    Limits,
    LoginThrottle,
    NotifyLimits,
    QueryLimits,
    Retention,
    ServerConfig,
    TransferLimits,
    Transports,
    TriggerLimits,
)
from middlewared.errors import MiddlewareError

log = logging.getLogger("middlewared")

DEFAULT_DATA_DIR = os.environ.get("MIDDLEWARED_DATA_DIR", "./data")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="middlewared", description=__doc__)
    p.add_argument("--version", action="version", version=f"middlewared {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a TOML file: any option below as a top-level key (the command line wins), and "
        "[[trigger]] tables, loaded at start and again on SIGHUP",
    )
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
    p.add_argument(
        "--store",
        default=None,
        help="where jobs, users and settings are kept: sqlite:///PATH (default "
        "<data-dir>/middlewared.db) or memory:// (nothing survives a restart)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="auto: uvloop where it is installed (a dependency on Linux and macOS), else "
        "asyncio's own loop",
    )
    p.add_argument(
        "--durability",
        choices=["full", "normal"],
        default="full",
        help="full: fsync every group commit; normal: survive crashes, not power loss",
    )
    p.add_argument(
        "--max-frame",
        type=int,
        default=Limits.max_frame,
        help="bytes; a WebSocket message larger than this (all its fragments) closes the "
        "connection with 1009, checked as frames arrive (default: %(default)s)",
    )
    p.add_argument(
        "--max-frame-unauthenticated",
        type=int,
        default=Limits.max_frame_unauthenticated,
        help="bytes; the same before login (default: %(default)s)",
    )
    p.add_argument("--max-inflight", type=int, default=Limits.max_inflight)
    p.add_argument("--max-pending-events", type=int, default=Limits.max_pending_events)
    p.add_argument(
        "--slow-reader-grace",
        type=float,
        default=Limits.slow_reader_grace_seconds,
        help="seconds a reader past --max-pending-events has to take the 4008 close",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=Limits.max_batch,
        help="calls in one batch frame; a larger batch is refused whole (-32600)",
    )
    p.add_argument(
        "--max-subscriptions",
        type=int,
        default=Limits.max_subscriptions,
        help="subscriptions one connection may hold",
    )
    p.add_argument(
        "--max-live-jobs-per-connection",
        type=int,
        default=Limits.max_live_jobs_per_connection,
        help="jobs not yet ended one connection may hold (EBUSY past it)",
    )
    p.add_argument(
        "--max-live-jobs-per-user",
        type=int,
        default=Limits.max_live_jobs_per_user,
        help="jobs not yet ended one user may hold over all connections (EBUSY past it)",
    )
    p.add_argument(
        "--max-bulk-calls",
        type=int,
        default=Limits.max_bulk_calls,
        help="calls in one core.bulk",
    )
    p.add_argument(
        "--max-result-size",
        type=int,
        default=Limits.max_result_bytes,
        help="bytes; a larger job result is kept beside the job (core.job_download_result) "
        "instead of in its record",
    )
    p.add_argument(
        "--max-login-hashing",
        type=int,
        default=LoginThrottle.max_hashing,
        help="password checks in progress at once; past it logins get EBUSY",
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
        default=TransferLimits.max_upload_bytes,
        help="bytes; larger uploads get 413",
    )
    p.add_argument(
        "--download-start-timeout",
        type=float,
        default=TransferLimits.download_start_seconds,
        help="seconds an unbuffered download has to start before its job is aborted",
    )
    p.add_argument(
        "--upload-idle-timeout",
        type=float,
        default=TransferLimits.upload_idle_seconds,
        help="seconds an upload may send nothing before it is cut off (408)",
    )
    p.add_argument(
        "--download-keep",
        type=float,
        default=TransferLimits.download_keep_seconds,
        help="seconds buffered output is kept after its job ends",
    )
    p.add_argument(
        "--spool-quota-per-user",
        type=int,
        default=TransferLimits.spool_quota_per_user,
        help="bytes one user's uploads and buffered downloads may hold in the spool at once "
        "(default 4 GiB; 0: no limit); past it an upload gets 507 and a job writing buffered "
        "output fails with EDQUOT",
    )
    p.add_argument(
        "--spool-quota",
        type=int,
        default=TransferLimits.spool_quota,
        help="bytes all users' uploads and buffered downloads may hold in the spool at once "
        "(default 16 GiB; 0: no limit); past it: 507, ENOSPC",
    )
    _connection_options(p)
    _query_options(p)
    _trigger_options(p)
    _notify_options(p)
    _command_options(p)
    _transport_options(p)
    return p


def _octal_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode (0600, 0660)") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r}: a mode is 0 to 0777")
    return mode


def _transport_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): HTTPS and WSS only")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="serve HTTPS and WSS with a certificate made once and kept in "
        "<data-dir>/tls/ (its SHA-256 fingerprint is printed at start)",
    )
    p.add_argument(
        "--unix-socket",
        type=Path,
        help="also serve the API on this local socket (TrueNAS's: "
        "/var/run/middleware/middlewared.sock); uid 0 and the server's uid are root there",
    )
    p.add_argument(
        "--unix-socket-mode",
        type=_octal_mode,
        default=Transports.unix_socket_mode,
        help="the socket's mode (default 0600; 0660 with --unix-socket-group; 0666 as TrueNAS)",
    )
    p.add_argument("--unix-socket-group", help="the socket's group (a name or a gid)")
    p.add_argument(
        "--unix-socket-users",
        action="store_true",
        help="a socket peer whose system user name is a middlewared user's is that user "
        "without logging in (default: other peers must log in)",
    )


def transports_from_args(args: argparse.Namespace) -> Transports:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise configfile.ConfigError(Path("--tls-cert"), 0, "--tls-cert and --tls-key go together")
    if args.tls_self_signed and args.tls_cert is not None:
        raise configfile.ConfigError(
            Path("--tls-self-signed"), 0, "either --tls-self-signed or --tls-cert, not both"
        )
    return Transports(
        tls_cert=args.tls_cert.resolve() if args.tls_cert else None,
        tls_key=args.tls_key.resolve() if args.tls_key else None,
        tls_self_signed=args.tls_self_signed,
        unix_socket=args.unix_socket.absolute() if args.unix_socket else None,
        unix_socket_mode=args.unix_socket_mode,
        unix_socket_group=args.unix_socket_group,
        unix_socket_users=args.unix_socket_users,
    )


def _command_options(p: argparse.ArgumentParser) -> None:
    c = CommandLimits
    p.add_argument(
        "--max-running-commands",
        type=_positive(int),
        default=c.max_running,
        help="command runs at once, across all commands; more wait their turn "
        "(karajo's max_job_running; default %(default)s)",
    )
    p.add_argument(
        "--max-job-log",
        type=_positive(int),
        default=c.max_job_log,
        help="bytes a job's log may hold (a command's output included); past it the log "
        "says it was cut and the rest is dropped (default %(default)s)",
    )
    p.add_argument(
        "--command-kill-grace",
        type=_positive(float),
        default=c.kill_grace_seconds,
        help="seconds between SIGTERM and SIGKILL to a command's process group on abort, "
        "timeout or shutdown (default %(default)s)",
    )
    p.add_argument(
        "--max-commands",
        type=_positive(int),
        default=c.max_commands,
        help="commands that may exist; command.create past it: EBUSY (default %(default)s)",
    )


def _trigger_options(p: argparse.ArgumentParser) -> None:
    t = TriggerLimits
    p.add_argument(
        "--allow-unsigned-webhooks",
        action="store_true",
        help="accept webhook triggers whose auth kind is none (refused by default)",
    )
    p.add_argument(
        "--max-webhook-body",
        type=int,
        default=t.max_webhook_body,
        help="bytes; a larger webhook body gets 413 (default %(default)s)",
    )
    p.add_argument(
        "--webhook-max-failures",
        type=int,
        default=t.webhook_max_failures,
        help="failed webhook signatures per address in --login-window before 429 "
        "(counted apart from logins; default %(default)s)",
    )


def _connection_options(p: argparse.ArgumentParser) -> None:
    """Limits on connections that have not logged in."""
    p.add_argument(
        "--header-timeout",
        type=float,
        default=ConnectionLimits.header_timeout_seconds,
        help="seconds an HTTP request has to send all its headers, and a keep-alive "
        "connection may idle between requests, before it is dropped (default: %(default)s)",
    )
    p.add_argument(
        "--login-timeout",
        type=float,
        default=ConnectionLimits.login_timeout_seconds,
        help="seconds a WebSocket has to log in before it is closed with 4001 "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-unauthenticated",
        type=int,
        default=ConnectionLimits.max_unauthenticated,
        help="connections not logged in (waiting for headers, or WebSockets before login); "
        "past it new connections get 503 (default: %(default)s)",
    )
    p.add_argument(
        "--max-unauthenticated-per-address",
        type=int,
        default=ConnectionLimits.max_unauthenticated_per_address,
        help="the same from one client address, an IPv6 /64 counting as one (default: %(default)s)",
    )
    p.add_argument(
        "--fd-reserve",
        type=int,
        default=ConnectionLimits.fd_reserve,
        help="file descriptors kept for logged-in work: new connections are dropped while "
        "fewer would remain under the open-files limit (ulimit -n); 0: none kept "
        "(default: %(default)s)",
    )


def _query_options(p: argparse.ArgumentParser) -> None:
    q = QueryLimits
    p.add_argument(
        "--max-query-conditions",
        type=int,
        default=q.max_conditions,
        help="conditions one query filter may hold, inside ORs too (default %(default)s); "
        "past it: -32602",
    )
    p.add_argument(
        "--query-regex-budget",
        type=float,
        default=q.regex_seconds,
        help="seconds all the ~ conditions of one query may spend matching, together "
        "(default %(default)s); past it: -32602",
    )
    p.add_argument(
        "--query-timeout",
        type=float,
        default=q.timeout_seconds,
        help="seconds one core.get_jobs may spend reading the store (default %(default)s); "
        "past it: -32001 ETIMEDOUT",
    )
    p.add_argument(
        "--query-max-rows",
        type=int,
        default=q.max_rows,
        help="stored jobs one query may hold in memory: its answer, and rows it sorts in "
        "Python (default %(default)s); past it: -32602 (page with limit or a cursor)",
    )


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number above zero, or a clear error."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


def _notify_options(p: argparse.ArgumentParser) -> None:
    n = NotifyLimits
    p.add_argument(
        "--notify-timeout",
        type=_positive(float),
        default=n.timeout_seconds,
        help="seconds one webhook notification may take (default %(default)s); a mail "
        "notification is bounded by the mail settings' timeout",
    )
    p.add_argument(
        "--notify-concurrency",
        type=_positive(int),
        default=n.concurrency,
        help="notifications delivered at once; more wait their turn (default %(default)s)",
    )
    p.add_argument(
        "--max-pending-notifications",
        type=_positive(int),
        default=n.max_pending,
        help="notifications waiting for delivery; past it a new one is dropped and logged "
        "(default %(default)s)",
    )
    p.add_argument(
        "--max-notifiers",
        type=_positive(int),
        default=n.max_notifiers,
        help="notifiers that may exist; notifier.create past it: EBUSY (default %(default)s)",
    )
    p.add_argument(
        "--notify-max-log",
        type=_positive(int),
        default=n.max_log_bytes,
        help="bytes of a job's log a notification mail carries, its last ones "
        "(default %(default)s)",
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir.resolve(),
        fs_roots=tuple(args.fs_root),
        plugin_dirs=tuple(args.plugins_dir),
        store=args.store,
        limits=Limits(
            max_frame_unauthenticated=args.max_frame_unauthenticated,
            max_frame=args.max_frame,
            max_inflight=args.max_inflight,
            max_pending_events=args.max_pending_events,
            slow_reader_grace_seconds=args.slow_reader_grace,
            max_batch=args.max_batch,
            max_subscriptions=args.max_subscriptions,
            max_live_jobs_per_connection=args.max_live_jobs_per_connection,
            max_live_jobs_per_user=args.max_live_jobs_per_user,
            max_bulk_calls=args.max_bulk_calls,
            max_result_bytes=args.max_result_size,
        ),
        retention=Retention(
            args.retention_days * 86400, args.retention_count, args.retention_interval
        ),
        login_throttle=LoginThrottle(
            args.login_max_failures, args.login_window, args.max_login_hashing
        ),
        durability=args.durability,
        shutdown_grace_seconds=args.shutdown_grace,
        transfers=TransferLimits(
            args.max_upload_size,
            args.download_start_timeout,
            args.download_keep,
            args.upload_idle_timeout,
            spool_quota_per_user=args.spool_quota_per_user,
            spool_quota=args.spool_quota,
        ),
        connections=ConnectionLimits(
            header_timeout_seconds=args.header_timeout,
            login_timeout_seconds=args.login_timeout,
            max_unauthenticated=args.max_unauthenticated,
            max_unauthenticated_per_address=args.max_unauthenticated_per_address,
            fd_reserve=args.fd_reserve,
        ),
        triggers=TriggerLimits(
            allow_unsigned_webhooks=args.allow_unsigned_webhooks,
            max_webhook_body=args.max_webhook_body,
            webhook_max_failures=args.webhook_max_failures,
        ),
        query=QueryLimits(
            max_conditions=args.max_query_conditions,
            regex_seconds=args.query_regex_budget,
            timeout_seconds=args.query_timeout,
            max_rows=args.query_max_rows,
        ),
        notify=NotifyLimits(
            timeout_seconds=args.notify_timeout,
            concurrency=args.notify_concurrency,
            max_pending=args.max_pending_notifications,
            max_notifiers=args.max_notifiers,
            max_log_bytes=args.notify_max_log,
        ),
        config_file=args.config.resolve() if args.config is not None else None,
        commands=CommandLimits(
            max_running=args.max_running_commands,
            max_job_log=args.max_job_log,
            kill_grace_seconds=args.command_kill_grace,
            max_commands=args.max_commands,
        ),
        transports=transports_from_args(args),
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, over the --config file's options (ConfigError if it is bad)."""
    p = parser()
    known, _ = p.parse_known_args(argv)
    if known.config is None:
        return p.parse_args(argv)
    options = configfile.read(known.config, p).options
    appended = {a.dest for a in p._actions if isinstance(a, argparse._AppendAction)}
    # The file's values become the defaults, so that anything given on the command line
    # wins, even a value equal to the default; a repeatable option given there replaces
    # the file's list.
    p.set_defaults(**{k: v for k, v in options.items() if k not in appended})
    args = p.parse_args(argv)
    for dest in appended & options.keys():
        if not getattr(args, dest):
            setattr(args, dest, options[dest])
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        config = config_from_args(args)
    except configfile.ConfigError as e:
        print(f"middlewared: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from middlewared.app import Middleware
    from middlewared.http.server import serve

    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.event_loop)) as runner:
            runner.run(serve(Middleware(config)))
    except (OSError, MiddlewareError, configfile.ConfigError) as e:
        # Store backends turn their own errors into MiddlewareErrors with the errno.
        print(f"middlewared: {e}", file=sys.stderr)
        return 1
    return 0


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed and not declined, else asyncio's own loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("middlewared: --event-loop uvloop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
