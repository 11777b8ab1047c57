"""command.*: administrators keep named shell commands; anyone the allow-lists let runs them
as jobs (PROTOCOL.md section 10): progress from their progress fd, output into the job's
log, a token of their own, karajo's logs and counters."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from middlewared.commands.book import COLLECTION
from middlewared.commands.manager import CommandManager
from middlewared.commands.model import CREATE, ENV, NAME_PATTERN, UPDATE, Command, redact_env
from middlewared.context import CallContext
from middlewared.errors import CallError, NotFound
from middlewared.jobs.job import Job
from middlewared.query import query
from middlewared.registry import Access, JobOptions, Param, Registry
from middlewared.services.core import app_of
from middlewared.services.schemas import QUERY_PARAMS

registry = Registry("command", "Commands: the user's own shell lines, run as jobs")
registry.collection(COLLECTION, "Commands: added, changed, removed (administrators)")

NAME = {"type": "string", "pattern": NAME_PATTERN}
COUNTER = {"type": "integer", "minimum": 1}
RUN = {
    "type": "object",
    "properties": {
        "counter": COUNTER,
        "status": {"enum": ["running", "success", "fail"]},
        "state": {"type": ["string", "null"]},
        "job_id": {"type": "integer"},
        "time": {"type": "object"},
    },
}


def _manager(ctx: CallContext) -> CommandManager:
    return app_of(ctx).commands


@registry.lifespan
async def lifespan(app: Any) -> AsyncIterator[None]:
    """At start, before any job is recovered: end what a crash of the server left running."""
    await app.commands.start()
    yield


@registry.method(params=QUERY_PARAMS, access=Access.ADMIN, name="query")
async def query_commands(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query commands: ``{name, description, commands, env, timeout, log_retention,
    max_concurrency, allow, notify_on_success, notify_on_failure, created, runs, declared}``
    (``declared``: the file that declares it, or null); a secret
    env value shows as ``{"value": "********", "secret": true}``."""
    commands = await _manager(ctx).book.all()
    return query([c.record() for c in commands], filters, options)


@registry.method(
    params=[Param("data", CREATE, secret=True)], returns={"type": "object"}, access=Access.ADMIN
)
async def create(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create a command: ``name``, ``commands`` (shell lines, each run with ``/bin/sh -c`` in
    ``<data-dir>/commands/<name>/``, stopping at the first that fails), ``env`` (values are
    strings or ``{"value", "secret": true}``), ``timeout`` (seconds, for the whole run),
    ``log_retention`` (logs kept, 5), ``max_concurrency`` (runs of it at once, 1), ``allow``
    (the methods its token may call), ``notify_on_success``, ``notify_on_failure``,
    ``description``. Administrators only: it is code execution."""
    return (await _manager(ctx).book.create(data)).record()


@registry.method(
    params=[Param("name", NAME), Param("data", UPDATE, secret=True)],
    returns={"type": "object"},
    access=Access.ADMIN,
)
async def update(ctx: CallContext, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Change a command (not its name); runs under way finish as they started. A secret env
    value given as ``"********"`` (what queries show) keeps the one it had. One a file
    declares (karajo's [job], jobs.d) is changed in that file: EPERM."""
    book = _manager(ctx).book
    _changeable(await book.get(name))
    return (await book.update(name, data)).record()


@registry.method(params=[Param("name", NAME)], returns={"type": "boolean"}, access=Access.ADMIN)
async def delete(ctx: CallContext, name: str) -> bool:
    """Delete a command and its logs (refused while it runs); its jobs stay, and so does its
    working directory. One a file declares is deleted from that file: EPERM."""
    _changeable(await _manager(ctx).book.get(name))
    await _manager(ctx).delete(name)
    return True


def _changeable(command: Command) -> None:
    if command.declared is not None:
        raise CallError(
            f"Command {command.name!r} is declared in {command.declared}: change it there, "
            "then reload (SIGHUP)",
            errno.EPERM,
        )


@registry.method(
    params=[
        Param("name", NAME),
        Param("env", ENV, required=False, default={}, redact=redact_env),
        Param("event", {"type": ["object", "null"]}, required=False, default=None),
    ],
    returns={"type": "object"},
    job=JobOptions(
        logs=True,
        abortable=True,
        lock_queue_size=None,
        description=lambda args: f"Command {args[0]}",
    ),
)
async def run(
    ctx: CallContext, job: Job, name: str, env: dict[str, Any], event: dict[str, Any] | None
) -> dict[str, Any]:
    """Run a command; answers ``{"command", "counter"}``. ``env`` adds to (or overrides) the
    command's; ``event`` (a trigger's payload) reaches it as ``MIDDLEWARED_FIELDS``. Its lines
    write progress as JSON lines to fd 3 (``MIDDLEWARED_PROGRESS_FD``), their stdout and
    stderr go to the job's log, and ``MIDDLEWARED_TOKEN`` logs in as the caller limited to
    the command's ``allow`` list until the run ends. Abort and timeout end the whole process
    group (SIGTERM, then SIGKILL after ``--command-kill-grace``)."""
    return await _manager(ctx).run(job, ctx.user, name, env, event)


@registry.method(params=[Param("name", NAME)], returns={"type": "array", "items": RUN})
async def logs(ctx: CallContext, name: str) -> list[dict[str, Any]]:
    """The runs whose logs are kept (``log_retention``), newest first:
    ``[{"counter", "status", "state", "job_id", "time"}]``; status is karajo's (``running``,
    ``success``, ``fail``), state the job's."""
    manager = _manager(ctx)
    await manager.book.get(name)
    return [
        {
            "counter": r["counter"],
            "status": r["status"],
            "state": r["state"],
            "job_id": r["job_id"],
            "time": {"$date": r["finished"] or r["started"]},
        }
        for r in await manager.book.runs(name)
    ]


LOG_OPTIONS = {
    "type": "object",
    "properties": {
        "offset": {"type": "integer", "minimum": 0},
        "limit": {"type": ["integer", "null"], "minimum": 1},
        "tail": {"type": ["integer", "null"], "minimum": 1},
    },
    "additionalProperties": False,
}


@registry.method(
    params=[
        Param("name", NAME),
        Param("counter", COUNTER),
        Param("options", LOG_OPTIONS, required=False, default={}),
    ],
    returns={"type": "string"},
)
async def log(ctx: CallContext, name: str, counter: int, options: dict[str, Any]) -> str:
    """One run's log (its file ``<name>.<counter>.<status>``) as text: all of it, or
    ``limit`` bytes from byte ``offset`` (to follow a run as it writes), or its last
    ``tail`` bytes. Bytes that are not UTF-8 come as surrogate escapes (``\\udcXX``), so
    that a reader can count the bytes it was sent."""
    manager = _manager(ctx)
    await manager.book.get(name)
    path = manager.logs.find(name, counter)
    if path is None:
        raise NotFound(f"Command {name!r} has no log of run {counter}")
    return await asyncio.to_thread(_read, path, options)


def _read(path: Path, options: dict[str, Any]) -> str:
    try:
        with path.open("rb") as f:
            if options.get("tail") is not None:
                size = f.seek(0, 2)
                f.seek(max(0, size - options["tail"]))
            else:
                f.seek(options.get("offset", 0))
            data = f.read(-1 if options.get("limit") is None else options["limit"])
    except FileNotFoundError:
        raise NotFound(f"The log {path.name} was removed meanwhile") from None
    return data.decode("utf-8", "surrogateescape")
