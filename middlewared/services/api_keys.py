"""api_key.*: administrators issue, query, update and revoke API keys."""

from __future__ import annotations

import base64
from typing import Any

from middlewared.context import CallContext
from middlewared.query import query
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of
from middlewared.services.schemas import ALLOWLIST, QUERY_PARAMS

registry = Registry("api_key", "API keys")

_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "username": {"type": "string", "minLength": 1},
    "allowlist": ALLOWLIST,
    "expires": {"type": ["integer", "null"], "description": "ms since epoch"},
}
CREATE = {
    "type": "object",
    "properties": _FIELDS,
    "required": ["name"],
    "additionalProperties": False,
}
UPDATE = {
    "type": "object",
    "properties": {k: v for k, v in _FIELDS.items() if k != "username"},
    "additionalProperties": False,
}
KID = {"type": "integer", "minimum": 1}


@registry.method(params=QUERY_PARAMS, access=Access.ADMIN, name="query")
async def query_keys(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query API keys (their secrets are never stored nor shown)."""
    directory = app_of(ctx).directory
    records = [directory.key_record(k) for k in directory.keys.values()]
    return query(records, filters, options)


@registry.method(params=[Param("data", CREATE)], returns={"type": "object"}, access=Access.ADMIN)
async def create(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Issue a key for a user (default root) with an allow-list of method patterns
    (default ``["*"]``). The answer's ``key`` is shown this once only, with
    ``client_material`` (``api_key_id``, ``client_key``, ``stored_key``, ``server_key``):
    TrueNAS's client takes it as JSON in place of the key and then logs in with SCRAM
    without computing PBKDF2."""
    directory = app_of(ctx).directory
    key, secret, client_key = await directory.create_key(data)
    assert key.scram is not None
    material = {
        "api_key_id": key.id,
        "client_key": base64.b64encode(client_key).decode(),
        "stored_key": base64.b64encode(key.scram.stored_key).decode(),
        "server_key": base64.b64encode(key.scram.server_key).decode(),
    }
    return {**directory.key_record(key), "key": secret, "client_material": material}


@registry.method(
    params=[Param("id", KID), Param("data", UPDATE)],
    returns={"type": "object"},
    access=Access.ADMIN,
)
async def update(ctx: CallContext, kid: int, data: dict[str, Any]) -> dict[str, Any]:
    """Rename a key, change its allow-list or expiry."""
    directory = app_of(ctx).directory
    return directory.key_record(await directory.update_key(kid, data))


@registry.method(params=[Param("id", KID)], returns={"type": "boolean"}, access=Access.ADMIN)
async def delete(ctx: CallContext, kid: int) -> bool:
    """Revoke a key: sessions it logged in and tokens minted from it end at once."""
    await app_of(ctx).directory.delete_key(kid)
    return True
