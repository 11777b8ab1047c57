"""Short-lived authentication tokens (auth.generate_token, download URLs), kept in memory.

A token holds an identity, never credentials: whoever uses it gets the rights its user and
key have at that moment, and nothing once either is gone. A token never outlives the
identity that minted it (a token minted from a token or an expiring key ends with it).
"""

from __future__ import annotations

import dataclasses
import errno
import time
from collections.abc import Callable
from dataclasses import dataclass

from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.auth.passwords import hash_key, new_secret
from middlewared.errors import CallError

Clock = Callable[[], float]


@dataclass
class Token:
    identity: Identity
    expires: float  # seconds since the epoch
    single_use: bool
    # A token bound to one job's download only serves that.
    job_id: int | None = None
    purpose: str = "login"


class TokenStore:
    """Tokens by the hash of their secret, so a memory dump shows no usable token."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._tokens: dict[str, Token] = {}
        self.clock = clock

    def __len__(self) -> int:
        return len(self._tokens)

    def issue(
        self,
        credentials: Credentials,
        ttl: float,
        single_use: bool,
        job_id: int | None = None,
        purpose: str = "login",
    ) -> str:
        """A new token for ``credentials``' identity, living ``ttl`` seconds at most."""
        identity = credentials.identity
        if identity is None:
            raise CallError("These credentials cannot mint a token", errno.EACCES)
        now = self.clock()
        self._purge(now)
        expires = now + ttl
        if identity.not_after is not None:
            expires = min(expires, identity.not_after)
        if expires <= now:
            raise CallError("The credentials this token would come from have expired", errno.EACCES)
        secret = new_secret(36)
        self._tokens[hash_key(secret)] = Token(identity, expires, single_use, job_id, purpose)
        return secret

    def peek(self, secret: str) -> Token | None:
        token = self._tokens.get(hash_key(secret))
        if token is None or token.expires <= self.clock():
            return None
        return token

    def use(self, secret: str, purpose: str = "login", job_id: int | None = None) -> Token | None:
        """The token if valid for this purpose (consumed when single-use), else None."""
        key = hash_key(secret)
        token = self._tokens.get(key)
        if token is None:
            return None
        if token.expires <= self.clock():
            del self._tokens[key]
            return None
        if token.purpose != purpose or token.job_id != job_id:
            return None
        if token.single_use:
            del self._tokens[key]
        return token

    def revoke(self, secret: str) -> None:
        """Drop a token before its time (the thing it gave access to is gone)."""
        self._tokens.pop(hash_key(secret), None)

    def login(self, secret: str) -> Identity | None:
        """The identity a login token stands for (consumed when single-use): a session
        logged in with it mints no token that outlives it."""
        token = self.use(secret)
        if token is None:
            return None
        return dataclasses.replace(
            token.identity, kind=CredentialKind.TOKEN, not_after=token.expires
        )

    def revoke_unresolvable(self, resolve: Callable[[Identity], Credentials | None]) -> int:
        """Drop the tokens whose user or key is gone (tokens die with them)."""
        dead = [k for k, t in self._tokens.items() if resolve(t.identity) is None]
        for key in dead:
            del self._tokens[key]
        return len(dead)

    def _purge(self, now: float) -> None:
        for key in [k for k, t in self._tokens.items() if t.expires <= now]:
            del self._tokens[key]
