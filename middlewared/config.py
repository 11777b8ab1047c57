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
    # Calls in one batch frame; a larger batch is refused whole (-32600).
    max_batch: int = 256
    # Subscriptions one connection may hold.
    max_subscriptions: int = 128
    # Jobs not yet ended that one connection may hold (legacy_jobs calls return at once).
    max_live_jobs_per_connection: int = 1000
    # ... and one user, over all their connections and API keys.
    max_live_jobs_per_user: int = 5000
    # Calls in one core.bulk.
    max_bulk_calls: int = 1000
    # A job result larger than this (encoded) is kept beside the job, not in its record.
    max_result_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """Connections that have not logged in: deadlines and caps, so that they cannot starve
    logged-in work of sockets and file descriptors."""

    # An HTTP request whose headers are not all in within this is dropped; also how long a
    # keep-alive connection may sit idle between requests.
    header_timeout_seconds: float = 10.0
    # A WebSocket not logged in within this is closed with 4001 ("Login timeout").
    login_timeout_seconds: float = 60.0
    # Connections not logged in (waiting for request headers, or WebSockets before login), in
    # all and per client address (IPv6: per /64); past either, new ones get 503.
    max_unauthenticated: int = 1024
    max_unauthenticated_per_address: int = 256
    # File descriptors kept for logged-in work: new connections are dropped at once while
    # fewer than this many would remain under RLIMIT_NOFILE (0: none kept).
    fd_reserve: int = 128


@dataclass(frozen=True)
class TriggerLimits:
    """Triggers and their webhooks."""

    # Webhooks with auth kind "none" are refused at create time unless this is set.
    allow_unsigned_webhooks: bool = False
    # A webhook body larger than this gets 413.
    max_webhook_body: int = 1024 * 1024
    # Failed webhook signatures per address in --login-window, past which: 429 (counted
    # apart from failed logins).
    webhook_max_failures: int = 20


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
    # Password checks waiting or running at once (each costs ~30 ms and 16 MiB); past it a
    # login is refused with EBUSY.
    max_hashing: int = 64


@dataclass(frozen=True)
class TransferLimits:
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
class QueryLimits:
    """What one query (``core.get_jobs``, ``*.query``) may cost the server."""

    # Conditions in one filter, counting those inside OR; past it: -32602.
    max_conditions: int = 64
    # Seconds all the ``~`` conditions of one query may spend matching; past it: -32602.
    regex_seconds: float = 0.1
    # Seconds one query may spend reading the store; past it: -32001 (ETIMEDOUT).
    timeout_seconds: float = 5.0
    # Stored jobs one query may hold in memory at once (its answer, and rows it must sort
    # in Python); past it: -32602. The default retention keeps at most this many jobs.
    max_rows: int = 100_000


@dataclass(frozen=True)
class NotifyLimits:
    """Notifiers: what telling them of a job's end may cost."""

    # Seconds one webhook delivery may take (a mail's bound is the mail settings' timeout).
    timeout_seconds: float = 10.0
    # Deliveries in progress at once; more wait their turn.
    concurrency: int = 4
    # Notifications waiting to be delivered; past it a new one is dropped (and logged).
    max_pending: int = 1000
    # Notifiers that may exist (notifier.create past it: EBUSY).
    max_notifiers: int = 1000
    # Bytes of a job's log a mail carries (its tail).
    max_log_bytes: int = 256 * 1024


@dataclass(frozen=True)
class CommandLimits:
    """Commands: what running the user's own programs may cost."""

    # Runs at once across all commands (karajo's max_job_running); more wait their turn.
    max_running: int = 1
    # Bytes a job's log may hold (every job's, a command's output included); past it the
    # log says it was cut and the rest is dropped.
    max_job_log: int = 64 * 1024 * 1024
    # Seconds between SIGTERM and SIGKILL to a command's process group (abort, timeout,
    # shutdown, leftovers of a line that exited).
    kill_grace_seconds: float = 5.0
    # Commands that may exist (command.create past it: EBUSY).
    max_commands: int = 1000


@dataclass(frozen=True)
class Transports:
    """How clients reach the server besides plain HTTP on ``host:port``."""

    # --tls-cert / --tls-key, or --tls-self-signed: HTTPS and WSS on the same port.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    # --unix-socket: the API on a local socket; uid 0 and the server's own uid are root
    # there from the start (SO_PEERCRED); with unix_socket_users, a peer whose system user
    # name is a middlewared user's is that user.
    unix_socket: Path | None = None
    unix_socket_mode: int = 0o600
    unix_socket_group: str | None = None
    unix_socket_users: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_self_signed or self.tls_cert is not None


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
    transfers: TransferLimits = field(default_factory=TransferLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    triggers: TriggerLimits = field(default_factory=TriggerLimits)
    query: QueryLimits = field(default_factory=QueryLimits)
    notify: NotifyLimits = field(default_factory=NotifyLimits)
    commands: CommandLimits = field(default_factory=CommandLimits)
    transports: Transports = field(default_factory=Transports)
    # "full": fsync each group commit (survives power loss); "normal": survives a crash.
    durability: str = "full"
    # Seconds given to running jobs to end on SIGTERM before they are aborted.
    shutdown_grace_seconds: float = 10.0
    # --config FILE: its [[trigger]] tables are loaded at start and on SIGHUP.
    config_file: Path | None = None

    # Where the store lives: sqlite:///path (default: <data-dir>/middlewared.db),
    # memory:// (nothing kept: tests and trials).
    store: str | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "middlewared.db"

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite://{self.db_path.resolve()}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def commands_dir(self) -> Path:
        """Each command's working directory: ``<data-dir>/commands/<name>/``."""
        return self.data_dir / "commands"

    @property
    def spool_dir(self) -> Path:
        """Uploads and buffered downloads in transit (emptied at start)."""
        return self.data_dir / "spool"

    @property
    def roots(self) -> tuple[Path, ...]:
        """Filesystem roots, resolved; ``<data-dir>/files`` when none are given."""
        roots = self.fs_roots or (self.data_dir / "files",)
        return tuple(p.resolve() for p in roots)
