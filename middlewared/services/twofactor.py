"""auth.twofactor.*: TrueNAS's system-wide two-factor switch and window (administrators).
With it on, a user who has a secret (``user.renew_2fa_secret``) gives a code after the
password: ``auth.login_ex`` answers OTP_REQUIRED and ``auth.login_ex_continue`` takes it."""

from __future__ import annotations

from typing import Any

from middlewared.context import CallContext
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of

registry = Registry("auth.twofactor", "Two-factor authentication (TOTP), system-wide")

NAMESPACE = "auth.twofactor"
FIELDS: dict[str, Any] = {
    "enabled": {"type": "boolean"},
    # Time steps accepted either side of now (clock drift between server and phone).
    "window": {"type": "integer", "minimum": 0, "maximum": 10},
    # TrueNAS's: two-factor for SSH. No SSH here: kept and shown, meaning nothing.
    "services": {
        "type": "object",
        "properties": {"ssh": {"type": "boolean"}},
        "additionalProperties": False,
    },
}
SCHEMA = {"type": "object", "properties": FIELDS, "additionalProperties": False}
DEFAULTS: dict[str, Any] = {"enabled": False, "window": 0, "services": {"ssh": False}}
registry.declare_settings(SCHEMA, DEFAULTS)
CONFIG = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, **FIELDS},
    "required": ["id", "enabled", "window", "services"],
}


def settings_of(app: Any) -> dict[str, Any]:
    """``{"enabled", "window", "services"}`` as they stand."""
    values: dict[str, Any] = app.get_settings(NAMESPACE)
    return {**DEFAULTS, **values}


@registry.method(returns=CONFIG, access=Access.ADMIN)
async def config(ctx: CallContext) -> dict[str, Any]:
    """``{"id": 1, "enabled", "window", "services": {"ssh"}}``, as TrueNAS's."""
    return {"id": 1, **settings_of(app_of(ctx))}


@registry.method(params=[Param("data", SCHEMA)], returns=CONFIG, access=Access.ADMIN)
async def update(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Turn two-factor on or off for every user who has a secret, and set the ``window``
    (time steps accepted either side of now, 0 to 10)."""
    app = app_of(ctx)
    await app.set_settings(NAMESPACE, data)
    return {"id": 1, **settings_of(app)}
