"""user.*: administrators create, query, update and delete users."""

from __future__ import annotations

from typing import Any

from middlewared.context import CallContext
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
    """Change a user's name, password, admin flag, lock or allow-list; their open sessions
    and tokens have the new rights from their next call. Refused when it would leave no
    administrator who can log in."""
    return (await app_of(ctx).directory.update_user(uid, data)).record()


@registry.method(params=[Param("id", UID)], returns={"type": "boolean"}, access=Access.ADMIN)
async def delete(ctx: CallContext, uid: int) -> bool:
    """Delete a user and their API keys; their sessions and tokens end at once. The last
    administrator who can log in cannot be deleted."""
    await app_of(ctx).directory.delete_user(uid)
    return True
