"""A trigger as the engine holds it, and its record as ``trigger.query`` shows it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from middlewared import jsonc
from middlewared.auth.credentials import CredentialKind, Identity
from middlewared.triggers.schedule import TIME_TYPES as SCHEDULE_TYPES
from middlewared.triggers.webhooks import WebhookAuth

TIME_TYPES = frozenset(SCHEDULE_TYPES)
ONCE_TYPES = frozenset({"@at", "@in"})
TYPES = TIME_TYPES | {"@event", "@webhook", "@client"}

EMPTY_STATE: dict[str, Any] = {
    "status": None,
    "last_execution": None,
    "last_executed_job_id": None,
    "last_success": None,
    "last_successful_job_id": None,
    "last_failure": None,
    "last_failed_job_id": None,
    "last_error": None,
    "last_manual_execution": None,
    "last_manual_job_id": None,
    "runs": 0,
}


def date(ms: int | None) -> dict[str, int] | None:
    return None if ms is None else {"$date": ms}


@dataclass
class Trigger:
    """``data`` is what the user gave (validated); the rest the engine keeps."""

    id: int
    data: dict[str, Any]
    owner_id: int | None
    owner_key: int | None
    created: int
    paused: bool = False
    next_run: int | None = None
    state: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(EMPTY_STATE))
    # Derived when loaded or created (never stored).
    schedule: Any = None
    rules: Any = None
    debounce: timedelta | None = None
    auth: WebhookAuth | None = None
    # Jobs of this trigger that have not ended (overlap decides whether one more may start).
    running: set[int] = field(default_factory=set)
    # The last event or webhook fire's due time (ms): fires of one trigger never share one.
    last_due: int = 0
    # Its name in the --config file's [[trigger]] tables (changed there, not through the API).
    declared: str | None = None
    # What a service keeps with a trigger it manages (a cron job's line: cronjob.*), whose
    # ``kind`` names the service; changed through that service, not trigger.update.
    managed: dict[str, Any] | None = None

    @property
    def type(self) -> str:
        return str(self.data["type"])

    @property
    def identity(self) -> Identity:
        """Who its jobs run as: its owner, as they stand when it fires (the key it was made
        with narrows it, as it narrowed its maker)."""
        return Identity(CredentialKind.TRIGGER, self.owner_id, self.owner_key)

    @property
    def hook_path(self) -> str | None:
        return self.auth.path if self.auth is not None else None

    def record(self, owner: str | None, shown_params: list[Any] | None = None) -> dict[str, Any]:
        """As ``trigger.query`` returns it: no secret (webhook secret, secret params)."""
        data = copy.deepcopy(self.data)
        if self.auth is not None:
            data["auth"] = self.auth.shown()
        if shown_params is not None:
            data["params"] = copy.deepcopy(shown_params)
        state = {k: v for k, v in self.state.items() if k != "runs"}
        for key in ("last_execution", "last_success", "last_failure", "last_manual_execution"):
            state[key] = date(state[key])
        return {
            "id": self.id,
            **data,
            "owner": owner,
            "paused": self.paused,
            "next_run": date(self.next_run),
            "current_state": state,
            "created": date(self.created),
            "declared": self.declared,
            "managed_by": self.managed["kind"] if self.managed else None,
        }

    def row(self) -> dict[str, Any]:
        stored = {
            "data": self.data,
            "owner_key": self.owner_key,
            "created": self.created,
            "state": self.state,
            "declared": self.declared,
            "managed": self.managed,
        }
        return {
            "id": self.id,
            "type": self.type,
            "owner_id": self.owner_id,
            "paused": int(self.paused),
            "next_run": self.next_run,
            "hook_path": self.hook_path,
            "record": jsonc.dumps(stored),
        }


def from_row(row: dict[str, Any]) -> Trigger:
    stored = jsonc.loads(row["record"])
    return Trigger(
        id=int(row["id"]),
        data=stored["data"],
        owner_id=row["owner_id"],
        owner_key=stored.get("owner_key"),
        created=int(stored["created"]),
        paused=bool(row["paused"]),
        next_run=row["next_run"],
        state={**copy.deepcopy(EMPTY_STATE), **stored.get("state", {})},
        declared=stored.get("declared"),
        managed=stored.get("managed"),
    )
