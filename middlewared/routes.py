"""HTTP routes as data: what a plugin serves beside the API, in types that know no web
framework (the http layer adapts them to aiohttp)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from middlewared.auth.credentials import Credentials


@dataclass(frozen=True)
class HttpRequest:
    """A request whose body has been read (at most the route's ``max_body`` bytes)."""

    method: str
    path: str
    # The route's placeholders: ``/hooks/{id}`` gives ``{"id": ...}``.
    match: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    remote: str
    # Set when the route asked for a logged-in caller.
    credentials: Credentials | None = None


@dataclass(frozen=True)
class HttpResponse:
    """``json`` is encoded as the body when given; else ``file`` is sent (Range and HEAD
    supported, streamed from disk); else ``body`` is sent as is."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    file: Path | None = None


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True)
class Route:
    """One route. ``handler`` answers requests; or ``static_dir`` serves the files under it
    for every path below ``path`` (GET and HEAD), never outside it."""

    method: str
    path: str
    handler: Handler | None = None
    static_dir: Path | None = None
    # The caller must authenticate (Basic, Bearer API key, Token): 401 otherwise.
    authenticated: bool = False
    max_body: int = 1024 * 1024

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.static_dir is None):
            raise ValueError(f"route {self.path}: give a handler or a static_dir, not both")
        if not self.path.startswith("/"):
            raise ValueError(f"route {self.path}: paths start with '/'")
