"""The composition root: builds the store, bus, auth, job engine and dispatcher, and mounts
the core services and the plugins."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from middlewared.auth.credentials import INTERNAL, CredentialKind, Credentials
from middlewared.auth.directory import Directory
from middlewared.auth.passwords import generate_password
from middlewared.auth.ratelimit import LoginThrottler
from middlewared.auth.tokens import TokenStore
from middlewared.config import ServerConfig
from middlewared.context import CallContext
from middlewared.events.bus import EventBus
from middlewared.events.collections import Collection, Collections
from middlewared.jobs.job import Job
from middlewared.jobs.manager import COLLECTION, JobManager
from middlewared.jobs.store import JobStore
from middlewared.registry import Registry
from middlewared.rpc.dispatcher import Dispatcher
from middlewared.store.snapshot import validate_and_upgrade
from middlewared.store.sqlite import SQLiteStore
from middlewared.transfers import Transfers

log = logging.getLogger(__name__)

CORE_SERVICES = ("core", "files", "auth", "users", "api_keys", "discover")
# Retention while serving: jobs purged per batch (at most), and the pause between batches
# (so at most 10,000 REMOVED events a second reach each subscriber).
RETENTION_BATCH = 1000
RETENTION_PAUSE_SECONDS = 0.1


class Middleware:
    """One server instance. Knows nothing of HTTP; the http layer wraps it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = SQLiteStore(config.db_path, config.durability)
        self.bus = EventBus()
        self.collections = Collections()
        self.directory = Directory(self.store)
        self.tokens = TokenStore()
        self.throttle = LoginThrottler(config.login_throttle)
        self.job_store = JobStore(self.store)
        self.jobs = JobManager(self.job_store, self.bus, config.logs_dir, self._invoke_job)
        self.dispatcher = Dispatcher(self, self.jobs)
        self.transfers = Transfers(config, self.jobs)
        self.registries: list[Registry] = []
        self.started = time.time()
        self._retention_task: asyncio.Task[None] | None = None
        # Set by the HTTP layer: how many WebSocket sessions are open.
        self.session_count: Callable[[], int] = lambda: 0

    # -- mounting -----------------------------------------------------------------------
    def mount(self, registry: Registry) -> None:
        for spec in registry.methods.values():
            self.dispatcher.mount(spec)
        self.registries.append(registry)

    def load_plugins(self) -> None:
        for name in CORE_SERVICES:
            self._mount_module(importlib.import_module(f"middlewared.services.{name}"))
        if self.config.builtin_plugins:
            builtin = importlib.import_module("middlewared_plugins")
            for info in pkgutil.iter_modules(builtin.__path__):
                self._mount_module(importlib.import_module(f"middlewared_plugins.{info.name}"))
        for folder in self.config.plugin_dirs:
            for path in sorted(folder.glob("*.py")):
                self._mount_module(_load_file(path))
        self.collections.add(Collection(COLLECTION, "Jobs: added, changed, removed", True))

    def _mount_module(self, module: ModuleType) -> None:
        found = getattr(module, "registries", None) or [getattr(module, "registry", None)]
        for registry in found:
            if isinstance(registry, Registry):
                self.mount(registry)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        for root in self.config.roots:
            root.mkdir(parents=True, exist_ok=True)
        self.transfers.prepare()
        await self.store.open()
        await self.directory.load()
        await self._ensure_root()
        self.load_plugins()
        count = await self.jobs.recover(
            self.dispatcher.lookup,
            lambda name: self.directory.credentials_for(name, CredentialKind.INTERNAL),
        )
        if count:
            log.warning("%d jobs were pending when the server last stopped", count)
        for registry in self.registries:
            for hook in registry.startup_hooks:
                await _maybe_await(hook(self))
        # Retention runs beside serving, its first pass at once: start-up does not wait for it.
        self._retention_task = asyncio.create_task(self._retention_loop(), name="retention")

    async def stop(self) -> None:
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        await self.jobs.shutdown(self.config.shutdown_grace_seconds)
        self.transfers.close()
        for registry in reversed(self.registries):
            for hook in registry.shutdown_hooks:
                await _maybe_await(hook(self))
        await self.store.close()

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
            limit = self._retention_batch()
            ids = await self.job_store.expired_ids(before, policy.max_count, limit)
            if not ids:
                if total:
                    log.info("retention: %d finished jobs purged", total)
                return total
            await self.job_store.delete(ids)
            for job_id in ids:
                (self.config.logs_dir / f"{job_id}.log").unlink(missing_ok=True)
            self.jobs.publish_removed(ids)
            total += len(ids)

    # -- snapshots (config.save / config.upload) ----------------------------------------
    async def backup(self, dest: Path) -> None:
        """A consistent online snapshot of the store, written to ``dest``."""
        await self.store.backup(dest)

    async def restore(self, src: Path) -> int:
        """Validate the snapshot at ``src`` (a private copy), then take its users, API keys
        and settings; jobs here are kept. Returns the snapshot's schema version."""
        version = await asyncio.to_thread(validate_and_upgrade, src)
        await self.store.restore(src)
        await self.directory.load()
        await self.job_store.load_counter()
        log.warning("configuration restored from a snapshot (schema %d)", version)
        return version

    # -- calls --------------------------------------------------------------------------
    async def call(
        self,
        method: str,
        *params: Any,
        credentials: Credentials | None = None,
        job: Job | None = None,
    ) -> Any:
        """Call a method from inside the server, as ``credentials`` (default: internal)."""
        return await self.dispatcher.call(
            method, list(params), credentials or INTERNAL, private=True
        )

    async def _invoke_job(self, job: Job) -> Any:
        spec = self.dispatcher.lookup(job.method)
        if spec is None:
            raise RuntimeError(f"method {job.method} is no longer mounted")
        ctx = CallContext(
            self, job.credentials, None, job.message_ids[0] if job.message_ids else None
        )
        return await spec.func(ctx, job, *job.arguments)


def _load_file(path: Path) -> ModuleType:
    name = f"middlewared_user_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plugin {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value
