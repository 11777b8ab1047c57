"""Job events on the bus: ADDED, CHANGED and REMOVED of the ``core.get_jobs`` collection,
built from a job's record only when somebody consumes them."""

from __future__ import annotations

from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event, EventBus
from middlewared.jobs.job import Job, Snapshot
from middlewared.jobs.store import Purged

COLLECTION = "core.get_jobs"


class JobEvents:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def publish(self, job: Job, snap: Snapshot | None, added: bool = False) -> None:
        """``snap``: the record just stored (its JSON is reused); None: as the job is now."""
        if job.options.transient or not self.bus.has_consumers(COLLECTION):
            return
        self.bus.publish(job_event(job, ADDED if added else CHANGED, snap))

    def publish_removed(self, removed: list[Purged]) -> None:
        """Purged jobs: each REMOVED reaches only those who could read the job."""
        if self.bus.has_consumers(COLLECTION):
            for p in removed:
                self.bus.publish(
                    Event(
                        COLLECTION,
                        REMOVED,
                        p.id,
                        owner=p.owner_id,
                        method=p.method,
                        owner_key=p.key_id,
                        cause=p.id,
                    )
                )


def job_event(job: Job, msg: str, snap: Snapshot | None) -> Event:
    """The event for ``job``: from ``snap`` (and its JSON) when given, else as it is now."""
    if snap is None:
        fields = job.record(admin=False)
        exception = job.exception
        encoded = None
    else:
        fields, exception, encoded = snap.record, snap.record["exception"], snap.encoded
        if exception:
            fields = {**fields, "exception": None}
    admin = {"exception": exception} if exception else None
    return Event(
        COLLECTION,
        msg,
        job.id,
        fields,
        job.owner_id,
        admin,
        encoded,
        job.method,
        owner_key=job.credentials.api_key_id,
        cause=job.id,
    )
