"""Everything the engine computes from a trigger's data, parsed once at create time: its
schedule, its event rules, its debounce and its webhook auth. Bad data is a -32602 naming
the field, never an error at fire time."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from typing import Any

from middlewared.errors import ValidationErrors
from middlewared.triggers.durations import parse_debounce
from middlewared.triggers.model import TIME_TYPES, Trigger
from middlewared.triggers.rules import parse_rules
from middlewared.triggers.schedule import parse_schedule
from middlewared.triggers.webhooks import parse_auth


def derive(trigger: Trigger, allow_unsigned_webhooks: bool) -> None:
    data = trigger.data
    kind = data["type"]
    arguments = data.get("arguments") or ""
    options = data.get("options") or {}
    if kind in TIME_TYPES:
        created = datetime.fromtimestamp(trigger.created / 1000, UTC)
        trigger.schedule = parse_schedule(
            kind, arguments, timezone=options.get("timezone"), created=created, seed=trigger.id
        )
    elif kind == "@event":
        trigger.rules = parse_rules(arguments)
    elif arguments:
        raise _bad("arguments", f"a {kind} trigger takes no arguments")
    if kind == "@webhook":
        trigger.auth = parse_auth(data.get("auth"), allow_unsigned_webhooks)
    elif data.get("auth") is not None:
        raise _bad("auth", "only @webhook triggers have an auth")
    if data.get("debounce") is not None and kind not in ("@event", "@webhook"):
        raise _bad("debounce", "only @event and @webhook triggers can be debounced")
    trigger.debounce = parse_debounce(data.get("debounce"))


def _bad(field: str, message: str) -> ValidationErrors:
    return ValidationErrors([(field, message, errno.EINVAL)])


def collections_of(trigger: Trigger) -> set[str]:
    """The collections an @event trigger's rules name."""
    return {rule.collection for rule in trigger.rules or []}


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """The data as stored: every key present, defaults filled in."""
    options = {
        "missed": "skip",
        "overlap": "queue",
        "timezone": None,
        **(data.get("options") or {}),
    }
    return {
        "type": data["type"],
        "arguments": data.get("arguments") or "",
        "method": data["method"],
        "params": list(data.get("params") or []),
        "description": data.get("description") or "",
        "debounce": data.get("debounce"),
        "pass_event": bool(data.get("pass_event", False)),
        "options": options,
        "auth": data.get("auth"),
        "notify_on_success": list(data.get("notify_on_success") or []),
        "notify_on_failure": list(data.get("notify_on_failure") or []),
    }
