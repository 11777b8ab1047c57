"""What a method is given: who calls, from which session, and a handle on the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from middlewared.auth.credentials import Credentials
from middlewared.config import ServerConfig

if TYPE_CHECKING:
    from middlewared.jobs.job import Job


class ServerApi(Protocol):
    """The part of the server a plugin may use: call other methods, read the config."""

    config: ServerConfig

    async def call(
        self,
        method: str,
        *params: Any,
        credentials: Credentials | None = None,
        job: Job | None = None,
    ) -> Any: ...

    async def backup(self, dest: Path) -> None: ...

    async def restore(self, src: Path) -> int: ...


class SessionApi(Protocol):
    """The caller's connection, for the core methods that change it."""

    remote: str
    credentials: Credentials | None

    def login(self, credentials: Credentials) -> None: ...

    def logout(self) -> None: ...

    def subscribe(self, name: str) -> str: ...

    def unsubscribe(self, sub_id: str) -> None: ...

    def set_options(self, options: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(slots=True)
class CallContext:
    app: ServerApi
    credentials: Credentials | None
    session: SessionApi | None = None
    message_id: Any = None

    @property
    def user(self) -> Credentials:
        """The caller's credentials; methods that are not public always have them."""
        assert self.credentials is not None, "method called without credentials"
        return self.credentials

    @property
    def config(self) -> ServerConfig:
        return self.app.config
