"""What a method is given: who calls, from which session, and a handle on the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from middlewared.auth.credentials import INTERNAL, Credentials, Identity
from middlewared.config import ServerConfig
from middlewared.errors import PermissionDenied

if TYPE_CHECKING:
    from middlewared.events.bus import Event
    from middlewared.registry import MethodSpec


class ServerApi(Protocol):
    """The part of the server a plugin may use: call other methods, read the config, its
    settings, publish on its collections."""

    config: ServerConfig

    async def call(self, method: str, *params: Any, credentials: Credentials) -> Any: ...

    async def backup(self, dest: Path) -> None: ...

    async def restore(self, src: Path) -> int: ...

    def get_settings(self, namespace: str) -> dict[str, Any]: ...

    async def set_settings(self, namespace: str, values: dict[str, Any]) -> dict[str, Any]: ...

    def publish(self, event: Event) -> None: ...


class SessionApi(Protocol):
    """The caller's connection, for the core methods that change it."""

    remote: str
    credentials: Credentials | None
    # Over TLS (SCRAM may bind to the certificate); the SCRAM exchange under way, if any.
    tls: bool
    scram: Any
    # A password login waiting for its two-factor code, if any.
    otp: Any

    def login(self, identity: Identity) -> Credentials | None: ...

    def subscribe(self, name: str) -> str: ...

    def unsubscribe(self, sub_id: str) -> None: ...

    def set_options(self, options: dict[str, Any]) -> dict[str, Any]: ...

    def logout(self) -> None: ...


@dataclass(slots=True)
class CallContext:
    app: ServerApi
    credentials: Credentials | None
    session: SessionApi | None = None
    message_id: Any = None
    spec: MethodSpec | None = None

    @property
    def user(self) -> Credentials:
        """The caller's credentials; methods that are not public always have them."""
        assert self.credentials is not None, "method called without credentials"
        return self.credentials

    @property
    def config(self) -> ServerConfig:
        return self.app.config

    async def call(self, method: str, *params: Any) -> Any:
        """Call another method as the caller: the caller's allow-list applies to it."""
        return await self.app.call(method, *params, credentials=self.user)

    async def call_as_server(self, method: str, *params: Any) -> Any:
        """Call another method as the server itself: for built-in plugins only."""
        if self.spec is None or not self.spec.trusted:
            raise PermissionDenied("Only built-in plugins may call methods as the server")
        return await self.app.call(method, *params, credentials=INTERNAL)

    def settings(self) -> dict[str, Any]:
        """This plugin's settings (its namespace's), defaults filled in."""
        assert self.spec is not None
        return self.app.get_settings(self.spec.namespace)
