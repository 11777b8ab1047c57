"""app.*: cozy-style apps (PROTOCOL.md section 10): installed from a directory or a zip
under the roots, their services run as command jobs on triggers, with a token carrying
exactly the app's permissions."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from middlewared.apps.manager import AppManager
from middlewared.apps.manifest import SERVICE_NAME, SLUG, parse_permissions
from middlewared.apps.reconcile import reconcile
from middlewared.apps.record import sweep
from middlewared.context import CallContext
from middlewared.jobs.job import Job
from middlewared.query import query
from middlewared.registry import Access, JobOptions, Param, Registry
from middlewared.services.core import app_of
from middlewared.services.schemas import QUERY_PARAMS
from middlewared.triggers.store import TriggerStore

log = logging.getLogger(__name__)

registry = Registry("app", "Apps: cozy-style manifests whose services run on triggers")

PATH = {
    "type": "string",
    "minLength": 1,
    "maxLength": 4096,
    "description": "absolute, under a root: the app's folder, or a zip of it",
}
SLUG_SCHEMA = {"type": "string", "pattern": SLUG.pattern}
SERVICE_SCHEMA = {"type": "string", "pattern": SERVICE_NAME.pattern}
PERMISSIONS = {"type": ["object", "array"]}
TTL = {"type": "number", "minimum": 1, "maximum": 86400}

_managers: weakref.WeakKeyDictionary[Any, AppManager] = weakref.WeakKeyDictionary()


def _manager(ctx: CallContext) -> AppManager:
    app = app_of(ctx)
    manager = _managers.get(app)
    if manager is None:
        manager = _managers[app] = AppManager(app)
    return manager


@registry.lifespan
async def lifespan(app: Any) -> AsyncIterator[None]:
    """One manager per server (its lock keeps installs one at a time); what a crash left
    half-installed is removed first."""
    manager = _managers[app] = AppManager(app)
    removed = await asyncio.to_thread(sweep, manager.apps_dir)
    if removed:
        log.warning("apps: removed what an interrupted install or update left: %s", removed)
    await reconcile(TriggerStore(app.store), manager.apps_dir)
    yield


@registry.method(params=QUERY_PARAMS, access=Access.ADMIN, name="query")
async def query_apps(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query installed apps: ``{slug, name, version, source, digest, path, installed,
    updated, owner, permissions, allow, services: {name: {type, file, trigger, debounce,
    trigger_id, paused}}}``; ``allow`` is what the permissions grant (methods and collections)."""
    manager = _manager(ctx)
    records = [manager.record(r) for r in (await manager.all()).values()]
    return query(records, filters, options)


@registry.method(params=[Param("path", PATH)], returns={"type": "object"}, access=Access.ADMIN)
async def install(ctx: CallContext, path: str) -> dict[str, Any]:
    """Install the app at ``path`` (a folder or a zip under the roots, with a
    ``manifest.json`` at its top): its files are copied into ``<data-dir>/apps/<slug>/``
    and each service becomes a trigger. Refused, with the reason, when the manifest is
    malformed, asks for a permission the caller does not have, or names a file the app
    does not hold. Administrators only: it is code execution."""
    manager = _manager(ctx)
    return manager.record(await manager.install(ctx, path))


@registry.method(
    params=[Param("slug", SLUG_SCHEMA)], returns={"type": "object"}, access=Access.ADMIN
)
async def update(ctx: CallContext, slug: str) -> dict[str, Any]:
    """Install the app again from the path it was installed from: its files, permissions
    and services as they are there now (a service kept keeps its trigger's id, state and
    history). Nothing happens when the files did not change (same ``digest``). Refused
    while one of its services runs."""
    manager = _manager(ctx)
    return manager.record(await manager.update(ctx, slug))


@registry.method(
    params=[Param("slug", SLUG_SCHEMA)], returns={"type": "boolean"}, access=Access.ADMIN
)
async def uninstall(ctx: CallContext, slug: str) -> bool:
    """Remove an app: its triggers and its files go; the jobs its services ran stay.
    Refused while one of its services runs."""
    await _manager(ctx).uninstall(slug)
    return True


@registry.method(
    params=[
        Param("slug", SLUG_SCHEMA),
        Param("service", SERVICE_SCHEMA),
        Param("event", {"type": ["object", "null"]}, required=False, default=None),
    ],
    returns={"type": "object"},
    access=Access.ADMIN,
    job=JobOptions(
        logs=True,
        abortable=True,
        lock_queue_size=None,
        description=lambda args: f"App {args[0]}: service {args[1]}",
    ),
)
async def run(
    ctx: CallContext, job: Job, slug: str, service: str, event: dict[str, Any] | None
) -> dict[str, Any]:
    """Run one service of an app now (its trigger calls this): its file runs as a command
    job (``node FILE``, ``python3 FILE``, or the file itself for ``exec``) with
    ``MIDDLEWARED_URL``, ``MIDDLEWARED_TOKEN`` (the caller narrowed to the app's
    permissions, for this run only), ``MIDDLEWARED_FIELDS`` (``event``: what fired it, as
    JSON), ``MIDDLEWARED_APP`` and ``MIDDLEWARED_SERVICE``."""
    return await _manager(ctx).run(job, ctx.user, slug, service, event)


@registry.method(
    params=[
        Param("permissions", PERMISSIONS),
        Param("ttl", TTL, required=False, default=3600),
    ],
    returns={"type": "object"},
    access=Access.SELF,
)
async def service_token(ctx: CallContext, permissions: Any, ttl: float) -> dict[str, Any]:
    """A token of the caller narrowed to a manifest's ``permissions`` (cozy's shape), for
    ``ttl`` seconds: what ``midclt service run`` gives a service it runs, as cozy's dev
    runner does. Answers ``{"token", "allow", "expires"}``; refused when the permissions
    ask for more than the caller has, or when the caller is itself such a token."""
    checked = parse_permissions(permissions)
    return _manager(ctx).service_token(ctx.user, checked, float(ttl))
