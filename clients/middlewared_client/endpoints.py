"""Where a client connects: ``ws://`` and ``wss://`` URLs, or TrueNAS's local socket URL
``ws+unix:///var/run/middleware/middlewared.sock`` (the socket's path; the WebSocket request
goes to ``/api/current`` on it). TLS verifies against the system's CAs, or the ``cafile``
given (``MIDDLEWARED_CAFILE``: what a server with a self-signed certificate gives its
commands)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

UNIX_SCHEME = "ws+unix"
# TrueNAS's path, where its midclt connects when given no URL.
TRUENAS_SOCKET = "/var/run/middleware/middlewared.sock"
WS_PATH = "/api/current"


@dataclass(frozen=True)
class Endpoint:
    url: str
    # The socket's path for ws+unix:// URLs.
    unix_path: str | None = None

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme.lower() != UNIX_SCHEME:
            return cls(url)
        path = parts.netloc + parts.path if parts.netloc else parts.path
        if not path:
            raise ValueError(f"{url}: no socket path")
        return cls(url, path)

    @property
    def ws_url(self) -> str:
        """The URL of the WebSocket request itself."""
        return f"ws://localhost{WS_PATH}" if self.unix_path is not None else self.url

    @property
    def secure(self) -> bool:
        return urlsplit(self.url).scheme.lower() == "wss"


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """Verification against ``cafile`` when given, else the system's CAs."""
    return ssl.create_default_context(cafile=cafile)
