"""settings.*: administrators read and change the settings plugins declare."""

from __future__ import annotations

from typing import Any

from middlewared.context import CallContext
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of

registry = Registry("settings", "Plugin settings")

NAMESPACE = {"type": "string", "minLength": 1}


@registry.method(returns={"type": "object"}, access=Access.ADMIN)
async def schemas(ctx: CallContext) -> dict[str, Any]:
    """Each namespace that has settings, with the JSON Schema of its settings object."""
    return app_of(ctx).settings.schemas()


@registry.method(
    params=[Param("namespace", NAMESPACE)], returns={"type": "object"}, access=Access.ADMIN
)
async def get(ctx: CallContext, namespace: str) -> dict[str, Any]:
    """A namespace's settings (its defaults, overlaid with what was changed); write-only
    fields (passwords) are left out."""
    return app_of(ctx).settings.readable(namespace)


@registry.method(
    params=[Param("namespace", NAMESPACE), Param("changes", {"type": "object"}, secret=True)],
    returns={"type": "object"},
    access=Access.ADMIN,
)
async def update(ctx: CallContext, namespace: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some of a namespace's settings (validated against its schema); returns them
    all but the write-only ones. They are kept in the store and carried by ``config.save``."""
    app = app_of(ctx)
    await app.set_settings(namespace, changes)
    return app.settings.readable(namespace)
