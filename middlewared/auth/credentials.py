"""Who is calling: the credentials a session or a job carries, and their allow-list."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any


class CredentialKind(StrEnum):
    LOGIN_PASSWORD = "LOGIN_PASSWORD"
    API_KEY = "API_KEY"
    TOKEN = "TOKEN"
    INTERNAL = "INTERNAL"


@lru_cache(maxsize=4096)
def _matches(patterns: tuple[str, ...], method: str) -> bool:
    return any(fnmatch.fnmatchcase(method, p) for p in patterns)


@dataclass(frozen=True)
class Credentials:
    """An authenticated identity. Admins may call anything; others only their allow-list."""

    username: str
    admin: bool
    kind: CredentialKind
    # Method patterns (fnmatch: ``archive.*``); for an API key, both its own and its user's apply.
    allowlist: tuple[str, ...] = ()
    key_allowlist: tuple[str, ...] | None = None
    api_key_id: int | None = None

    def allows(self, method: str) -> bool:
        if self.key_allowlist is not None and not _matches(self.key_allowlist, method):
            return False
        return self.admin or _matches(self.allowlist, method)

    def may_read(self, owner: str | None) -> bool:
        """Whether this identity may see an object owned by ``owner`` (a job, an event)."""
        return self.admin or owner is None or owner == self.username

    def record(self) -> dict[str, Any]:
        """As shown in a job's ``credentials`` and in ``auth.me``; never a secret."""
        data: dict[str, Any] = {"username": self.username}
        if self.api_key_id is not None:
            data["api_key"] = {"id": self.api_key_id}
        return {"type": self.kind.value, "data": data}


INTERNAL = Credentials(username="root", admin=True, kind=CredentialKind.INTERNAL)
