"""mail.*: the outgoing mail server's settings, read and changed by administrators (the
password is write-only: no method returns it)."""

from __future__ import annotations

import errno
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import ValidationErrors
from middlewared.mail import SETTINGS_DEFAULTS, SETTINGS_SCHEMA, check_ca_certificate
from middlewared.registry import Access, Param, Registry

registry = Registry("mail", "Outgoing mail (SMTP)")
registry.declare_settings(SETTINGS_SCHEMA, SETTINGS_DEFAULTS)

CONFIG: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{k: v for k, v in SETTINGS_SCHEMA["properties"].items() if k != "password"},
        "password_set": {"type": "boolean"},
    },
}


def _shown(settings: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in settings.items() if k != "password"}
    shown["password_set"] = bool(settings.get("password"))
    return shown


@registry.method(returns=CONFIG, access=Access.ADMIN)
async def config(ctx: CallContext) -> dict[str, Any]:
    """The SMTP settings: ``host``, ``port``, ``security`` (``PLAIN``, ``STARTTLS`` or
    ``TLS``), ``username``, ``from_email``, ``noreply_email``, ``timeout`` (seconds the
    whole exchange may take), ``ca_certificate`` (PEM certificates trusted for the server
    instead of the system's), and ``password_set`` in place of the password."""
    return _shown(ctx.settings())


@registry.method(
    params=[Param("changes", SETTINGS_SCHEMA, secret=True)],
    returns=CONFIG,
    access=Access.ADMIN,
)
async def update(ctx: CallContext, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some SMTP settings (``password: ""`` removes the password); answers as
    ``mail.config``. Kept in the store and carried by ``config.save``."""
    why = check_ca_certificate(changes.get("ca_certificate", ""))
    if why:
        raise ValidationErrors([("ca_certificate", why, errno.EINVAL)])
    return _shown(await ctx.app.set_settings("mail", changes))
