"""Triggers declared in the ``--config`` file (``[[trigger]]`` tables), made to match the
file: at start and on SIGHUP. Every table is checked as ``trigger.create`` checks a call,
as its owner, before anything changes; one bad table and nothing changes."""

from __future__ import annotations

import copy
import errno
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from middlewared.auth.credentials import CredentialKind, Credentials
from middlewared.context import CallContext
from middlewared.errors import CallError, MiddlewareError
from middlewared.triggers.engine import ms
from middlewared.triggers.model import Trigger
from middlewared.triggers.parse import derive, normalise

if TYPE_CHECKING:
    from middlewared.app import Middleware
    from middlewared.configfile import ConfigFile, DeclaredTrigger

log = logging.getLogger(__name__)

ONE_SHOT = frozenset({"@at", "@in"})


@dataclass
class Declared:
    """What a reload did, by trigger name."""

    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


async def declare(app: Middleware, file: ConfigFile) -> Declared:
    """Create, change and delete the declared triggers so that they are the file's; raises
    the file's ConfigError (with the table's line) and changes nothing if one is wrong."""
    from middlewared.services.triggers import validated

    engine = app.triggers
    mounted = app.methods.get("trigger.create")
    assert mounted is not None
    existing = {t.declared: t for t in engine.triggers.values() if t.declared is not None}
    now = ms(engine.clock.now())
    wanted: list[tuple[Trigger, Trigger | None]] = []
    paths: dict[str, str] = {}
    for table in file.triggers:
        old = existing.get(table.name)
        try:
            if table.data.get("type") in ONE_SHOT:
                # It is gone once it fired: the file would bring it back at each reload.
                raise CallError(
                    f"{table.data['type']} triggers cannot be declared (they end once they "
                    "fire): create them with trigger.create",
                    errno.EINVAL,
                )
            mounted.binder.bind([table.data])
            owner = app.directory.resolve_name(table.owner, CredentialKind.TRIGGER)
            if owner is None:
                reason = f"owner {table.owner!r} is not a user who can log in"
                raise CallError(reason, errno.ENOENT)
            trigger = _build(table, owner, old, now)
            ctx = CallContext(app, owner, None, None, mounted.spec)
            wanted.append((await validated(ctx, trigger), old))
            path = trigger.hook_path
            if path is not None and paths.setdefault(path, table.name) != table.name:
                raise CallError(f"/hooks/{path} is also {paths[path]!r}'s", errno.EEXIST)
        except MiddlewareError as e:
            raise file.error(table, e) from None
    done = Declared()
    for trigger, old in wanted:
        assert trigger.declared is not None
        if old is None:
            trigger.id = engine.allocate_id()
            # Periodic schedules are spread by id: derived again with the real one.
            derive(trigger, app.config.triggers.allow_unsigned_webhooks)
            await engine.add(trigger)
            done.created.append(trigger.declared)
        elif (old.data, old.owner_id) != (trigger.data, trigger.owner_id):
            await engine.replace(old, trigger)
            done.changed.append(trigger.declared)
    names = {t.name for t in file.triggers}
    for name, old in existing.items():
        if name not in names:
            await engine.delete(old)
            done.deleted.append(name)
    return done


def _build(table: DeclaredTrigger, owner: Credentials, old: Trigger | None, now: int) -> Trigger:
    data = copy.deepcopy(table.data)
    paused = bool(data.pop("paused", False)) if old is None else old.paused
    return Trigger(
        id=old.id if old is not None else 0,
        data=normalise(data),
        owner_id=owner.user_id,
        owner_key=None,
        created=old.created if old is not None else now,
        paused=paused,
        declared=table.name,
    )
