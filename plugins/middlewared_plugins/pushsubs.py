"""push.*'s state: the subscriptions (a 0600 JSON file in the data dir), and which endpoints
the server may post to: ``https://`` to public addresses only, unless the settings allow
``http://`` and loopback endpoints (a local push service in tests)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ThreadedResolver
from aiohttp.abc import ResolveResult

# Subscriptions one user may hold (a browser or device each).
MAX_PER_OWNER = 100


@dataclass(frozen=True)
class Subscription:
    client_id: str
    owner_id: int | None
    username: str
    endpoint: str
    p256dh: str
    auth: str
    created: int

    def record(self) -> dict[str, Any]:
        """As callers see it: no keys."""
        return {
            "client_id": self.client_id,
            "username": self.username,
            "endpoint": self.endpoint,
            "created": {"$date": self.created},
        }


def _allowed_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, insecure: bool) -> bool:
    return ip.is_global or (insecure and ip.is_loopback)


def endpoint_refusal(endpoint: str, insecure: bool) -> str | None:
    """Why the server will not post to ``endpoint``, or None."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return "endpoint is not a URL"
    if parts.scheme != "https" and not (insecure and parts.scheme == "http"):
        return "endpoint must be an https:// URL"
    if not host or "@" in parts.netloc:
        return "endpoint must name a host and no user"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            return "endpoint's host is not public"
        return None
    if not _allowed_ip(ip, insecure):
        return "endpoint's address is not public"
    return None


class PublicResolver(ThreadedResolver):
    """Names resolve to public addresses only (loopback too when ``insecure``): a name that
    points inside the network is refused when the connection is made, not only when the
    subscription was checked (DNS may answer differently by then)."""

    def __init__(self, insecure: bool) -> None:
        super().__init__()
        self.insecure = insecure

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await super().resolve(host, port, family)
        kept = [r for r in found if _allowed_ip(ipaddress.ip_address(r["host"]), self.insecure)]
        if not kept:
            raise OSError(f"{host} resolves to no public address")
        return kept


class SubscriptionFile:
    """The subscriptions, in memory and in ``path`` (rewritten whole on each change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.subs: dict[str, Subscription] = {}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        try:
            rows = json.loads(self.path.read_text())
        except FileNotFoundError:
            rows = []
        self.subs = {r["client_id"]: Subscription(**r) for r in rows}

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    async def _save(self, subs: dict[str, Subscription]) -> None:
        await asyncio.to_thread(self._write, [asdict(s) for s in subs.values()])
        self.subs = subs

    async def add(
        self, owner_id: int | None, username: str, endpoint: str, p256dh: str, auth: str
    ) -> Subscription | None:
        """The new (or renewed, same owner and endpoint) subscription; None past the bound."""
        async with self._lock:
            mine = [s for s in self.subs.values() if s.owner_id == owner_id]
            same = next((s for s in mine if s.endpoint == endpoint), None)
            if same is None and len(mine) >= MAX_PER_OWNER:
                return None
            sub = Subscription(
                same.client_id if same else uuid.uuid4().hex,
                owner_id,
                username,
                endpoint,
                p256dh,
                auth,
                same.created if same else int(time.time() * 1000),
            )
            await self._save({**self.subs, sub.client_id: sub})
            return sub

    async def remove(self, client_id: str) -> bool:
        async with self._lock:
            if client_id not in self.subs:
                return False
            await self._save({k: v for k, v in self.subs.items() if k != client_id})
            return True
