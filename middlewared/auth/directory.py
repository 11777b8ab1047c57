"""Users and API keys: held in memory for fast checks, written through to the store."""

from __future__ import annotations

import errno
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from middlewared import jsonc
from middlewared.auth.credentials import CredentialKind, Credentials
from middlewared.auth.passwords import (
    hash_key,
    hash_password_async,
    new_secret,
    same_hash,
    verify_password_async,
)
from middlewared.errors import NotFound, ValidationErrors
from middlewared.store.base import Op, Store

log = logging.getLogger(__name__)

USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
API_KEY = re.compile(r"^(\d+)-([A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class User:
    id: int
    username: str
    full_name: str
    password_hash: str | None
    admin: bool
    locked: bool
    allowlist: tuple[str, ...]
    created: int

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "full_name": self.full_name,
            "admin": self.admin,
            "locked": self.locked,
            "allowlist": list(self.allowlist),
            "password_set": self.password_hash is not None,
            "created": {"$date": self.created},
        }

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "full_name": self.full_name,
            "password_hash": self.password_hash,
            "admin": int(self.admin),
            "locked": int(self.locked),
            "allowlist": jsonc.dumps(list(self.allowlist)),
            "created": self.created,
        }


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    username: str
    key_hash: str
    allowlist: tuple[str, ...]
    created: int
    expires: int | None

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "username": self.username,
            "allowlist": list(self.allowlist),
            "created": {"$date": self.created},
            "expires_at": None if self.expires is None else {"$date": self.expires},
        }

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "username": self.username,
            "key_hash": self.key_hash,
            "allowlist": jsonc.dumps(list(self.allowlist)),
            "created": self.created,
            "expires": self.expires,
        }


def _now_ms() -> int:
    return int(time.time() * 1000)


