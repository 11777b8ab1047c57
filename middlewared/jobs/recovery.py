"""After a restart: the jobs the server stopped under are failed with the reason, or run
again when their method says it is safe."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Any

from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.jobs.engine import JobEngine, resolve_option
from middlewared.jobs.job import Job, JobState, now_ms
from middlewared.jobs.store import Unfinished
from middlewared.registry import MethodSpec

log = logging.getLogger(__name__)


async def recover(
    engine: JobEngine,
    lookup: Callable[[str], MethodSpec | None],
    resolve: Callable[[Identity], Credentials | None],
) -> int:
    """Fail (or re-queue) the jobs that were pending. Returns how many there were.

    A job is re-queued only when its method is declared safe to retry, it had no secret
    arguments (those were never stored) and its identity still resolves: it runs again with
    the credentials its user and key have now.
    """
    await engine.store.load_counter()
    pending = await engine.store.unfinished()
    for found in pending:
        creds = _credentials(found, lookup, resolve)
        spec = lookup(found.record["method"])
        if creds is not None and spec is not None and spec.job is not None:
            _requeue(engine, spec, found.record, creds)
            continue
        await _fail(engine, found)
    return len(pending)


def _credentials(
    found: Unfinished,
    lookup: Callable[[str], MethodSpec | None],
    resolve: Callable[[Identity], Credentials | None],
) -> Credentials | None:
    if not found.retry_on_restart:
        return None
    spec = lookup(found.record["method"])
    # Its record holds its arguments as shown, not as given: it cannot run again from them.
    if spec is None or spec.job is None or spec.hidden_params:
        return None
    shown = found.record.get("credentials") or {}
    kind = str(shown.get("type"))
    key = (shown.get("data") or {}).get("api_key") or {}
    identity = Identity(
        CredentialKind(kind) if kind in CredentialKind.__members__ else CredentialKind.INTERNAL,
        found.owner_id,
        key.get("id"),
    )
    if identity.kind is not CredentialKind.INTERNAL and identity.user_id is None:
        return None
    return resolve(identity)


async def _fail(engine: JobEngine, found: Unfinished) -> None:
    record = found.record
    was = record["state"]
    record["state"] = JobState.FAILED.value
    record["time_finished"] = {"$date": now_ms()}
    record["error"] = f"Interrupted: the server stopped while the job was {was}"
    record["exception"] = record["error"]
    record["exc_info"] = {
        "type": "Interrupted",
        "errno": errno.EINTR,
        "errname": "EINTR",
        "extra": None,
        "repr": record["error"],
    }
    await engine.store.save_record(record, found.owner_id)
    log.warning(
        "job %d (%s) was %s when the server stopped: marked FAILED",
        record["id"],
        record["method"],
        was,
    )


def _requeue(
    engine: JobEngine, spec: MethodSpec, record: dict[str, Any], creds: Credentials
) -> None:
    assert spec.job is not None
    args = list(record["arguments"])
    job = Job(
        record["id"],
        spec.name,
        spec.job,
        args,
        list(args),
        creds,
        None,
        resolve_option(spec.job.lock, args),
        record["description"],
        origin="restart",
    )
    job.message_ids = list(record.get("message_ids") or [])
    job.time_started = (record.get("time_started") or {}).get("$date", job.time_started)
    job.attempt = int(record.get("attempt") or 1)
    engine.relaunch(job)
    log.warning("job %d (%s) re-queued after a restart", job.id, job.method)
