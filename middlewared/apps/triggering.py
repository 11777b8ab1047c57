"""A service's trigger: what it runs (``app.run(slug, service)``), on what, and the mark
that makes it the app's (``managed``: changed through app.* only)."""

from __future__ import annotations

from typing import Any

from middlewared.apps.manifest import Service
from middlewared.triggers.parse import normalise

KIND = "app"
METHOD = "app.run"


def trigger_data(slug: str, service: Service) -> dict[str, Any]:
    webhook = service.trigger_type == "@webhook"
    return normalise(
        {
            "type": service.trigger_type,
            "arguments": service.arguments,
            "method": METHOD,
            "params": [slug, service.name],
            "description": f"app {slug}: service {service.name}",
            "debounce": service.debounce,
            "pass_event": service.trigger_type in ("@event", "@webhook"),
            # cozy's webhooks are unsigned: served only with --allow-unsigned-webhooks.
            "auth": {"kind": "none", "path": f"apps/{slug}/{service.name}"} if webhook else None,
        }
    )
