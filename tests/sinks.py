"""Real receivers for the notification tests, on free ports of 127.0.0.1: an SMTP server
(aiosmtpd; plain, STARTTLS or TLS with a self-signed certificate made here) and a webhook
receiver (aiohttp) that checks the signature."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import hashlib
import hmac
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

WAIT = 30.0


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, with its key on disk."""

    pem: str
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(folder: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "middlewared test")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_text(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(pem, cert_file, key_file)


@dataclass
class MailSink:
    """What the SMTP server received; ``rcpt_reply`` makes it refuse every recipient."""

    port: int = 0
    rcpt_reply: str | None = None
    # The (username, password) pair logins must give; None: no login offered checks.
    account: tuple[str, str] | None = None
    logins: list[str] = field(default_factory=list)
    inbox: asyncio.Queue[EmailMessage] = field(default_factory=asyncio.Queue)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        # Line ends as a mail client shows them.
        content = envelope.content.replace(b"\r\n", b"\n")
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.inbox.put_nowait(message)
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        given = (data.login.decode(), data.password.decode())
        self.logins.append(given[0])
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        return AuthResult(success=given == self.account, handled=False)

    async def next_mail(self) -> EmailMessage:
        return await asyncio.wait_for(self.inbox.get(), WAIT)


@asynccontextmanager
async def smtp_server(
    security: str = "PLAIN", cert: Certificate | None = None, **options: Any
) -> AsyncIterator[MailSink]:
    """An aiosmtpd server on a free port: ``PLAIN``, ``STARTTLS`` (offered and required) or
    ``TLS`` (TLS from the first byte), with ``cert`` for the last two."""
    sink = MailSink(**options)
    context = cert.server_context() if cert is not None else None

    def protocol() -> SMTP:
        return SMTP(
            sink,
            hostname="localhost",
            tls_context=context if security == "STARTTLS" else None,
            require_starttls=security == "STARTTLS",
            authenticator=sink.authenticate,
            auth_require_tls=False,
        )

    loop = asyncio.get_running_loop()
    ssl_context = context if security == "TLS" else None
    server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=ssl_context)
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class HookSink:
    """What the webhook receiver got: each request's body and whether its signature held."""

    secret: str
    url: str = ""
    status: int = 200
    # When set, each request is answered only once it is (requests are recorded at once).
    hold: asyncio.Event | None = None
    requests: asyncio.Queue[tuple[bytes, bool, dict[str, str]]] = field(
        default_factory=asyncio.Queue
    )

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers.get("X-Middlewared-Sign", ""), expected)
        self.requests.put_nowait((body, signed, dict(request.headers)))
        if self.hold is not None:
            await self.hold.wait()
        return web.json_response({"ok": signed}, status=self.status if signed else 403)

    async def next_request(self) -> tuple[bytes, bool, dict[str, str]]:
        return await asyncio.wait_for(self.requests.get(), WAIT)


@asynccontextmanager
async def webhook_receiver(secret: str) -> AsyncIterator[HookSink]:
    sink = HookSink(secret)
    app = web.Application()
    app.router.add_post("/hooks/{name}", sink.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    sink.url = f"http://127.0.0.1:{port}/hooks/job?token=not-for-logs"
    try:
        yield sink
    finally:
        await runner.cleanup()
