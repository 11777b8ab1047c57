"""Short-lived authentication tokens (auth.generate_token, download URLs), kept in memory."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from middlewared.auth.credentials import CredentialKind, Credentials
from middlewared.auth.passwords import hash_key, new_secret


@dataclass
class Token:
    credentials: Credentials
    expires: float
    single_use: bool
    # A token bound to one job's download or upload only serves that.
    job_id: int | None = None
    purpose: str = "login"


class TokenStore:
    """Tokens by the hash of their secret, so a memory dump shows no usable token."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}

    def issue(
        self,
        credentials: Credentials,
        ttl: float,
        single_use: bool,
        job_id: int | None = None,
        purpose: str = "login",
    ) -> str:
        self._purge()
        secret = new_secret(36)
        self._tokens[hash_key(secret)] = Token(
            credentials, time.monotonic() + ttl, single_use, job_id, purpose
        )
        return secret

    def peek(self, secret: str) -> Token | None:
        token = self._tokens.get(hash_key(secret))
        if token is None or token.expires <= time.monotonic():
            return None
        return token

    def use(self, secret: str, purpose: str = "login", job_id: int | None = None) -> Token | None:
        """The token if valid for this purpose (consumed when single-use), else None."""
        key = hash_key(secret)
        token = self._tokens.get(key)
        if token is None:
            return None
        if token.expires <= time.monotonic():
            del self._tokens[key]
            return None
        if token.purpose != purpose or token.job_id != job_id:
            return None
        if token.single_use:
            del self._tokens[key]
        return token

    def login(self, secret: str) -> Credentials | None:
        """The credentials a login token stands for (consumed when single-use)."""
        token = self.use(secret)
        if token is None:
            return None
        return dataclasses.replace(token.credentials, kind=CredentialKind.TOKEN)

    def _purge(self) -> None:
        now = time.monotonic()
        for key in [k for k, t in self._tokens.items() if t.expires <= now]:
            del self._tokens[key]
