"""user.*: administrators create, query, update and delete users."""

from __future__ import annotations

from typing import Any

from middlewared.auth.twofactor import TwoFactor
from middlewared.context import CallContext
from middlewared.errors import CallError, NotFound, PermissionDenied
from middlewared.mail import OPTIONAL_EMAIL
from middlewared.query import query
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of
from middlewared.services.schemas import ALLOWLIST, QUERY_PARAMS

registry = Registry("user", "Users")

_FIELDS: dict[str, Any] = {
    "username": {"type": "string", "minLength": 1, "maxLength": 32},
    "full_name": {"type": "string", "maxLength": 200},
    "password": {"type": "string", "minLength": 8, "maxLength": 1024},
    "admin": {"type": "boolean"},
    "locked": {"type": "boolean"},
    "allowlist": ALLOWLIST,
    # Their own address: mail.send's noreply mode writes to it, its from mode replies to it.
    "email": OPTIONAL_EMAIL,
}
CREATE = {
    "type": "object",
    "properties": _FIELDS,
    "required": ["username"],
    "additionalProperties": False,
}
UPDATE = {"type": "object", "properties": _FIELDS, "additionalProperties": False}
UID = {"type": "integer", "minimum": 1}


@registry.method(params=QUERY_PARAMS, access=Access.ADMIN, name="query")
async def query_users(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query users (no password hashes, ever)."""
    records = [u.record() for u in app_of(ctx).directory.users.values()]
    return query(records, filters, options)


@registry.method(
    params=[Param("data", CREATE, secret=True)], returns={"type": "object"}, access=Access.ADMIN
)
async def create(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create a user. Non-admins may call only the methods their allow-list matches."""
    return (await app_of(ctx).directory.create_user(data)).record()


@registry.method(
    params=[Param("id", UID), Param("data", UPDATE, secret=True)],
    returns={"type": "object"},
    access=Access.ADMIN,
)
async def update(ctx: CallContext, uid: int, data: dict[str, Any]) -> dict[str, Any]:
    """Change a user's name, password, admin flag, lock, allow-list or email; their open sessions
    and tokens have the new rights from their next call. Refused when it would leave no
    administrator who can log in."""
    return (await app_of(ctx).directory.update_user(uid, data)).record()


@registry.method(params=[Param("id", UID)], returns={"type": "boolean"}, access=Access.ADMIN)
async def delete(ctx: CallContext, uid: int) -> bool:
    """Delete a user and their API keys; their sessions and tokens end at once. The last
    administrator who can log in cannot be deleted."""
    await app_of(ctx).directory.delete_user(uid)
    return True


# -- two-factor secrets (TrueNAS's user.renew_2fa_secret, user.provisioning_uri) ---------------
USERNAME = {"type": "string", "minLength": 1, "maxLength": 32}
TWOFACTOR_OPTIONS = {
    "type": "object",
    "properties": {
        "interval": {"type": "integer", "minimum": 5, "maximum": 300},
        "otp_digits": {"type": "integer", "minimum": 6, "maximum": 8},
    },
    "additionalProperties": False,
}


def _own_or_admin(ctx: CallContext, username: str, method: str) -> int:
    """The id of ``username`` when the caller may change its two-factor secret: the user
    themself (unless a key or grant narrows them away from ``method``), or an administrator
    whose rights grant ``method``."""
    creds = ctx.user
    own = creds.username == username
    if not ((own and not creds.restricted_key) or (creds.allows(method) and (own or creds.admin))):
        raise PermissionDenied(f"Not permitted to call {method} for {username!r}")
    user = app_of(ctx).directory.by_name(username)
    if user is None:
        raise NotFound(f"User {username!r} does not exist")
    return user.id


@registry.method(
    params=[
        Param("username", USERNAME),
        Param("options", TWOFACTOR_OPTIONS, required=False, default={}),
    ],
    returns={"type": "object"},
    access=Access.SELF,
)
async def renew_2fa_secret(
    ctx: CallContext, username: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Give a user a new two-factor secret (TOTP: ``interval`` seconds, 30, and
    ``otp_digits``, 6): users for themselves, administrators for anyone. The old one stops
    working at once; ``user.provisioning_uri`` gives the new one to an authenticator app."""
    uid = _own_or_admin(ctx, username, "user.renew_2fa_secret")
    secret = TwoFactor.new(options.get("interval", 30), options.get("otp_digits", 6))
    user = await app_of(ctx).directory.set_twofactor(uid, secret)
    return user.record()


@registry.method(
    params=[Param("username", USERNAME)], returns={"type": "object"}, access=Access.ADMIN
)
async def unset_2fa_secret(ctx: CallContext, username: str) -> dict[str, Any]:
    """Take a user's two-factor secret away (a lost phone): they log in with a password only."""
    directory = app_of(ctx).directory
    user = directory.by_name(username)
    if user is None:
        raise NotFound(f"User {username!r} does not exist")
    return (await directory.set_twofactor(user.id, None)).record()


@registry.method(
    params=[Param("username", USERNAME)],
    # writeOnly: it holds the secret; never shown to logs nor hook scripts.
    returns={"type": "string", "writeOnly": True},
    access=Access.SELF,
)
async def provisioning_uri(ctx: CallContext, username: str) -> str:
    """The ``otpauth://totp/...`` URI of a user's two-factor secret (for an authenticator
    app): users for themselves, administrators for anyone. It holds the secret."""
    uid = _own_or_admin(ctx, username, "user.provisioning_uri")
    user = app_of(ctx).directory.users[uid]
    if user.twofactor is None:
        raise CallError(f"User {username!r} has no two-factor secret: user.renew_2fa_secret")
    return user.twofactor.uri(username)
