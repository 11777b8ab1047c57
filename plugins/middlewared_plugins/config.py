"""config.*: save a consistent snapshot of the server's database; restore one."""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
from pathlib import Path
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import CallError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.jobs.pipes import CHUNK
from middlewared.registry import Access, JobOptions, Param, Registry

registry = Registry("config", "Configuration backup and restore")
log = logging.getLogger(__name__)

# Restores run one at a time (each upload is its own job: pipes are never shared).
LOCK = "config.restore"


def _spool(ctx: CallContext, suffix: str) -> Path:
    return ctx.config.spool_dir / f"{secrets.token_hex(8)}.{suffix}"


# TrueNAS's options of config.save, which backup tools in the wild pass. None changes what
# is saved here: the snapshot always holds what a restore needs (no secret is sealed with a
# separate seed), and there are no pools nor SSH keys. Any other option is refused.
TRUENAS_OPTIONS = {
    "secretseed": "the snapshot always carries its secrets: no separate seed to add",
    "pool_keys": "no ZFS pools here",
    "root_authorized_keys": "no SSH here",
}
SAVE_OPTIONS = {
    "type": "object",
    "properties": {name: {"type": "boolean"} for name in TRUENAS_OPTIONS},
    "additionalProperties": False,
}


@registry.method(
    params=[Param("options", SAVE_OPTIONS, required=False, default={})],
    returns={"type": "null"},
    job=JobOptions(pipes=frozenset({"output"}), description="Saving the configuration"),
    access=Access.ADMIN,
)
async def save(ctx: CallContext, job: Job, options: dict[str, Any]) -> None:
    """Write a consistent online snapshot of the database to the output pipe.

    Use it through ``core.download("config.save", [{}], "middlewared-backup.db")``.
    TrueNAS's options (``secretseed``, ``pool_keys``, ``root_authorized_keys``) are
    accepted, so its backup tools work here, and change nothing: the snapshot always holds
    what a restore needs, and there are no pools nor SSH keys.
    """
    for name, value in options.items():
        log.debug(
            "config.save: option %s=%s has no effect here (%s)", name, value, TRUENAS_OPTIONS[name]
        )
    output = job.pipes.output
    assert output is not None
    snapshot = _spool(ctx, "backup")
    try:
        await ctx.app.backup(snapshot)
        size = (await asyncio.to_thread(snapshot.stat)).st_size
        sent = 0
        with snapshot.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                await output.write(chunk)
                sent += len(chunk)
                job.set_progress(100 * sent / size, f"Sent {sent} of {size} bytes")
    finally:
        await asyncio.to_thread(snapshot.unlink, True)


@registry.method(
    returns={"type": "object"},
    job=JobOptions(
        pipes=frozenset({"input"}),
        lock=LOCK,
        lock_queue_size=None,
        description="Restoring the configuration",
    ),
    access=Access.ADMIN,
)
async def upload(ctx: CallContext, job: Job) -> dict[str, Any]:
    """Restore a database saved by ``config.save`` (upload it through ``POST /_upload``).

    The file is validated first (a sound SQLite database of our schema, with an
    administrator); a bad file is refused with the reason and nothing changes. Users, API
    keys and settings are replaced; jobs are kept, including those started meanwhile.
    """
    pipe = job.pipes.input
    assert pipe is not None
    uploaded = await pipe.first()
    copy = _spool(ctx, "restore")
    try:
        received = 0
        with copy.open("xb") as f:
            async for chunk in uploaded.chunks():
                await asyncio.to_thread(f.write, chunk)
                received += len(chunk)
                job.set_progress(None, f"Received {received} bytes")
        if received == 0:
            raise ValidationErrors([("file", "The uploaded file is empty", errno.EINVAL)])
        job.set_progress(50, "Validating")
        version = await ctx.app.restore(copy)
        job.set_progress(100, "Restored")
        return {"restored": True, "schema_version": version, "bytes": received}
    except ValidationErrors:
        raise
    except OSError as e:
        raise CallError(f"Cannot restore: {e}") from e
    finally:
        await asyncio.to_thread(copy.unlink, True)
