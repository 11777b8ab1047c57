"""Methods for the acceptance tests: jobs that progress, fail, wait on gates, hold locks."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import CallError
from middlewared.jobs.job import Job
from middlewared.registry import JobOptions, Param, Registry

registry = Registry("test", "Test helpers")

_gates: dict[str, asyncio.Event] = {}

NAME = {"type": "string"}
NUMBER = {"type": "number", "minimum": 0}


def _gate(name: str) -> asyncio.Event:
    return _gates.setdefault(name, asyncio.Event())


@registry.method(params=[Param("value", {})])
async def echo(ctx: CallContext, value: Any) -> Any:
    """Return the value given."""
    return value


@registry.method(
    params=[Param("minuend", {"type": "integer"}), Param("subtrahend", {"type": "integer"})],
    returns={"type": "integer"},
)
async def subtract(ctx: CallContext, minuend: int, subtrahend: int) -> int:
    """minuend - subtrahend (the JSON-RPC specification's example)."""
    return minuend - subtrahend


INT = {"type": "integer"}


@registry.method(
    params=[Param(n, INT, required=False, default=0) for n in ("a", "b", "c")],
    returns=INT,
)
async def sum(ctx: CallContext, a: int, b: int, c: int) -> int:
    """a + b + c."""
    return a + b + c


@registry.method(params=[Param(n, INT, required=False) for n in ("a", "b", "c", "d", "e")])
async def update(ctx: CallContext, *values: int) -> None:
    """Accept up to five integers and do nothing (called as a notification)."""


@registry.method(params=[Param("x", INT)])
async def notify_hello(ctx: CallContext, x: int) -> None:
    """Do nothing (called as a notification)."""


@registry.method(returns={"type": "array"})
async def get_data(ctx: CallContext) -> list[Any]:
    """["hello", 5]."""
    return ["hello", 5]


@registry.method(params=[Param("name", NAME)], returns={"type": "boolean"})
async def open_gate(ctx: CallContext, name: str) -> bool:
    """Let the jobs waiting on gate ``name`` go on."""
    _gate(name).set()
    return True


@registry.method(
    params=[
        Param("steps", {"type": "integer", "minimum": 1}),
        Param("gate", {"type": ["string", "null"]}, required=False),
    ],
    job=JobOptions(description="Counting"),
)
async def progress(ctx: CallContext, job: Job, steps: int, gate: str | None) -> int:
    """Report progress ``steps`` times; waits on ``gate`` halfway when given."""
    for i in range(1, steps + 1):
        job.set_progress(100 * i / steps, f"step {i} of {steps}")
        if gate and i == steps // 2:
            await _gate(gate).wait()
        await asyncio.sleep(0)
    return steps


@registry.method(params=[Param("count", {"type": "integer", "minimum": 1})], job=JobOptions())
async def flood(ctx: CallContext, job: Job, count: int) -> int:
    """Call set_progress ``count`` times as fast as possible."""
    for i in range(count):
        job.set_progress(100 * i / count, f"{i}")
    return count


@registry.method(params=[Param("value", {})], job=JobOptions())
async def keep(ctx: CallContext, job: Job, value: Any) -> Any:
    """Hold a value in the job's record: argument, progress extra and result."""
    job.set_progress(50, "keeping", value)
    return value


@registry.method(params=[Param("message", NAME)], job=JobOptions())
async def fail(ctx: CallContext, job: Job, message: str) -> None:
    """Fail with CallError(message)."""
    raise CallError(message)


@registry.method(params=[Param("gate", NAME)], job=JobOptions(abortable=True))
async def wait(ctx: CallContext, job: Job, gate: str) -> str:
    """Wait until ``test.open_gate(gate)``; abortable."""
    job.set_progress(10, f"waiting on {gate}")
    await _gate(gate).wait()
    return gate


@registry.method(params=[Param("gate", NAME)], job=JobOptions(abortable=False))
async def stubborn(ctx: CallContext, job: Job, gate: str) -> str:
    """Like test.wait but not abortable."""
    await _gate(gate).wait()
    return gate


@registry.method(
    params=[Param("lock", NAME), Param("gate", NAME)],
    job=JobOptions(lock=lambda args: f"test:{args[0]}", lock_queue_size=1, abortable=True),
)
async def locked(ctx: CallContext, job: Job, lock: str, gate: str) -> int:
    """Hold ``lock`` until ``gate`` opens; at most one call waits, later ones merge."""
    job.set_progress(50, f"holding {lock}")
    await _gate(gate).wait()
    return job.id


@registry.method(
    params=[Param("gate", NAME)],
    job=JobOptions(lock="test.exclusive", lock_queue_size=0, abortable=True),
)
async def exclusive(ctx: CallContext, job: Job, gate: str) -> bool:
    """Refused with EBUSY while another runs."""
    await _gate(gate).wait()
    return True


@registry.method(
    params=[Param("user", NAME), Param("password", NAME, secret=True)], job=JobOptions(logs=True)
)
async def secret(ctx: CallContext, job: Job, user: str, password: str) -> str:
    """A job with a secret argument; writes a log line."""
    job.log(f"connecting as {user}")
    return user


@registry.method(
    params=[Param("gate", NAME)], job=JobOptions(retry_on_restart=True, abortable=True)
)
async def retried(ctx: CallContext, job: Job, gate: str) -> str:
    """A job safe to re-run after a restart."""
    await _gate(gate).wait()
    return "again"


@registry.method(params=[Param("seconds", NUMBER)], job=JobOptions(timeout=0.2))
async def slow(ctx: CallContext, job: Job, seconds: float) -> bool:
    """Times out after 0.2 s."""
    await asyncio.sleep(seconds)
    return True


@registry.method(params=[Param("lines", {"type": "integer"})], job=JobOptions(logs=True))
async def logs(ctx: CallContext, job: Job, lines: int) -> int:
    """Write ``lines`` log lines."""
    for i in range(lines):
        job.log(f"line {i}")
    return lines


# What the filesystem hands over for a name that is not UTF-8 (b"caf\xe9.txt"): a str
# decoded with surrogateescape, holding the lone surrogate U+DCE9.
UNDECODABLE = os.fsdecode(b"caf\xe9.txt")


@registry.method()
async def undecodable(ctx: CallContext) -> str:
    """A name that is not UTF-8, as os.listdir returns it (a lone surrogate)."""
    return UNDECODABLE


@registry.method(job=JobOptions(description="Names that are not UTF-8"))
async def undecodable_job(ctx: CallContext, job: Job) -> dict[str, Any]:
    """Report progress with, then end with, names that are not UTF-8."""
    job.set_progress(50, UNDECODABLE, {"name": UNDECODABLE})
    return {"name": UNDECODABLE, "names": [UNDECODABLE, "plain"]}


@registry.method()
async def unencodable(ctx: CallContext) -> Any:
    """A value JSON has no form for (a set)."""
    return {1, 2}


@registry.method(params=[Param("where", {"enum": ["result", "progress"]})], job=JobOptions())
async def unencodable_job(ctx: CallContext, job: Job, where: str) -> Any:
    """A job whose result, or whose progress extra, JSON has no form for (a set)."""
    if where == "progress":
        job.set_progress(50, "an extra with no JSON form", {1, 2})
        await asyncio.sleep(0)
        job.set_progress(60, "a plain one after it")
        return True
    return {1, 2}


@registry.method(
    params=[Param("gate", NAME)], job=JobOptions(pipes=frozenset({"input"}), abortable=True)
)
async def late_reader(ctx: CallContext, job: Job, gate: str) -> int:
    """Read nothing of its upload until ``gate`` opens (the upload is spooled meanwhile)."""
    await _gate(gate).wait()
    assert job.pipes.input is not None
    total = 0
    async for f in job.pipes.input:
        async for chunk in f.chunks():
            total += len(chunk)
    return total


@registry.method(params=[Param("value", {}, required=False)], job=JobOptions())
async def echo_job(ctx: CallContext, job: Job, value: Any) -> Any:
    """A job returning the value given (a trigger with pass_event gives its events)."""
    return value


@registry.method(
    params=[Param("chunks", {"type": "integer", "minimum": 0, "maximum": 4})],
    job=JobOptions(pipes=frozenset({"output"})),
)
async def broken_output(ctx: CallContext, job: Job, chunks: int) -> None:
    """Write ``chunks`` chunks of 64 KiB for download, wait until a downloader is reading,
    then fail."""
    output = job.pipes.output
    assert output is not None
    for _ in range(chunks):
        await output.write(b"x" * 65536)
    await output.reader_attached.wait()
    raise CallError(f"broken after {chunks} chunks")
