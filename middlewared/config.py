"""Server configuration: one frozen dataclass built from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Protocol limits that protect the server from one connection."""

    # A frame larger than this before login closes the connection with 1009.
    max_frame_unauthenticated: int = 64 * 1024
    # ... and after login.
    max_frame: int = 16 * 1024 * 1024
    # Calls in flight on one connection; past it: -32000.
    max_inflight: int = 256
    # Events waiting for a slow reader before it is disconnected (close 4008).
    max_pending_events: int = 10_000
    # Seconds a reader let go of has to take the 4008 close frame before its connection
    # is reset (the close waits behind what the socket already holds).
    slow_reader_grace_seconds: float = 10.0


@dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept."""

    max_age_seconds: float = 7 * 24 * 3600.0
    max_count: int = 100_000
    interval_seconds: float = 60.0


@dataclass(frozen=True)
class LoginThrottle:
    """Failed logins allowed per client address in a sliding window."""

    max_failures: int = 5
    window_seconds: float = 60.0


@dataclass(frozen=True)
class Transfers:
    """File transfers in and out of jobs."""

    # Largest upload accepted (all files of one request); past it: 413.
    max_upload_bytes: int = 64 * 1024**3
    # An unbuffered download must start within this, or its job is aborted (URL: 410).
    download_start_seconds: float = 60.0
    # Buffered output is kept this long after its job ended, then removed (URL: 410).
    download_keep_seconds: float = 3600.0
    # An upload that sends nothing for this long is cut off (408) and its job fails.
    upload_idle_seconds: float = 60.0
    # Bytes one user's uploads and buffered downloads may hold in the spool (0: no limit);
    # past it an upload gets 507 and a job writing buffered output fails with EDQUOT.
    spool_quota_per_user: int = 4 * 1024**3
    # ... and all users' together (past it: 507, ENOSPC).
    spool_quota: int = 16 * 1024**3


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 6000
    data_dir: Path = Path("./data")
    fs_roots: tuple[Path, ...] = ()
    plugin_dirs: tuple[Path, ...] = ()
    builtin_plugins: bool = True
    limits: Limits = field(default_factory=Limits)
    retention: Retention = field(default_factory=Retention)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    transfers: Transfers = field(default_factory=Transfers)
    # "full": fsync each group commit (survives power loss); "normal": survives a crash.
    durability: str = "full"
    # Seconds given to running jobs to end on SIGTERM before they are aborted.
    shutdown_grace_seconds: float = 10.0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "middlewared.db"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def spool_dir(self) -> Path:
        """Uploads and buffered downloads in transit (emptied at start)."""
        return self.data_dir / "spool"

    @property
    def roots(self) -> tuple[Path, ...]:
        """Filesystem roots, resolved; ``<data-dir>/files`` when none are given."""
        roots = self.fs_roots or (self.data_dir / "files",)
        return tuple(p.resolve() for p in roots)