class Directory:
    """The users and API keys the server knows."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.users: dict[int, User] = {}
        self.keys: dict[int, ApiKey] = {}

    async def load(self) -> None:
        """(Re)load every user and key from the store."""
        self.users.clear()
        self.keys.clear()
        for r in await self.store.fetch("all_users"):
            self.users[int(r["id"])] = User(
                int(r["id"]),
                r["username"],
                r["full_name"],
                r["password_hash"],
                bool(r["admin"]),
                bool(r["locked"]),
                tuple(jsonc.loads(r["allowlist"])),
                int(r["created"]),
            )
        for r in await self.store.fetch("all_api_keys"):
            self.keys[int(r["id"])] = ApiKey(
                int(r["id"]),
                r["name"],
                r["username"],
                r["key_hash"],
                tuple(jsonc.loads(r["allowlist"])),
                int(r["created"]),
                r["expires"],
            )

    def by_name(self, username: str) -> User | None:
        return next((u for u in self.users.values() if u.username == username), None)

    # -- authentication -----------------------------------------------------------------
    async def check_password(self, username: str, password: str) -> Credentials | None:
        user = self.by_name(username)
        stored = user.password_hash if user is not None and not user.locked else None
        if not await verify_password_async(password, stored) or user is None:
            return None
        return Credentials(user.username, user.admin, CredentialKind.LOGIN_PASSWORD, user.allowlist)

    def check_api_key(self, key: str, username: str | None = None) -> Credentials | None:
        m = API_KEY.match(key)
        if m is None:
            return None
        api_key = self.keys.get(int(m.group(1)))
        if api_key is None or not same_hash(api_key.key_hash, hash_key(m.group(2))):
            return None
        if api_key.expires is not None and api_key.expires <= _now_ms():
            return None
        user = self.by_name(api_key.username)
        if user is None or user.locked or (username is not None and username != user.username):
            return None
        return Credentials(
            user.username,
            user.admin,
            CredentialKind.API_KEY,
            user.allowlist,
            api_key.allowlist,
            api_key.id,
        )

    def credentials_for(self, username: str, kind: CredentialKind) -> Credentials | None:
        user = self.by_name(username)
        if user is None or user.locked:
            return None
        return Credentials(user.username, user.admin, kind, user.allowlist)

    # -- users --------------------------------------------------------------------------
    async def _next_id(self, name: str, current: dict[int, Any]) -> int:
        row = await self.store.fetch_one("get_counter", name=name)
        return max(int(row["value"]) if row else 0, max(current, default=0)) + 1

    async def create_user(self, data: dict[str, Any]) -> User:
        self._check_username(data["username"], None)
        uid = await self._next_id("users", self.users)
        password = data.get("password")
        user = User(
            uid,
            data["username"],
            data.get("full_name", ""),
            await hash_password_async(password) if password else None,
            bool(data.get("admin", False)),
            bool(data.get("locked", False)),
            tuple(data.get("allowlist", [])),
            _now_ms(),
        )
        await self.store.write(
            [Op("insert_user", user.row()), Op("raise_counter", {"name": "users", "value": uid})]
        )
        self.users[uid] = user
        log.info("user %d (%s) created", uid, user.username)
        return user

    async def update_user(self, uid: int, data: dict[str, Any]) -> User:
        user = self._user(uid)
        if "username" in data:
            self._check_username(data["username"], uid)
        changes: dict[str, Any] = {
            k: data[k] for k in ("username", "full_name", "admin", "locked") if k in data
        }
        if "allowlist" in data:
            changes["allowlist"] = tuple(data["allowlist"])
        if data.get("password"):
            changes["password_hash"] = await hash_password_async(data["password"])
        new = replace(user, **changes)
        await self.store.write([Op("update_user", new.row())])
        self.users[uid] = new
        log.info("user %d (%s) updated", uid, new.username)
        return new

    async def delete_user(self, uid: int) -> None:
        user = self._user(uid)
        await self.store.write(
            [
                Op("delete_user", {"id": uid}),
                Op("delete_user_api_keys", {"username": user.username}),
            ]
        )
        del self.users[uid]
        for key_id in [k.id for k in self.keys.values() if k.username == user.username]:
            del self.keys[key_id]
        log.info("user %d (%s) deleted", uid, user.username)

    def _user(self, uid: int) -> User:
        user = self.users.get(uid)
        if user is None:
            raise NotFound(f"User {uid} does not exist")
        return user

    def _check_username(self, username: str, uid: int | None) -> None:
        if not USERNAME.match(username):
            raise ValidationErrors([("username", "Invalid user name", errno.EINVAL)])
        other = self.by_name(username)
        if other is not None and other.id != uid:
            raise ValidationErrors([("username", "User name already in use", errno.EEXIST)])

    # -- API keys -----------------------------------------------------------------------
    async def create_key(self, data: dict[str, Any]) -> tuple[ApiKey, str]:
        """Returns the key and its secret form ``<id>-<secret>``, shown this once only."""
        username = data.get("username", "root")
        if self.by_name(username) is None:
            raise ValidationErrors([("username", "No such user", errno.ENOENT)])
        kid = await self._next_id("api_keys", self.keys)
        secret = new_secret(48).replace("-", "A").replace("_", "B")
        key = ApiKey(
            kid,
            data["name"],
            username,
            hash_key(secret),
            tuple(data.get("allowlist", ["*"])),
            _now_ms(),
            data.get("expires"),
        )
        await self.store.write(
            [
                Op("insert_api_key", key.row()),
                Op("raise_counter", {"name": "api_keys", "value": kid}),
            ]
        )
        self.keys[kid] = key
        log.info("api key %d (%s) created for %s", kid, key.name, username)
        return key, f"{kid}-{secret}"

    async def update_key(self, kid: int, data: dict[str, Any]) -> ApiKey:
        key = self._key(kid)
        changes: dict[str, Any] = {k: data[k] for k in ("name", "expires") if k in data}
        if "allowlist" in data:
            changes["allowlist"] = tuple(data["allowlist"])
        new = replace(key, **changes)
        await self.store.write([Op("update_api_key", new.row())])
        self.keys[kid] = new
        return new

    async def delete_key(self, kid: int) -> None:
        self._key(kid)
        await self.store.write([Op("delete_api_key", {"id": kid})])
        del self.keys[kid]
        log.info("api key %d deleted", kid)

    def _key(self, kid: int) -> ApiKey:
        key = self.keys.get(kid)
        if key is None:
            raise NotFound(f"API key {kid} does not exist")
        return key
