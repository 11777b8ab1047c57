"""Who is calling: an identity held by ids, and the credentials it stands for right now."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any


class CredentialKind(StrEnum):
    LOGIN_PASSWORD = "LOGIN_PASSWORD"
    API_KEY = "API_KEY"
    TOKEN = "TOKEN"
    # A job a trigger started: its owner's identity, as it stands when the trigger fires.
    TRIGGER = "TRIGGER"
    INTERNAL = "INTERNAL"
    # A peer of the local UNIX socket, known by its uid (TrueNAS's UNIX_SOCKET).
    UNIX_SOCKET = "UNIX_SOCKET"


@lru_cache(maxsize=4096)
def _matches(patterns: tuple[str, ...], method: str) -> bool:
    return any(fnmatch.fnmatchcase(method, p) for p in patterns)


UNRESTRICTED = ("*",)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a session, a token or a job holds: ids, never a copy of rights.

    It is turned into :class:`Credentials` by the directory at each use, so that locking,
    demoting or deleting a user, changing an allow-list or deleting a key takes effect on
    the next call, event and HTTP request. ``not_after`` (seconds since the epoch) is the
    latest time a token minted from this identity may live to.
    """

    kind: CredentialKind
    user_id: int | None
    api_key_id: int | None = None
    not_after: float | None = None
    # An open grant narrows the rights to its allow-list; closed, the identity is revoked
    # (a command run's token: ``auth/grants.py``).
    grant: str | None = None


INTERNAL_IDENTITY = Identity(CredentialKind.INTERNAL, None)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An identity as it stands now. Admins may call anything; others only their allow-list;
    an API key's own allow-list narrows either."""

    username: str
    admin: bool
    kind: CredentialKind
    # Method patterns (fnmatch: ``archive.*``).
    allowlist: tuple[str, ...] = ()
    key_allowlist: tuple[str, ...] | None = None
    api_key_id: int | None = None
    user_id: int | None = None
    identity: Identity | None = None
    # A grant's allow-list (a command run's token), narrowing the rest.
    scope: tuple[str, ...] | None = None

    def allows(self, method: str) -> bool:
        if self.key_allowlist is not None and not _matches(self.key_allowlist, method):
            return False
        if self.scope is not None and not _matches(self.scope, method):
            return False
        return self.admin or _matches(self.allowlist, method)

    # An administrator whose rights neither a key nor a grant narrows: sees every user's
    # jobs and events. Derived once (every event a session may see asks it).
    full_admin: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "full_admin", self.admin and not self.restricted_key)

    @property
    def restricted_key(self) -> bool:
        """Logged in with an API key (or a grant) whose allow-list narrows its user's
        rights."""
        return any(p is not None and p != UNRESTRICTED for p in (self.key_allowlist, self.scope))

    def owns(self, owner_id: int | None) -> bool:
        return owner_id is not None and owner_id == self.user_id

    def record(self) -> dict[str, Any]:
        """As shown in a job's ``credentials`` and in ``auth.me``; never a secret."""
        data: dict[str, Any] = {"username": self.username}
        if self.api_key_id is not None:
            data["api_key"] = {"id": self.api_key_id}
        return {"type": self.kind.value, "data": data}


INTERNAL = Credentials(
    username="root", admin=True, kind=CredentialKind.INTERNAL, identity=INTERNAL_IDENTITY
)
