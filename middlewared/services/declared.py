"""What the configuration files declare (``declarations.py``: the ``--config`` file's
``[[trigger]]`` tables, karajo's INI, ``jobs.d/*.toml``), made to match them at start and
on SIGHUP: notifiers, commands and triggers created, changed and deleted by name. Every
object is checked as its ``create`` method checks a call (a trigger as its owner) before
anything changes; one bad object and nothing changes."""

from __future__ import annotations

import copy
import errno
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from middlewared.auth.credentials import CredentialKind, Credentials
from middlewared.commands.model import Command
from middlewared.context import CallContext
from middlewared.declarations import Declarations, Item
from middlewared.errors import CallError, MiddlewareError
from middlewared.notify.notifier import Notifier, check
from middlewared.triggers.engine import ms
from middlewared.triggers.model import Trigger
from middlewared.triggers.parse import derive, normalise

if TYPE_CHECKING:
    from middlewared.app import Middleware

log = logging.getLogger(__name__)

ONE_SHOT = frozenset({"@at", "@in"})
_T = TypeVar("_T", Notifier, Command)


@dataclass
class Declared:
    """What a reload did, by ``kind name``."""

    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    notifiers: list[tuple[Item, Notifier | None]] = field(default_factory=list)
    commands: list[tuple[Item, Command | None]] = field(default_factory=list)
    triggers: list[tuple[Trigger, Trigger | None]] = field(default_factory=list)
    gone_notifiers: list[Notifier] = field(default_factory=list)
    gone_commands: list[Command] = field(default_factory=list)
    gone_triggers: list[Trigger] = field(default_factory=list)
    # Worker limits by method ([[worker]] tables, ``name`` the method).
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)


async def declare(app: Middleware, found: Declarations) -> Declared:
    """Make the declared objects those of ``found``; raises the ConfigError of the first
    object that is wrong (with its file and line) and then changes nothing."""
    plan = _Plan()
    await _plan_notifiers(app, found, plan)
    await _plan_commands(app, found, plan)
    await _plan_triggers(app, found, plan)
    _plan_workers(app, found, plan)
    done = Declared()
    await _apply(app, plan, done)
    await _apply_workers(app, plan, done)
    # karajo's max_job_running, else (none, or no longer) --max-running-commands.
    running = found.max_running or app.config.commands.max_running
    if app.commands.slots.max_running != running:
        app.commands.slots.resize(running)
        log.info("commands: %d may run at once", running)
    return done


def _plan_workers(app: Middleware, found: Declarations, plan: _Plan) -> None:
    """``[[worker]]`` tables: a job method's limits, checked as ``worker.update`` checks
    them. They are applied at each start and reload; the API may change them meanwhile,
    and a table taken out of the file leaves the limits as they are."""
    mounted = app.methods.get("worker.update")
    assert mounted is not None
    for item in found.of("worker"):
        limits = {k: v for k, v in item.data.items() if k != "name"}
        target = app.methods.get(item.name)
        if target is None or target.spec.job is None:
            raise item.error(CallError(f"{item.name!r} is not a job method"))
        try:
            mounted.binder.bind([item.name, limits])
        except MiddlewareError as e:
            raise item.error(e) from None
        plan.workers[item.name] = limits


async def _apply_workers(app: Middleware, plan: _Plan, done: Declared) -> None:
    if not plan.workers:
        return
    from middlewared.jobs.limits import NAMESPACE

    current = app.get_settings(NAMESPACE)
    changed = {m: {**current.get(m, {}), **v} for m, v in plan.workers.items()}
    changed = {m: v for m, v in changed.items() if v != current.get(m)}
    if changed:
        await app.set_settings(NAMESPACE, changed)
        done.changed.extend(f"worker {m}" for m in changed)


def _bind(app: Middleware, method: str, item: Item) -> None:
    mounted = app.methods.get(method)
    assert mounted is not None
    try:
        mounted.binder.bind([item.data])
    except MiddlewareError as e:
        raise item.error(e) from None


async def _plan_notifiers(app: Middleware, found: Declarations, plan: _Plan) -> None:
    existing = await app.notifiers.book.by_name()
    for item in found.of("notifier"):
        _bind(app, "notifier.create", item)
        old = existing.get(item.name)
        if old is not None and old.declared is None:
            raise item.error(CallError("a notifier of that name exists that no file declares"))
        try:
            check(Notifier(0, item.name, item.data["kind"]).with_changes(item.data))
        except MiddlewareError as e:
            raise item.error(e) from None
        plan.notifiers.append((item, old))
    names = {i.name for i in found.of("notifier")}
    plan.gone_notifiers = [
        n for n in existing.values() if n.declared is not None and n.name not in names
    ]


