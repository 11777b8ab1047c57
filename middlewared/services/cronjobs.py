"""cronjob.*: TrueNAS's cron tasks (``user``, ``command``, ``description``, ``enabled``,
``stdout``, ``stderr``, ``schedule``), so scripts that manage them work here. Each is a
trigger (``@cron`` on its schedule, paused while disabled) that runs ``cronjob.run(id,
true)``; its line runs as a command does (process group, log, abort, orphans after a
crash), with a token of ``user``. The cron job's id is its trigger's."""

from __future__ import annotations

import copy
import errno
from typing import Any

from middlewared.auth.credentials import CredentialKind, Credentials
from middlewared.commands.model import Command
from middlewared.context import CallContext
from middlewared.errors import CallError, NotFound, ValidationErrors
from middlewared.jobs.job import Job, date
from middlewared.query import query
from middlewared.registry import Access, JobOptions, Param, Registry
from middlewared.services.core import app_of
from middlewared.services.schemas import QUERY_PARAMS
from middlewared.services.triggers import validated
from middlewared.triggers.engine import TriggerEngine, ms
from middlewared.triggers.model import Trigger
from middlewared.triggers.parse import normalise

registry = Registry("cronjob", "Cron jobs: TrueNAS's cron tasks, as triggers running a line")

KIND = "cronjob"
FIELD = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[^\s]+$"}
SCHEDULE = {
    "type": "object",
    "properties": {k: FIELD for k in ("minute", "hour", "dom", "month", "dow")},
    "additionalProperties": False,
}
DEFAULT_SCHEDULE = {"minute": "00", "hour": "*", "dom": "*", "month": "*", "dow": "*"}
FIELDS: dict[str, Any] = {
    "user": {"type": "string", "minLength": 1},
    "command": {"type": "string", "minLength": 1, "maxLength": 65536},
    "description": {"type": "string", "maxLength": 1024},
    "enabled": {"type": "boolean"},
    # TrueNAS's meaning: true hides that stream (it is not kept in the job's log).
    "stdout": {"type": "boolean"},
    "stderr": {"type": "boolean"},
    "schedule": SCHEDULE,
}
CREATE = {
    "type": "object",
    "properties": FIELDS,
    "required": ["user", "command"],
    "additionalProperties": False,
}
UPDATE = {"type": "object", "properties": FIELDS, "additionalProperties": False}
ID = {"type": "integer", "minimum": 1}


def _engine(ctx: CallContext) -> TriggerEngine:
    return app_of(ctx).triggers


def _record(trigger: Trigger) -> dict[str, Any]:
    managed = trigger.managed or {}
    return {
        "id": trigger.id,
        "user": managed.get("user"),
        "command": managed.get("command"),
        "description": trigger.data.get("description", ""),
        "enabled": not trigger.paused,
        "stdout": managed.get("stdout", True),
        "stderr": managed.get("stderr", False),
        "schedule": dict(managed.get("schedule", DEFAULT_SCHEDULE)),
        "next_run": date(trigger.next_run),
    }


def _get(ctx: CallContext, cron_id: int) -> Trigger:
    trigger = _engine(ctx).triggers.get(cron_id)
    if trigger is None or (trigger.managed or {}).get("kind") != KIND:
        raise NotFound(f"Cron job {cron_id} does not exist")
    return trigger


def _user(ctx: CallContext, username: str) -> Credentials:
    """The credentials a run's token carries: the cron job's ``user``, as they stand now."""
    creds = app_of(ctx).directory.resolve_name(username, CredentialKind.TRIGGER)
    if creds is None:
        raise ValidationErrors([("user", f"No user {username!r} who can log in", errno.ENOENT)])
    return creds


