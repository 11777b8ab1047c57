"""A local Web Push service for the tests (aiohttp on 127.0.0.1), checking each message as a
real one would: the VAPID JWT's ES256 signature against the server's public key, its aud,
exp and sub; then the payload decrypted with the subscription's private key (http_ece, an
implementation other than the server's)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import http_ece  # type: ignore[import-untyped]
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

WAIT = 30.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Device:
    """A browser's side of a subscription: its key pair and auth secret."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def keys(self) -> dict[str, str]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"p256dh": b64url(point), "auth": b64url(self.auth)}


@dataclass(frozen=True)
class Delivery:
    device: str
    payload: dict[str, Any]
    headers: dict[str, str]
    claims: dict[str, Any]


def verify_vapid(authorization: str, public_key: str, origin: str) -> dict[str, Any]:
    """The JWT's claims once its signature, aud, exp and sub hold; AssertionError otherwise."""
    assert authorization.startswith("vapid t="), authorization
    token, _, key = authorization.removeprefix("vapid t=").partition(", k=")
    assert key == public_key, "k is not the server's VAPID public key"
    signed, _, signature = token.rpartition(".")
    raw = unb64url(signature)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    try:
        public.verify(der, signed.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionError("bad VAPID signature") from None
    header, claims = (json.loads(unb64url(p)) for p in signed.split("."))
    assert header["alg"] == "ES256"
    assert claims["aud"] == origin, claims
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600, claims
    assert claims["sub"].startswith(("mailto:", "https:")), claims
    return dict(claims)


@dataclass
class PushService:
    """Devices by name (their endpoint is ``url/push/<name>``); statuses to answer next."""

    public_key: str = ""
    url: str = ""
    devices: dict[str, Device] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)
    received: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    rejected: list[str] = field(default_factory=list)

    def endpoint(self, device: Device) -> str:
        self.devices[device.name] = device
        return f"{self.url}/push/{device.name}"

    async def handle(self, request: web.Request) -> web.Response:
        device = self.devices[request.match_info["name"]]
        body = await request.read()
        try:
            claims = verify_vapid(request.headers["Authorization"], self.public_key, self.url)
            assert request.headers["Content-Encoding"] == "aes128gcm"
            assert int(request.headers["TTL"]) >= 0
            plain = http_ece.decrypt(body, private_key=device.key, auth_secret=device.auth)
        except Exception as e:
            self.rejected.append(repr(e))
            return web.Response(status=400, text=repr(e))
        headers = dict(request.headers)
        self.received.put_nowait(Delivery(device.name, json.loads(plain), headers, claims))
        status = self.answers.pop(0) if self.answers else 201
        return web.Response(status=status)

    async def next_delivery(self) -> Delivery:
        return await asyncio.wait_for(self.received.get(), WAIT)


@asynccontextmanager
async def push_service(public_key: str) -> AsyncIterator[PushService]:
    service = PushService(public_key)
    app = web.Application()
    app.router.add_post("/push/{name}", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    service.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield service
    finally:
        await runner.cleanup()
