"""Installing, updating and removing apps, and running their services: each service is a
trigger (managed, kind ``app``) that starts ``app.run(slug, service)``, which runs the
service's file as a command job whose token carries exactly the app's permissions (and
never more than its installer has)."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import secrets
import shlex
import shutil
import stat as st
import sysconfig
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from middlewared import jsonc
from middlewared.apps.files import copy_in, read_manifest
from middlewared.apps.manifest import Manifest, parse_manifest
from middlewared.apps.permissions import Catalog, beyond, translate
from middlewared.apps.record import AppRecord, load_all
from middlewared.apps.triggering import KIND, trigger_data
from middlewared.auth.credentials import Credentials
from middlewared.commands.model import Command, EnvValue
from middlewared.context import CallContext
from middlewared.errors import Busy, CallError, MiddlewareError, NotFound, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.roots import Roots, in_thread
from middlewared.services.triggers import validated
from middlewared.triggers.model import Trigger
from middlewared.triggers.parse import collections_of

if TYPE_CHECKING:
    from middlewared.app import Middleware

log = logging.getLogger(__name__)

INTERPRETERS = {"node": "node", "python": "python3"}
# Tokens of app.service_token live at once, at most (each holds a grant until it expires).
MAX_SERVICE_TOKENS = 1000
# MIDDLEWARED_FIELDS at most (bytes of JSON), under Linux's 128 KiB per environment string.
MAX_FIELDS = 96 * 1024


def command_name(slug: str, service: str) -> str:
    """The name its runs take (their working directory, karajo's log names)."""
    return f"app.{slug}.{service}"


class AppManager:
    def __init__(self, app: Middleware) -> None:
        self.app = app
        self.apps_dir = app.config.data_dir / "apps"
        # Installs, updates and removals one at a time.
        self._lock = asyncio.Lock()
        # Grants of the live tokens app.service_token gave (each ends with its token).
        self._service_grants: set[str] = set()

    # -- reading ------------------------------------------------------------------------
    async def all(self) -> dict[str, AppRecord]:
        return await asyncio.to_thread(load_all, self.apps_dir)

    async def get(self, slug: str) -> AppRecord:
        record = (await self.all()).get(slug)
        if record is None:
            raise NotFound(f"App {slug!r} is not installed")
        return record

    def triggers_of(self, slug: str) -> dict[str, Trigger]:
        return {
            t.managed["service"]: t
            for t in self.app.triggers.triggers.values()
            if t.managed and t.managed.get("kind") == KIND and t.managed.get("slug") == slug
        }

    def record(self, record: AppRecord) -> dict[str, Any]:
        """As ``app.query`` shows it."""
        manifest = record.parsed
        triggers = self.triggers_of(record.slug)
        return {
            "slug": record.slug,
            "name": record.name,
            "version": record.version,
            "source": record.source,
            "digest": record.digest,
            "path": str(record.files(self.apps_dir)),
            "installed": {"$date": record.installed},
            "updated": {"$date": record.updated},
            "owner": self.app.directory.username_of(record.owner_id),
            "permissions": manifest.permissions,
            "allow": list(record.allow),
            "services": {
                name: {
                    **service.record(),
                    "trigger_id": triggers[name].id if name in triggers else None,
                    "paused": triggers[name].paused if name in triggers else None,
                }
                for name, service in manifest.services.items()
            },
        }

    # -- permissions --------------------------------------------------------------------
    def catalog(self) -> Catalog:
        methods = {m.spec.name: m.spec.access for m in self.app.methods}
        return Catalog(methods, tuple(c.name for c in self.app.collections.all()))

    def grant(self, permissions: dict[str, Any], creds: Credentials, where: str) -> tuple[str, ...]:
        """The permissions translated, if ``creds`` has every right they ask for."""
        allow = translate(permissions, self.catalog(), where)

        def allows(name: str) -> bool:
            if self.app.collections.exists(name):
                return self.app.collections.may_subscribe(name, creds)
            try:
                self.app.calls.check(name, creds)
            except MiddlewareError:
                return False
            return True

        missing = beyond(allow, allows)
        if missing:
            raise ValidationErrors(
                [
                    (
                        where,
                        f"The app asks for {', '.join(missing)}, which you may not use yourself",
                        errno.EACCES,
                    )
                ]
            )
        return allow

    # -- install, update, uninstall -----------------------------------------------------
    async def install(self, ctx: CallContext, path: str) -> AppRecord:
        where = Roots(ctx.config.roots).locate("path", path)
        async with self._lock:
            staging, digest, manifest = await self._stage(where)
            try:
                if manifest.slug in await self.all():
                    raise ValidationErrors(
                        [
                            (
                                "path",
                                f"App {manifest.slug!r} is installed: use app.update",
                                errno.EEXIST,
                            )
                        ]
                    )
                allow = self.grant(manifest.permissions, ctx.user, "manifest.permissions")
                await in_thread(_check_files, staging, manifest)
                triggers = await self._triggers(ctx, manifest, allow, {})
                now = int(time.time() * 1000)
                record = AppRecord(
                    manifest.slug,
                    manifest.version,
                    manifest.name,
                    where.path,
                    digest,
                    "1",
                    now,
                    now,
                    ctx.user.user_id,
                    ctx.user.api_key_id,
                    allow,
                    manifest.raw,
                )
                await in_thread(self._commit, staging, record, None)
            except BaseException:
                await in_thread(shutil.rmtree, staging, True)
                raise
            for trigger in triggers:
                await self.app.triggers.add(trigger)
        log.info("app %s %s installed from %s", record.slug, record.version, record.source)
        return record

    async def update(self, ctx: CallContext, slug: str) -> AppRecord:
        async with self._lock:
            old = await self.get(slug)
            self._not_running(old, "updated")
            where = Roots(ctx.config.roots).locate("source", old.source)
            staging, digest, manifest = await self._stage(where)
            try:
                if manifest.slug != slug:
                    raise ValidationErrors(
                        [
                            (
                                "manifest.slug",
                                f"The source now holds app {manifest.slug!r}, not {slug!r}",
                                errno.EINVAL,
                            )
                        ]
                    )
                current = self.triggers_of(slug)
                if digest == old.digest and set(current) == set(manifest.services):
                    await in_thread(shutil.rmtree, staging, True)
                    log.info("app %s: nothing changed at %s", slug, old.source)
                    return old
                allow = self.grant(manifest.permissions, ctx.user, "manifest.permissions")
                await in_thread(_check_files, staging, manifest)
                triggers = await self._triggers(ctx, manifest, allow, current)
                record = dataclasses.replace(
                    old,
                    version=manifest.version,
                    name=manifest.name,
                    digest=digest,
                    folder=str(int(old.folder) + 1),
                    updated=int(time.time() * 1000),
                    owner_id=ctx.user.user_id,
                    owner_key=ctx.user.api_key_id,
                    allow=allow,
                    manifest=manifest.raw,
                )
                await in_thread(self._commit, staging, record, old)
            except BaseException:
                await in_thread(shutil.rmtree, staging, True)
                raise
            engine = self.app.triggers
            for trigger in triggers:
                service = (trigger.managed or {})["service"]
                if service in current:
                    await engine.replace(current.pop(service), trigger)
                else:
                    await engine.add(trigger)
            for gone in current.values():
                await engine.delete(gone)
            await in_thread(shutil.rmtree, old.files(self.apps_dir), True)
        log.info("app %s updated from %s to %s", slug, old.version, record.version)
        return record

    async def uninstall(self, slug: str) -> None:
        async with self._lock:
            record = await self.get(slug)
            self._not_running(record, "uninstalled")
            for trigger in self.triggers_of(slug).values():
                await self.app.triggers.delete(trigger)
            folder = self.apps_dir / slug
            await in_thread(_remove, folder)
        log.info("app %s uninstalled (its jobs stay)", slug)

    def _not_running(self, record: AppRecord, what: str) -> None:
        for name in record.parsed.services:
            if self.app.commands.busy(command_name(record.slug, name)):
                raise Busy(f"App {record.slug}: service {name} is running: it cannot be {what} now")

    async def _stage(self, where: Any) -> tuple[Path, str, Manifest]:
        """The source copied into a staging folder, its digest and its manifest."""
        self.apps_dir.mkdir(mode=0o700, exist_ok=True)
        staging = self.apps_dir / f".staging-{secrets.token_hex(6)}"
        try:
            digest = await in_thread(copy_in, where, staging)
            name, raw = await in_thread(read_manifest, staging)
            try:
                data = jsonc.loads(raw)
            except ValueError as e:
                raise ValidationErrors(
                    [("manifest", f"{name} is not JSON: {e}", errno.EINVAL)]
                ) from None
            return staging, digest, parse_manifest(data)
        except BaseException:
            await in_thread(shutil.rmtree, staging, True)
            raise

    def _commit(self, staging: Path, record: AppRecord, old: AppRecord | None) -> None:
        (self.apps_dir / record.slug).mkdir(mode=0o700, exist_ok=old is not None)
        os.rename(staging, record.files(self.apps_dir))
        record.save(self.apps_dir)

    async def _triggers(
        self,
        ctx: CallContext,
        manifest: Manifest,
        allow: tuple[str, ...],
        current: dict[str, Trigger],
    ) -> list[Trigger]:
        """A checked trigger per service (a service's current trigger keeps its id)."""
        engine = self.app.triggers
        scoped = dataclasses.replace(ctx.user, scope=allow)
        made = []
        for service in manifest.services.values():
            old = current.get(service.name)
            trigger = Trigger(
                id=old.id if old is not None else engine.allocate_id(),
                data=trigger_data(manifest.slug, service),
                owner_id=ctx.user.user_id,
                owner_key=ctx.user.api_key_id,
                created=old.created if old is not None else int(engine.clock.now() * 1000),
                managed={"kind": KIND, "slug": manifest.slug, "service": service.name},
            )
            where = f"manifest.services.{service.name}"
            try:
                await validated(ctx, trigger)
            except ValidationErrors as e:
                field = {"arguments": "trigger", "debounce": "debounce", "auth": "trigger"}
                raise ValidationErrors(
                    [(f"{where}.{field.get(f, f)}", m, n) for f, m, n in e.errors]
                ) from None
            for collection in sorted(collections_of(trigger)):
                if not self.app.collections.may_subscribe(collection, scoped):
                    raise ValidationErrors(
                        [
                            (
                                f"{where}.trigger",
                                f"It listens to {collection}, which the app's permissions do "
                                "not let it read (ask GET on its namespace)",
                                errno.EACCES,
                            )
                        ]
                    )
            made.append(trigger)
        return made

    # -- running ------------------------------------------------------------------------
    async def run(
        self, job: Job, creds: Credentials, slug: str, name: str, event: Any
    ) -> dict[str, Any]:
        record = await self.get(slug)
        service = record.parsed.services.get(name)
        if service is None:
            raise NotFound(f"App {slug!r} has no service {name!r}")
        file = record.files(self.apps_dir) / service.file
        line = f"exec {shlex.quote(str(file))}"
        if service.type in INTERPRETERS:
            interpreter = INTERPRETERS[service.type]
            if shutil.which(interpreter, path=_path()) is None:
                raise CallError(
                    f"App {slug}: service {name} is a {service.type} service, but "
                    f"{interpreter} is not installed on the server (not in PATH)",
                    errno.ENOENT,
                )
            line = f"exec {interpreter} {shlex.quote(str(file))}"
        command = Command(
            command_name(slug, name),
            (line,),
            env={"MIDDLEWARED_APP": EnvValue(slug), "MIDDLEWARED_SERVICE": EnvValue(name)},
            allow=record.allow,
        )
        job.set_progress(0, f"App {slug}: service {name}")
        return await self.app.commands.run_command(job, creds, command, {}, fitted(event))

    # -- a token for cozy's dev runner (midclt service run) --------------------------------
    def service_token(
        self, creds: Credentials, permissions: dict[str, Any], ttl: float
    ) -> dict[str, Any]:
        identity = creds.identity
        if identity is None or identity.grant is not None:
            raise CallError("A token narrowed to permissions cannot mint another one", errno.EPERM)
        if len(self._service_grants) >= MAX_SERVICE_TOKENS:
            raise Busy(
                f"{MAX_SERVICE_TOKENS} service tokens are live already: wait for one to expire"
            )
        allow = self.grant(permissions, creds, "permissions")
        directory = self.app.directory
        grant = directory.grants.open(allow)
        scoped = directory.resolve(dataclasses.replace(identity, grant=grant))
        if scoped is None:
            directory.grants.close(grant)
            raise CallError("Your credentials were revoked meanwhile", errno.EACCES)
        token = self.app.tokens.issue(scoped, ttl, single_use=False)
        self._service_grants.add(grant)
        asyncio.get_running_loop().call_later(ttl, self._end_service_grant, grant)
        return {
            "token": token,
            "allow": list(allow),
            "expires": {"$date": int((time.time() + ttl) * 1000)},
        }

    def _end_service_grant(self, grant: str) -> None:
        self._service_grants.discard(grant)
        self.app.end_grant(grant)


def fitted(event: Any, budget: int = MAX_FIELDS) -> Any:
    """The event as MIDDLEWARED_FIELDS can hold it (one environment string is at most
    128 KiB on Linux): the events of a long burst past ``budget`` bytes are left out and
    counted in ``events_dropped``."""
    if not isinstance(event, dict) or not isinstance(event.get("events"), list):
        return event
    if len(jsonc.dumps(event)) <= budget:
        return event
    events = event["events"]
    kept: list[Any] = []
    size = len(jsonc.dumps({**event, "events": [], "events_dropped": len(events)}))
    for item in events:
        size += len(jsonc.dumps(item)) + 1
        if size > budget:
            break
        kept.append(item)
    return {**event, "events": kept, "events_dropped": len(events) - len(kept)}


def _check_files(folder: Path, manifest: Manifest) -> None:
    """Every service's file is a regular file of the app (an exec one, executable)."""
    for service in manifest.services.values():
        where = f"manifest.services.{service.name}.file"
        try:
            s = os.lstat(folder / service.file)
        except (FileNotFoundError, NotADirectoryError):
            raise ValidationErrors(
                [(where, f"The app has no file {service.file}", errno.ENOENT)]
            ) from None
        if not st.S_ISREG(s.st_mode):
            raise ValidationErrors([(where, f"{service.file} is not a regular file", errno.EINVAL)])
        if service.type == "exec" and not s.st_mode & 0o100:
            raise ValidationErrors(
                [
                    (
                        where,
                        f"{service.file} is not executable (an exec service runs it)",
                        errno.EACCES,
                    )
                ]
            )


def _remove(folder: Path) -> None:
    """The record first (the app is gone), then its files."""
    (folder / "app.json").unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _path() -> str:
    """The PATH a command runs with (the server's scripts first)."""
    scripts = sysconfig.get_path("scripts")
    rest = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return f"{scripts}{os.pathsep}{rest}" if scripts else rest