async def _plan_commands(app: Middleware, found: Declarations, plan: _Plan) -> None:
    existing = {c.name: c for c in await app.commands.book.all()}
    for item in found.of("command"):
        _bind(app, "command.create", item)
        old = existing.get(item.name)
        if old is not None and old.declared is None:
            raise item.error(CallError("a command of that name exists that no file declares"))
        try:
            Command.create(item.data, 0)
        except MiddlewareError as e:
            raise item.error(e) from None
        plan.commands.append((item, old))
    names = {i.name for i in found.of("command")}
    for command in existing.values():
        if command.declared is not None and command.name not in names:
            if app.commands.busy(command.name):
                raise CallError(
                    f"command {command.name!r} is no longer declared but runs: reload once "
                    "it ended",
                    errno.EBUSY,
                )
            plan.gone_commands.append(command)


async def _plan_triggers(app: Middleware, found: Declarations, plan: _Plan) -> None:
    from middlewared.services.triggers import validated

    engine = app.triggers
    mounted = app.methods.get("trigger.create")
    assert mounted is not None
    existing = {t.declared: t for t in engine.triggers.values() if t.declared is not None}
    now = ms(engine.clock.now())
    paths: dict[str, str] = {}
    for item in found.of("trigger"):
        old = existing.get(item.name)
        try:
            if item.data.get("type") in ONE_SHOT:
                # It is gone once it fired: the file would bring it back at each reload.
                raise CallError(
                    f"{item.data['type']} triggers cannot be declared (they end once they "
                    "fire): create them with trigger.create",
                    errno.EINVAL,
                )
            mounted.binder.bind([item.data])
            owner = app.directory.resolve_name(item.owner, CredentialKind.TRIGGER)
            if owner is None:
                reason = f"owner {item.owner!r} is not a user who can log in"
                raise CallError(reason, errno.ENOENT)
            trigger = _build(item, owner, old, now)
            ctx = CallContext(app, owner, None, None, mounted.spec)
            plan.triggers.append((await validated(ctx, trigger), old))
            path = trigger.hook_path
            if path is not None and paths.setdefault(path, item.name) != item.name:
                raise CallError(f"/hooks/{path} is also {paths[path]!r}'s", errno.EEXIST)
        except MiddlewareError as e:
            raise item.error(e) from None
    names = {i.name for i in found.of("trigger")}
    plan.gone_triggers = [t for name, t in existing.items() if name not in names]


async def _apply(app: Middleware, plan: _Plan, done: Declared) -> None:
    """Created and changed first, from what others name to what names them (notifiers,
    commands, triggers); then deleted in the other order."""
    await _apply_notifiers(app, plan, done)
    await _apply_commands(app, plan, done)
    await _apply_triggers(app, plan, done)
    for gone in plan.gone_triggers:
        await app.triggers.delete(gone)
        done.deleted.append(f"trigger {gone.declared}")
    for command in plan.gone_commands:
        await app.commands.delete(command.name)
        done.deleted.append(f"command {command.name}")
    for notifier in plan.gone_notifiers:
        await app.notifiers.book.delete(notifier.id)
        done.deleted.append(f"notifier {notifier.name}")


async def _apply_notifiers(app: Middleware, plan: _Plan, done: Declared) -> None:
    book = app.notifiers.book
    for item, old_notifier in plan.notifiers:
        if old_notifier is None:
            await book.create(item.data, declared=str(item.path))
            done.created.append(f"notifier {item.name}")
        else:
            new = await book.replace(_declared_by(old_notifier, item), item.data)
            if new.row() != old_notifier.row():
                done.changed.append(f"notifier {item.name}")


async def _apply_commands(app: Middleware, plan: _Plan, done: Declared) -> None:
    commands = app.commands.book
    for item, old_command in plan.commands:
        if old_command is None:
            await commands.create(item.data, declared=str(item.path))
            done.created.append(f"command {item.name}")
        elif Command.create(item.data, old_command.created, str(item.path)) != _plain(old_command):
            await commands.replace(_declared_by(old_command, item), item.data)
            done.changed.append(f"command {item.name}")


async def _apply_triggers(app: Middleware, plan: _Plan, done: Declared) -> None:
    engine = app.triggers
    for trigger, old in plan.triggers:
        assert trigger.declared is not None
        if old is None:
            trigger.id = engine.allocate_id()
            # Periodic schedules are spread by id: derived again with the real one.
            derive(trigger, app.config.triggers.allow_unsigned_webhooks)
            await engine.add(trigger)
            done.created.append(f"trigger {trigger.declared}")
        elif (old.data, old.owner_id) != (trigger.data, trigger.owner_id):
            await engine.replace(old, trigger)
            done.changed.append(f"trigger {trigger.declared}")


def _declared_by(old: _T, item: Item) -> _T:
    """``old`` as declared by the file that declares it now (it may have moved)."""
    return replace(old, declared=str(item.path))


def _plain(command: Command) -> Command:
    """As a fresh create would make it: runs are not part of what a file declares."""
    return replace(command, runs=0)


def _build(item: Item, owner: Credentials, old: Trigger | None, now: int) -> Trigger:
    data = copy.deepcopy(item.data)
    paused = bool(data.pop("paused", False)) if old is None else old.paused
    return Trigger(
        id=old.id if old is not None else 0,
        data=normalise(data),
        owner_id=owner.user_id,
        owner_key=None,
        created=old.created if old is not None else now,
        paused=paused,
        declared=item.name,
    )
