"""What ``midclt trigger`` prints: a table of triggers, one trigger in full, their states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from middlewared import jsonc
from middlewared_client.clitext import format_table

COLUMNS = ("ID", "NAME", "TRIGGER", "METHOD", "NEXT RUN", "LAST RUN", "STATE")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(value: Any) -> str:
    """A ``{"$date": ms}`` in this machine's time zone (``2026-07-01 08:30:00``), else ``-``."""
    if not isinstance(value, dict) or not isinstance(value.get("$date"), int | float):
        return "-"
    return datetime.fromtimestamp(value["$date"] / 1000).astimezone().strftime(TIME_FORMAT)


def _state(record: dict[str, Any]) -> dict[str, Any]:
    state = record.get("current_state")
    return state if isinstance(state, dict) else {}


def trigger_text(record: dict[str, Any]) -> str:
    """Its type and arguments as one would write them: ``@cron 0 3 * * *``."""
    return f"{record.get('type', '')} {record.get('arguments') or ''}".strip()


def state_text(record: dict[str, Any]) -> str:
    """``active``, or ``paused`` with the reason the server recorded (an owner removed, a
    reason given to ``pause``, the last error)."""
    if not record.get("paused"):
        return "active"
    reason = _state(record).get("last_error")
    return f"paused: {' '.join(str(reason).split())}" if reason else "paused"


def next_run_text(record: dict[str, Any]) -> str:
    """When it fires next, in local time; ``-`` when paused or not time-based."""
    return "-" if record.get("paused") else local_time(record.get("next_run"))


def last_run_text(record: dict[str, Any]) -> str:
    """How its last job went: ``done (job 42)``, ``errored (job 43)``, ``running (job 44)``."""
    state = _state(record)
    status, job_id = state.get("status"), state.get("last_executed_job_id")
    if status is None:
        return "-"
    return f"{status} (job {job_id})" if job_id is not None else str(status)


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(record.get("id", "")),
        " ".join(str(record.get("description") or "-").split()),
        " ".join(trigger_text(record).split()),
        str(record.get("method", "")),
        next_run_text(record),
        last_run_text(record),
        state_text(record),
    )


def format_triggers_table(records: Sequence[dict[str, Any]]) -> str:
    """Triggers as a table, one row each, the state (with its reason) last."""
    return format_table(COLUMNS, [_row(record) for record in records])


def _options_text(record: dict[str, Any]) -> str:
    options = record.get("options") or {}
    zone = options.get("timezone") or "the server's"
    return f"missed={options.get('missed')} overlap={options.get('overlap')} timezone={zone}"


def _webhook_text(record: dict[str, Any]) -> str | None:
    auth = record.get("auth")
    if record.get("type") != "@webhook" or not isinstance(auth, dict):
        return None
    path = auth.get("path") or record.get("id")
    return f"POST /hooks/{path} signed {auth.get('kind')}"


def _notify_text(record: dict[str, Any]) -> str | None:
    parts = [
        f"on {when}: {', '.join(names)}"
        for when in ("success", "failure")
        if (names := record.get(f"notify_on_{when}"))
    ]
    return "; ".join(parts) or None


def _last_run_at(record: dict[str, Any]) -> str:
    when = _state(record).get("last_execution")
    text = last_run_text(record)
    return f"{text} at {local_time(when)}" if when is not None else text


def format_trigger(record: dict[str, Any]) -> str:
    """One trigger, a field a line: what it runs, when, how it went."""
    state = _state(record)
    params = record.get("params") or []
    last_error = state.get("last_error")
    fields: list[tuple[str, str | None]] = [
        ("id", str(record.get("id", ""))),
        ("name", record.get("description") or "-"),
        ("trigger", trigger_text(record)),
        ("method", f"{record.get('method', '')} {jsonc.dumps(params)}"),
        ("state", state_text(record)),
        ("next run", next_run_text(record)),
        ("last run", _last_run_at(record)),
        ("last success", local_time(state.get("last_success"))),
        ("last failure", local_time(state.get("last_failure"))),
        ("last error", " ".join(str(last_error).split()) if last_error else None),
        ("options", _options_text(record)),
        ("debounce", record.get("debounce")),
        ("pass event", "yes" if record.get("pass_event") else None),
        ("webhook", _webhook_text(record)),
        ("notify", _notify_text(record)),
        ("owner", record.get("owner") or "-"),
        ("created", local_time(record.get("created"))),
    ]
    shown = [(name, value) for name, value in fields if value is not None]
    width = max(len(name) for name, _ in shown)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in shown)
