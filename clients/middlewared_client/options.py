"""Typed options of a client: credentials, reconnection policy, limits."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_URL = "ws://127.0.0.1:6000/api/current"
DEFAULT_MAX_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """How to log in: a user and password, an API key, or a token (secrets kept out of repr)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    # The user's two-factor code, when the server asks for one.
    otp_token: str | None = field(default=None, repr=False)
    # Asked for the code when the server wants one and none was given (midclt: a prompt).
    otp_prompt: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.password, self.api_key, self.token))
        if given > 1:
            raise ValueError("give one of password, api_key or token")
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")

    @property
    def empty(self) -> bool:
        return self.password is None and self.api_key is None and self.token is None

    def login_call(self) -> tuple[str, list[Any]]:
        """The ``auth.*`` method and params that log in with these credentials."""
        if self.api_key is not None:
            return "auth.login_with_api_key", [self.api_key]
        if self.token is not None:
            return "auth.login_with_token", [self.token]
        if self.password is not None:
            otp = [self.otp_token] if self.otp_token is not None else []
            return "auth.login", [self.username, self.password, *otp]
        raise ValueError("no credentials")


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with jitter between reconnection attempts."""

    initial_delay: float = 0.1
    max_delay: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1
    max_attempts: int | None = None  # None: keep trying until the client is closed

    def delays(self) -> Iterator[float]:
        delay = self.initial_delay
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            attempt += 1
            yield delay * (1 + random.uniform(-self.jitter, self.jitter))
            delay = min(delay * self.factor, self.max_delay)


@dataclass(frozen=True)
class ClientOptions:
    """Everything about a connection except where it goes and who logs in."""

    reconnect: bool = True
    reconnect_policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    call_timeout: float | None = None
    connect_timeout: float = 10.0
    max_size: int | None = DEFAULT_MAX_SIZE
    ping_interval: float | None = 20.0
    # wss:// and https:// verify against this CA file (a server's self-signed certificate)
    # instead of the system's CAs.
    cafile: str | None = None

    def __post_init__(self) -> None:
        if self.call_timeout is not None and self.call_timeout <= 0:
            raise ValueError("call_timeout must be positive")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
