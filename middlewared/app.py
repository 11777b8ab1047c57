"""The composition root: builds the store, bus, auth, job engine and call path, mounts the
core services and the plugins, and starts them in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from middlewared import configfile, datadir, jobsd
from middlewared.auth.credentials import Credentials
from middlewared.auth.directory import Directory
from middlewared.auth.passwords import HashPool, generate_password
from middlewared.auth.ratelimit import LoginThrottler
from middlewared.auth.tokens import TokenStore
from middlewared.auth.visibility import Visibility
from middlewared.calls import Calls, Methods
from middlewared.commands.manager import CommandManager
from middlewared.config import ServerConfig
from middlewared.context import CallContext
from middlewared.declarations import Declarations, collect
from middlewared.errors import MiddlewareError, PermissionDenied
from middlewared.events.bus import Event, EventBus
from middlewared.events.collections import Collection, Collections
from middlewared.events.listeners import Listener
from middlewared.hooks.calls import ObservedCalls
from middlewared.hooks.manager import Hooks
from middlewared.jobs.engine import COLLECTION, JobEngine
from middlewared.jobs.files import JobFiles
from middlewared.jobs.job import Job
from middlewared.jobs.limits import NAMESPACE as WORKER_SETTINGS
from middlewared.jobs.limits import WorkerTable
from middlewared.jobs.recovery import recover
from middlewared.jobs.store import JobStore, Purged
from middlewared.notify import Notifiers
from middlewared.plugins import PluginLoader
from middlewared.registry import Registry
from middlewared.routes import Route
from middlewared.settings import Settings
from middlewared.store import open_store
from middlewared.transfers import Transfers
from middlewared.triggers.engine import TriggerEngine

if TYPE_CHECKING:
    from middlewared.ws.session import Session

log = logging.getLogger(__name__)

# Retention while serving: jobs purged per batch (at most), and the pause between batches
# (so at most 10,000 REMOVED events a second reach each subscriber).
RETENTION_BATCH = 1000
RETENTION_PAUSE_SECONDS = 0.1


class Middleware:
    """One server instance. Knows nothing of HTTP; the http layer wraps it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = open_store(config.store_url, durability=config.durability)
        self.bus = EventBus()
        self.collections = Collections()
        self.hasher = HashPool(max_pending=config.login_throttle.max_hashing)
        self.directory = Directory(self.store, self.hasher)
        self.tokens = TokenStore()
        self.throttle = LoginThrottler(config.login_throttle)
        self.methods = Methods()
        self.visibility = Visibility(self.methods.open_to_all)
        self.job_store = JobStore(self.store)
        self.job_files = JobFiles(config.logs_dir)
        self.jobs = JobEngine(
            self.job_store,
            self.bus,
            self.job_files,
            self._invoke_job,
            max_result_bytes=config.limits.max_result_bytes,
            max_log_bytes=config.commands.max_job_log,
        )
        # Hook scripts (--trigger-dir); the call path tells them of calls only when asked.
        self.hooks = Hooks(self, config.hooks)
        max_jobs = config.limits.max_live_jobs_per_user
        self.calls = (
            ObservedCalls(self.hooks, self, self.methods, self.jobs, max_jobs)
            if config.hooks.on_api
            else Calls(self, self.methods, self.jobs, max_jobs)
        )
        self.transfers = Transfers(config, self.jobs)
        self.settings = Settings(self.store)
        self.workers = WorkerTable(
            lambda: self.get_settings(WORKER_SETTINGS), lambda: self.settings.revision
        )
        self.calls.workers = self.workers
        # Told of jobs' ends by triggers and commands; mail through the ``mail`` settings.
        self.notifiers = Notifiers(self.store, lambda: self.get_settings("mail"), config.notify)
        self.plugins = PluginLoader(self)
        self.triggers = TriggerEngine(self)
        self.commands = CommandManager(self)
        # The port really listened on (``--port 0`` picks one), set once the socket is bound.
        self.port = config.port
        # The self-signed certificate served (--tls-self-signed): commands verify against it.
        self.cafile: Path | None = None
        # RFC 5929 tls-server-end-point of the certificate served (SCRAM channel binding).
        self.tls_end_point: bytes | None = None
        self.registries: list[Registry] = []
        self.routes: list[Route] = []
        self.sessions: set[Session] = set()
        self.started = time.time()
        self._lock = datadir.DataDirLock(config.data_dir)
        self._lifespans = contextlib.AsyncExitStack()
        self._retention_task: asyncio.Task[None] | None = None
        # One SIGHUP reload at a time.
        self._reloading = asyncio.Lock()
        self._listeners_started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.directory.on_change(self._credentials_changed)
        self.collections.add(Collection(COLLECTION, "Jobs: added, changed, removed", True))

    # -- mounting -----------------------------------------------------------------------
    def mount(self, registry: Registry, trusted: bool | None = None) -> None:
        """Mount a plugin's methods, settings, routes and collections."""
        trusted = registry.trusted if trusted is None else trusted
        for spec in registry.methods.values():
            self.methods.mount(spec, trusted)
        if registry.settings is not None:
            self.settings.declare(registry.settings)
        self.routes.extend(registry.routes)
        for c in registry.collections:
            self.collections.add(Collection(c.name, c.description, c.open_to_all))
        self.registries.append(registry)

    def load_plugins(self) -> None:
        self.plugins.load_all()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start in order: the data dir (locked, private), the store, users, the plugins'
        lifespans, then the jobs the last run left pending. Sockets open after this."""
        config = self.config
        datadir.prepare(config.data_dir)
        self._lock.acquire()
        try:
            await self._start()
        except BaseException:
            # A start refused late (a bad [[trigger]] table) leaves nothing running: the
            # jobs recovery relaunched end (aborted, stored) before the store closes.
            with contextlib.suppress(Exception):
                await self.triggers.stop()
            with contextlib.suppress(Exception):
                await self.hooks.stop()
            with contextlib.suppress(Exception):
                await self.jobs.shutdown(0)
            await self._lifespans.aclose()
            with contextlib.suppress(Exception):
                await self.store.close()
            self._lock.release()
            raise

    async def _start(self) -> None:
        config = self.config
        config.logs_dir.mkdir(mode=0o700, exist_ok=True)
        self.transfers.prepare()
        await asyncio.to_thread(
            datadir.tighten, config.data_dir, [config.logs_dir, config.spool_dir]
        )
        for root in config.roots:
            root.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        await self.directory.load()
        await self._ensure_root()
        if not self.registries:
            self.load_plugins()
        await self.settings.load()
        for registry in self.registries:
            for lifespan in registry.lifespans:
                await self._lifespans.enter_async_context(lifespan(self))
        for listener in self.bus.listeners:
            listener.start()
        # From now on a listener added (the trigger engine's, when it loads an @event
        # trigger) starts at once.
        self._listeners_started = True
        # Before recovery: jobs a restart re-queues run their job.<STATE> scripts too.
        await self.hooks.start()
        count = await recover(self.jobs, self.methods.lookup, self.directory.resolve)
        if count:
            log.warning("%d jobs were pending when the server last stopped", count)
        await self.triggers.start()
        # What the files declare (--config, --karajo-config, jobs.d): a fault stops the start.
        await self._declare(await asyncio.to_thread(_read_declarations, config))
        # Retention runs beside serving, its first pass at once: start-up does not wait for it.
        self._retention_task = asyncio.create_task(self._retention_loop(), name="retention")

    async def reload_config(self) -> None:
        """SIGHUP: what the files declare, again (the --config file's [[trigger]] tables,
        --karajo-config, <data-dir>/jobs.d/*.toml; the --config file's options take effect
        at the next start). A bad file is logged with its line and changes nothing."""
        try:
            async with self._reloading:
                await self._declare(await asyncio.to_thread(_read_declarations, self.config))
        except (configfile.ConfigError, MiddlewareError) as e:
            log.error("configuration not reloaded, what was loaded before stays: %s", e)
        except Exception:
            log.exception("configuration reload failed part way")

    async def _declare(self, found: Declarations) -> None:
        from middlewared.services.declared import declare

        done = await declare(self, found)
        log.info(
            "%s: %s declared (created: %s; changed: %s; deleted: %s)",
            ", ".join(map(str, found.sources)) or "no configuration file",
            found.count(),
            ", ".join(done.created) or "none",
            ", ".join(done.changed) or "none",
            ", ".join(done.deleted) or "none",
        )

    async def stop(self) -> None:
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        await self.triggers.stop()
        await self.hooks.stop()
        await self.jobs.shutdown(self.config.shutdown_grace_seconds)
        self.transfers.close()
        for listener in self.bus.listeners:
            await listener.stop()
        await self._lifespans.aclose()
        await self.store.close()
        self.hasher.close()
        self._lock.release()

    async def _ensure_root(self) -> None:
        """On an empty store, create the admin ``root``: its password comes from
        MIDDLEWARED_ROOT_PASSWORD, or is generated, printed once and written to
        ``<data-dir>/root.password`` (mode 0600)."""
        if self.directory.users:
            return
        password = os.environ.get("MIDDLEWARED_ROOT_PASSWORD")
        generated = not password
        if not password:
            password = generate_password()
        await self.directory.create_user(
            {"username": "root", "full_name": "Administrator", "password": password, "admin": True}
        )
        if generated:
            path = self.config.data_dir / "root.password"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            print(f"Created user root with password {password} (also in {path})", flush=True)
        else:
            print("Created user root with the password from MIDDLEWARED_ROOT_PASSWORD", flush=True)

    def _credentials_changed(self) -> None:
        """A user or key changed: every session, token and trigger takes it into account
        now (a trigger whose owner is gone is paused with the reason)."""
        for session in list(self.sessions):
            session.refresh()
        self.tokens.revoke_unresolvable(self.directory.resolve)
        if self._retention_task is not None:
            self._background(self.triggers.check_owners())

    def end_grant(self, grant: str) -> None:
        """A grant closed (a command run ended): the sessions and tokens standing on it end
        now; nothing else changes."""
        self.directory.grants.close(grant)
        self.tokens.revoke_unresolvable(self.directory.resolve)
        for session in list(self.sessions):
            identity = session.identity
            if identity is not None and identity.grant == grant:
                session.refresh()

    @property
    def ws_url(self) -> str:
        """Where a local client reaches the API (what commands get as MIDDLEWARED_URL)."""
        host = self.config.host
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.config.transports.tls else "ws"
        return f"{scheme}://{host}:{self.port}/api/current"

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add_route(self, route: Route) -> None:
        """Serve a route decided at start (a lifespan knows the configuration)."""
        self.routes.append(route)

    # -- events ---------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Publish on a collection a plugin declared."""
        if not self.collections.exists(event.collection):
            raise ValueError(f"undeclared collection {event.collection!r}")
        if self.bus.has_consumers(event.collection):
            self.bus.publish(event)

    def listen(self, listener: Listener) -> Listener:
        """Add a first-class listener (started now if the listeners run, else at start)."""
        self.bus.add_listener(listener)
        if self._listeners_started:
            listener.start()
        return listener

    # -- settings -----------------------------------------------------------------------
    def get_settings(self, namespace: str) -> dict[str, Any]:
        return self.settings.get(namespace)

    async def set_settings(self, namespace: str, values: dict[str, Any]) -> dict[str, Any]:
        return await self.settings.update(namespace, values)

    # -- retention ----------------------------------------------------------------------
    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.purge_jobs()
            except Exception:
                log.exception("job retention pass failed")
            await asyncio.sleep(self.config.retention.interval_seconds)

    def _retention_batch(self) -> int:
        """Never more REMOVED events at once than a quarter of what a reader may have
        pending before it is let go."""
        return max(1, min(RETENTION_BATCH, self.config.limits.max_pending_events // 4))

    async def purge_jobs(self) -> int:
        """Delete finished jobs past the retention policy; emit REMOVED for each.

        Paced, since subscribers may be connected: in batches of at most RETENTION_BATCH
        with a pause between them, so that a purge of many jobs reaches subscribers at a
        rate they can read rather than as one burst past --max-pending-events.
        """
        policy = self.config.retention
        before = int((time.time() - policy.max_age_seconds) * 1000)
        total = 0
        while True:
            if total:
                await asyncio.sleep(RETENTION_PAUSE_SECONDS)
            expired = await self.job_store.expired(
                before, policy.max_count, self._retention_batch()
            )
            if not expired:
                if total:
                    log.info("retention: %d finished jobs purged", total)
                return total
            await self.job_store.delete([p.id for p in expired])
            await asyncio.to_thread(_remove_files, self.job_files, expired)
            self.jobs.events.publish_removed(expired)
            total += len(expired)

    # -- snapshots (config.save / config.upload) ----------------------------------------
    async def backup(self, dest: Path) -> None:
        """A consistent online snapshot of the store, written to ``dest``."""
        await self.store.backup(dest)

    async def restore(self, src: Path) -> int:
        """Validate the snapshot at ``src`` (a private copy), then take its users, API keys
        and settings; jobs here are kept. Returns the snapshot's schema version."""
        # No trigger fires or saves its state while the store's triggers are replaced.
        await self.triggers.stop()
        try:
            version = await self.store.restore(src)
            await self.directory.load()
            await self.settings.load()
            await self.job_store.load_counter()
        finally:
            await self.triggers.reload()
        log.warning("configuration restored from a snapshot (schema %d)", version)
        # The files' declarations win over the snapshot's declared objects.
        await self.reload_config()
        return version

    # -- calls --------------------------------------------------------------------------
    async def call(self, method: str, *params: Any, credentials: Credentials) -> Any:
        """Call a method from inside the server as ``credentials``: the one call path
        applies (permissions, schema, redaction), private methods included."""
        return await self.calls.call(
            method, list(params), credentials, private=True, origin="internal"
        )

    async def _invoke_job(self, job: Job) -> Any:
        mounted = self.methods.get(job.method)
        if mounted is None:
            raise RuntimeError(f"method {job.method} is no longer mounted")
        identity = job.credentials.identity
        creds = self.directory.resolve(identity) if identity is not None else None
        if creds is None:
            raise PermissionDenied("The credentials that started this job were revoked")
        ctx = CallContext(
            self,
            creds,
            None,
            job.message_ids[0] if job.message_ids else None,
            mounted.spec,
        )
        return await mounted.spec.func(ctx, job, *job.arguments)

    def session_count(self) -> int:
        return len(self.sessions)


def _read_config(path: Path) -> configfile.ConfigFile:
    """The file checked against the command line's options (a typo is reported at once)."""
    from middlewared.cli import parser

    return configfile.read(path, parser())


def _read_declarations(config: ServerConfig) -> Declarations:
    file = _read_config(config.config_file) if config.config_file is not None else None
    return collect(file, config.karajo_config, config.data_dir / jobsd.DIRNAME)


def _remove_files(files: JobFiles, expired: list[Purged]) -> None:
    for purged in expired:
        files.remove(purged.id)