async def _build(
    ctx: CallContext, cron_id: int, data: dict[str, Any], old: Trigger | None
) -> Trigger:
    _user(ctx, data["user"])
    if "\0" in data["command"]:
        raise ValidationErrors([("command", "A command cannot hold a NUL character", errno.EINVAL)])
    schedule = {**DEFAULT_SCHEDULE, **data.get("schedule", {})}
    cron = " ".join(schedule[k] for k in ("minute", "hour", "dom", "month", "dow"))
    trigger = Trigger(
        id=cron_id,
        data=normalise(
            {
                "type": "@cron",
                "arguments": cron,
                "method": "cronjob.run",
                "params": [cron_id, True],
                "description": data.get("description", ""),
            }
        ),
        owner_id=old.owner_id if old is not None else ctx.user.user_id,
        owner_key=old.owner_key if old is not None else ctx.user.api_key_id,
        created=old.created if old is not None else ms(_engine(ctx).clock.now()),
        paused=not data.get("enabled", True),
        managed={
            "kind": KIND,
            "user": data["user"],
            "command": data["command"],
            "stdout": data.get("stdout", True),
            "stderr": data.get("stderr", False),
            "schedule": schedule,
        },
    )
    try:
        return await validated(ctx, trigger)
    except ValidationErrors as e:
        # The schedule is the trigger's arguments.
        fields = [("schedule" if f == "arguments" else f, m, n) for f, m, n in e.errors]
        raise ValidationErrors(fields) from None


@registry.method(params=QUERY_PARAMS, access=Access.ADMIN, name="query")
async def query_cronjobs(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query the cron jobs (TrueNAS's filter grammar)."""
    triggers = _engine(ctx).triggers.values()
    records = [_record(t) for t in triggers if (t.managed or {}).get("kind") == KIND]
    return query(records, filters, options)


@registry.method(params=[Param("data", CREATE)], returns={"type": "object"}, access=Access.ADMIN)
async def create(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create a cron job: ``command`` (a shell line) runs on ``schedule`` (``minute``,
    ``hour``, ``dom``, ``month``, ``dow``; default every hour at :00) with a token of
    ``user``; ``stdout``/``stderr`` true hide that stream from the job's log (TrueNAS's
    defaults: stdout hidden, stderr kept); disabled, it does not fire."""
    engine = _engine(ctx)
    trigger = await _build(ctx, engine.allocate_id(), data, None)
    await engine.add(trigger)
    return _record(trigger)


@registry.method(
    params=[Param("id", ID), Param("data", UPDATE)], returns={"type": "object"}, access=Access.ADMIN
)
async def update(ctx: CallContext, cron_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """Change a cron job; its history stays."""
    engine = _engine(ctx)
    old = _get(ctx, cron_id)
    merged = {**_record(old), **copy.deepcopy(data)}
    new = await _build(ctx, cron_id, merged, old)
    enabled = not new.paused
    await engine.replace(old, new)
    if enabled and new.paused:
        await engine.resume(new)
    elif not enabled and not new.paused:
        await engine.pause(new)
    return _record(new)


@registry.method(params=[Param("id", ID)], returns={"type": "boolean"}, access=Access.ADMIN)
async def delete(ctx: CallContext, cron_id: int) -> bool:
    """Delete a cron job; the jobs it ran stay."""
    await _engine(ctx).delete(_get(ctx, cron_id))
    return True


@registry.method(
    params=[
        Param("id", ID),
        Param("skip_disabled", {"type": "boolean"}, required=False, default=False),
    ],
    access=Access.ADMIN,
    job=JobOptions(logs=True, abortable=True, description=lambda args: f"Cron job {args[0]}"),
)
async def run(ctx: CallContext, job: Job, cron_id: int, skip_disabled: bool) -> Any:
    """Run a cron job now (its schedule runs it with ``skip_disabled`` true: a disabled one
    is then skipped). Its line runs as a command's does; the job fails with its exit code."""
    trigger = _get(ctx, cron_id)
    if skip_disabled and trigger.paused:
        job.set_progress(100, f"Cron job {cron_id} is disabled: skipped")
        return None
    managed = trigger.managed or {}
    try:
        creds = _user(ctx, managed["user"])
    except ValidationErrors as e:
        raise CallError(f"Cron job {cron_id}: {e.errors[0][1]}", errno.ENOENT) from None
    line = managed["command"]
    if managed.get("stdout", True):
        line = f"{{ {line}\n}} >/dev/null"
    if managed.get("stderr", False):
        line = f"{{ {line}\n}} 2>/dev/null"
    command = Command(f"cronjob-{cron_id}", (line,), allow=("*",), log_retention=5)
    return await app_of(ctx).commands.run_command(job, creds, command, {})
