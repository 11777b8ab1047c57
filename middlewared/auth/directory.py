"""Users and API keys: held in memory for fast checks, written through to the store, and
the one place an identity is turned into the credentials it stands for now."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from middlewared import jsonc
from middlewared.auth import scram
from middlewared.auth.credentials import (
    INTERNAL,
    CredentialKind,
    Credentials,
    Identity,
)
from middlewared.auth.grants import Grants
from middlewared.auth.passwords import HashPool, hash_key, new_secret, same_hash
from middlewared.auth.scram import ScramSecrets
from middlewared.auth.twofactor import TwoFactor
from middlewared.errors import CallError, NotFound, ValidationErrors
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
    twofactor: TwoFactor | None = None
    # Where mail.send's noreply mode writes to them; "" when none.
    email: str = ""

    @property
    def usable_admin(self) -> bool:
        """An administrator who can log in with a password."""
        return self.admin and not self.locked and self.password_hash is not None

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "full_name": self.full_name,
            "admin": self.admin,
            "locked": self.locked,
            "allowlist": list(self.allowlist),
            "password_set": self.password_hash is not None,
            "twofactor_auth_configured": self.twofactor is not None,
            "email": self.email,
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
            "twofactor": None if self.twofactor is None else jsonc.dumps(self.twofactor.record()),
            "email": self.email,
        }


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    user_id: int | None
    key_hash: str
    allowlist: tuple[str, ...]
    created: int
    expires: int | None
    # SCRAM-SHA-512 secrets; None for a key made before them, until its next plain login.
    scram: ScramSecrets | None = None

    def record(self, username: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "user_id": self.user_id,
            "username": username,
            "allowlist": list(self.allowlist),
            "created": {"$date": self.created},
            "expires_at": None if self.expires is None else {"$date": self.expires},
        }

    def row(self, username: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "username": username,
            "user_id": self.user_id,
            "key_hash": self.key_hash,
            "allowlist": jsonc.dumps(list(self.allowlist)),
            "created": self.created,
            "expires": self.expires,
            "scram": None if self.scram is None else jsonc.dumps(self.scram.record()),
        }


def _now_ms() -> int:
    return int(time.time() * 1000)


Changed = Callable[[], None]


class Directory:
    """The users and API keys the server knows.

    Every change (and every reload) calls the ``on_change`` listeners, which re-resolve the
    identities they hold: that is how a revocation reaches open sessions, tokens and
    subscriptions before their next call or event.
    """

    def __init__(self, store: Store, hasher: HashPool | None = None) -> None:
        self.store = store
        self.hasher = hasher or HashPool()
        self.users: dict[int, User] = {}
        self.keys: dict[int, ApiKey] = {}
        self.grants = Grants()
        self._by_name: dict[str, User] = {}
        self._listeners: list[Changed] = []

    def on_change(self, listener: Changed) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._by_name = {u.username: u for u in self.users.values()}
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("a directory change listener failed")

    async def load(self) -> None:
        """(Re)load every user and key from the store. Both are read first and swapped in
        at once: a call resolved while the reads wait (a restore reloads this) must find
        the users as they were, not none (it was told its credentials were revoked)."""
        user_rows = await self.store.fetch("all_users")
        key_rows = await self.store.fetch("all_api_keys")
        self.users.clear()
        self.keys.clear()
        for r in user_rows:
            self.users[int(r["id"])] = User(
                int(r["id"]),
                r["username"],
                r["full_name"],
                r["password_hash"],
                bool(r["admin"]),
                bool(r["locked"]),
                tuple(jsonc.loads(r["allowlist"])),
                int(r["created"]),
                None
                if r["twofactor"] is None
                else TwoFactor.from_record(jsonc.loads(r["twofactor"])),
                r["email"] or "",
            )
        for r in key_rows:
            self.keys[int(r["id"])] = ApiKey(
                int(r["id"]),
                r["name"],
                None if r["user_id"] is None else int(r["user_id"]),
                r["key_hash"],
                tuple(jsonc.loads(r["allowlist"])),
                int(r["created"]),
                r["expires"],
                None if r["scram"] is None else ScramSecrets.from_record(jsonc.loads(r["scram"])),
            )
        self._changed()

    def by_name(self, username: str) -> User | None:
        return self._by_name.get(username)

    # -- identities -------------------------------------------------------------------
    def resolve(self, identity: Identity) -> Credentials | None:
        """The credentials ``identity`` stands for now; None when it was revoked (its user
        deleted or locked, its key deleted or expired, its grant closed)."""
        scope = None
        if identity.grant is not None:
            scope = self.grants.scope(identity.grant)
            if scope is None:
                return None
        if identity.kind is CredentialKind.INTERNAL:
            return INTERNAL if scope is None else replace(INTERNAL, scope=scope)
        user = self.users.get(identity.user_id) if identity.user_id is not None else None
        if user is None or user.locked:
            return None
        key_allowlist = None
        if identity.api_key_id is not None:
            key = self.keys.get(identity.api_key_id)
            if key is None or key.user_id != user.id or _expired(key):
                return None
            key_allowlist = key.allowlist
        return Credentials(
            user.username,
            user.admin,
            identity.kind,
            user.allowlist,
            key_allowlist,
            identity.api_key_id,
            user.id,
            identity,
            scope,
        )

    def resolve_name(self, username: str, kind: CredentialKind) -> Credentials | None:
        """The credentials user ``username`` has now, as ``kind``; None when there is no
        such user or it cannot log in."""
        user = self.by_name(username)
        return None if user is None else self.resolve(Identity(kind, user.id))

    def username_of(self, user_id: int | None) -> str | None:
        user = self.users.get(user_id) if user_id is not None else None
        return None if user is None else user.username

    # -- authentication -----------------------------------------------------------------
    async def check_password(self, username: str, password: str) -> Identity | None:
        user = self.by_name(username)
        stored = user.password_hash if user is not None and not user.locked else None
        if not await self.hasher.verify(password, stored) or user is None:
            return None
        # The user may have been changed while the hash was being checked.
        current = self.users.get(user.id)
        if current is None or current.locked or current.password_hash != stored:
            return None
        return Identity(CredentialKind.LOGIN_PASSWORD, user.id)

    def check_api_key(self, key: str, username: str | None = None) -> Identity | None:
        m = API_KEY.match(key)
        if m is None:
            return None
        api_key = self.keys.get(int(m.group(1)))
        if api_key is None or not same_hash(api_key.key_hash, hash_key(m.group(2))):
            return None
        if _expired(api_key):
            return None
        user = self.users.get(api_key.user_id) if api_key.user_id is not None else None
        if user is None or user.locked or (username is not None and username != user.username):
            return None
        return _key_identity(api_key, user)

    def scram_key(self, username: str, kid: int) -> tuple[ScramSecrets, Identity] | None:
        """The SCRAM secrets of key ``kid`` of user ``username`` and who it logs in as; None
        when there is no such usable key (or it has no SCRAM secrets yet)."""
        api_key = self.keys.get(kid)
        if api_key is None or api_key.scram is None or _expired(api_key):
            return None
        user = self.users.get(api_key.user_id) if api_key.user_id is not None else None
        if user is None or user.locked or user.username != username:
            return None
        return api_key.scram, _key_identity(api_key, user)

    async def add_scram(self, key: str) -> None:
        """Give a key made before SCRAM its secrets, from the key itself (a plain login that
        just succeeded: the only moment the server sees it)."""
        m = API_KEY.match(key)
        api_key = self.keys.get(int(m.group(1))) if m is not None else None
        if m is None or api_key is None or api_key.scram is not None:
            return
        keys, _ = await asyncio.to_thread(scram.derive, m.group(2))
        current = self.keys.get(api_key.id)
        if current is None or current.key_hash != api_key.key_hash or current.scram is not None:
            return
        updated = replace(current, scram=keys)
        await self.store.write([Op("set_api_key_scram", {"id": updated.id, **updated.row("")})])
        self.keys[updated.id] = updated
        log.info("api key %d: SCRAM secrets added at its plain login", updated.id)

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
            await self.hasher.hash(password) if password else None,
            bool(data.get("admin", False)),
            bool(data.get("locked", False)),
            tuple(data.get("allowlist", [])),
            _now_ms(),
            email=data.get("email", ""),
        )
        self._check_username(user.username, None)  # another may have taken it meanwhile
        await self.store.write(
            [Op("insert_user", user.row()), Op("raise_counter", {"name": "users", "value": uid})]
        )
        self.users[uid] = user
        self._changed()
        log.info("user %d (%s) created", uid, user.username)
        return user

    async def update_user(self, uid: int, data: dict[str, Any]) -> User:
        user = self._user(uid)
        if "username" in data:
            self._check_username(data["username"], uid)
        changes: dict[str, Any] = {
            k: data[k] for k in ("username", "full_name", "admin", "locked", "email") if k in data
        }
        if "allowlist" in data:
            changes["allowlist"] = tuple(data["allowlist"])
        if data.get("password"):
            changes["password_hash"] = await self.hasher.hash(data["password"])
        user = self._user(uid)  # as it is now, after the hash
        new = replace(user, **changes)
        self._keep_an_admin(self.users, {**self.users, uid: new})
        await self.store.write([Op("update_user", new.row())])
        self.users[uid] = new
        self._changed()
        log.info("user %d (%s) updated", uid, new.username)
        return new

    async def set_twofactor(self, uid: int, twofactor: TwoFactor | None) -> User:
        """Give user ``uid`` a new two-factor secret, or take it away (None)."""
        new = replace(self._user(uid), twofactor=twofactor)
        await self.store.write([Op("update_user", new.row())])
        self.users[uid] = new
        self._changed()
        log.info("user %d: two-factor secret %s", uid, "renewed" if twofactor else "removed")
        return new

    async def use_code(self, uid: int, code: str, window: int) -> bool:
        """Whether ``code`` is user ``uid``'s current two-factor code; a code that passes is
        used up (stored before the answer), as are those before it."""
        user = self.users.get(uid)
        if user is None or user.twofactor is None:
            return False
        checked = user.twofactor.check(code, window)
        if checked is None:
            return False
        current = self.users.get(uid)
        if current is None or current.twofactor != user.twofactor:
            return False  # changed meanwhile (another login used a code): try again
        new = replace(current, twofactor=checked)
        self.users[uid] = new
        await self.store.write([Op("update_user", new.row())])
        return True

    async def delete_user(self, uid: int) -> None:
        user = self._user(uid)
        self._keep_an_admin(self.users, {k: v for k, v in self.users.items() if k != uid})
        await self.store.write(
            [Op("delete_user", {"id": uid}), Op("delete_user_api_keys", {"user_id": uid})]
        )
        del self.users[uid]
        for key_id in [k.id for k in self.keys.values() if k.user_id == uid]:
            del self.keys[key_id]
        self._changed()
        log.info("user %d (%s) deleted", uid, user.username)

    @staticmethod
    def _keep_an_admin(before: dict[int, User], after: dict[int, User]) -> None:
        """Refuse a change that would leave no administrator able to log in (where there
        was one: other changes stay possible on a store that has none)."""
        had = any(u.usable_admin for u in before.values())
        if had and not any(u.usable_admin for u in after.values()):
            raise CallError(
                "Refused: it would leave no administrator who can log in (the last "
                "administrator cannot be deleted, locked, demoted or left without a password)",
                errno.EPERM,
            )

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
    async def create_key(self, data: dict[str, Any]) -> tuple[ApiKey, str, bytes]:
        """Returns the key, its secret form ``<id>-<secret>`` and its SCRAM client key, shown
        this once only."""
        username = data.get("username", "root")
        user = self.by_name(username)
        if user is None:
            raise ValidationErrors([("username", "No such user", errno.ENOENT)])
        kid = await self._next_id("api_keys", self.keys)
        secret = new_secret(48).replace("-", "A").replace("_", "B")
        keys, client_key = await asyncio.to_thread(scram.derive, secret)
        key = ApiKey(
            kid,
            data["name"],
            user.id,
            hash_key(secret),
            tuple(data.get("allowlist", ["*"])),
            _now_ms(),
            data.get("expires"),
            keys,
        )

        await self.store.write(
            [
                Op("insert_api_key", key.row(user.username)),
                Op("raise_counter", {"name": "api_keys", "value": kid}),
            ]
        )
        self.keys[kid] = key
        self._changed()
        log.info("api key %d (%s) created for user %d", kid, key.name, user.id)
        return key, f"{kid}-{secret}", client_key

    async def update_key(self, kid: int, data: dict[str, Any]) -> ApiKey:
        key = self._key(kid)
        changes: dict[str, Any] = {k: data[k] for k in ("name", "expires") if k in data}
        if "allowlist" in data:
            changes["allowlist"] = tuple(data["allowlist"])
        new = replace(key, **changes)
        await self.store.write([Op("update_api_key", new.row(""))])
        self.keys[kid] = new
        self._changed()
        log.info("api key %d updated", kid)
        return new

    async def delete_key(self, kid: int) -> None:
        self._key(kid)
        await self.store.write([Op("delete_api_key", {"id": kid})])
        del self.keys[kid]
        self._changed()
        log.info("api key %d deleted", kid)

    def _key(self, kid: int) -> ApiKey:
        key = self.keys.get(kid)
        if key is None:
            raise NotFound(f"API key {kid} does not exist")
        return key

    def key_record(self, key: ApiKey) -> dict[str, Any]:
        return key.record(self.username_of(key.user_id))


def _key_identity(api_key: ApiKey, user: User) -> Identity:
    not_after = None if api_key.expires is None else api_key.expires / 1000
    return Identity(CredentialKind.API_KEY, user.id, api_key.id, not_after)


def _expired(key: ApiKey) -> bool:
    return key.expires is not None and key.expires <= _now_ms()
