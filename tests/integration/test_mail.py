"""send_mail against a real SMTP server (aiosmtpd on a free port): plain, STARTTLS and TLS
with a self-signed certificate, and failures sorted into transient and permanent."""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path

import pytest

from middlewared.mail import (
    TRANSIENT_ERRNOS,
    Attachment,
    MailPermanentError,
    MailSettings,
    MailTransientError,
    check_ca_certificate,
    send_mail,
)
from tests.sinks import Certificate, make_certificate, smtp_server

PASSWORD = "smtp-pass-5e3b"


@pytest.fixture
def cert(tmp_path: Path) -> Certificate:
    return make_certificate(tmp_path)


def settings(port: int, **extra: object) -> MailSettings:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "from_email": "middlewared@example.com",
        "timeout": 30.0,
    }
    return MailSettings.from_settings({**base, **extra})


async def test_a_plain_mail_with_html_and_an_attachment_arrives() -> None:
    async with smtp_server() as sink:
        await send_mail(
            settings(sink.port),
            to=["ops@example.com", "dev@example.com"],
            subject="report\r\nBcc: victim@example.com",
            body_text="all good\n",
            body_html="<p>all good</p>",
            reply_to="alice@example.com",
            attachments=[Attachment("r.csv", b"a,b\n1,2\n")],
        )
        mail = await sink.next_mail()
    # A line break in a header value cannot start a header of its own.
    assert mail["Subject"] == "report Bcc: victim@example.com" and mail["Bcc"] is None
    assert (mail["From"], mail["To"]) == (
        "middlewared@example.com",
        "ops@example.com, dev@example.com",
    )
    assert mail["Reply-To"] == "alice@example.com"
    assert mail.get_body(("plain",)).get_content() == "all good\n"  # type: ignore[union-attr]
    assert "<p>all good</p>" in mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    (part,) = list(mail.iter_attachments())
    assert (part.get_filename(), part.get_content_type()) == ("r.csv", "text/csv")
    assert part.get_payload(decode=True) == b"a,b\n1,2\n"


async def test_a_login_uses_the_password_and_never_shows_it() -> None:
    async with smtp_server(account=("bot", PASSWORD)) as sink:
        good = settings(sink.port, username="bot", password=PASSWORD)
        assert PASSWORD not in repr(good)
        await send_mail(good, to=["ops@example.com"], subject="s", body_text="b")
        await sink.next_mail()
        bad = settings(sink.port, username="bot", password="wrong-" + PASSWORD)
        with pytest.raises(MailPermanentError) as info:
            await send_mail(bad, to=["ops@example.com"], subject="s", body_text="b")
    assert "535" in info.value.reason and PASSWORD not in str(info.value)
    # aiosmtplib tries each mechanism the server offers before it gives up.
    assert len(sink.logins) >= 2 and set(sink.logins) == {"bot"}


@pytest.mark.parametrize("security", ["STARTTLS", "TLS"])
async def test_tls_with_a_trusted_self_signed_certificate(security: str, cert: Certificate) -> None:
    async with smtp_server(security, cert, account=("bot", PASSWORD)) as sink:
        trusted = settings(
            sink.port, security=security, ca_certificate=cert.pem, username="bot", password=PASSWORD
        )
        await send_mail(trusted, to=["ops@example.com"], subject=security, body_text="b")
        assert (await sink.next_mail())["Subject"] == security
        # The system's store does not trust it: refused for good, saying why.
        with pytest.raises(MailPermanentError) as info:
            await send_mail(
                settings(sink.port, security=security),
                to=["o@example.com"],
                subject="s",
                body_text="b",
            )
    assert info.value.errno == errno.EPROTO and "certificate" in info.value.reason
    assert sink.logins == ["bot"]


async def test_starttls_against_a_server_without_it_is_permanent() -> None:
    async with smtp_server() as sink:
        with pytest.raises(MailPermanentError, match="STARTTLS"):
            await send_mail(
                settings(sink.port, security="STARTTLS"),
                to=["o@example.com"],
                subject="s",
                body_text="b",
            )


async def test_4xx_is_transient_and_5xx_permanent_with_the_reply() -> None:
    async with smtp_server(rcpt_reply="451 4.3.0 Try again later") as sink:
        with pytest.raises(MailTransientError) as transient:
            await send_mail(settings(sink.port), to=["o@example.com"], subject="s", body_text="b")
        sink.rcpt_reply = "550 5.1.1 No such user here"
        with pytest.raises(MailPermanentError) as permanent:
            await send_mail(settings(sink.port), to=["o@example.com"], subject="s", body_text="b")
    assert transient.value.errno in TRANSIENT_ERRNOS
    assert "451 4.3.0 Try again later" in transient.value.reason
    assert permanent.value.errno not in TRANSIENT_ERRNOS
    assert "550 5.1.1 No such user here" in permanent.value.reason


async def test_refused_and_silent_servers_are_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(MailTransientError) as refused:
        await send_mail(settings(closed_port), to=["o@example.com"], subject="s", body_text="b")
    assert refused.value.errno == errno.ECONNREFUSED

    # A server that accepts and never greets: the settings' timeout ends the wait.
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MailTransientError) as silence:
            await send_mail(
                settings(port, timeout=0.2), to=["o@example.com"], subject="s", body_text="b"
            )
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert silence.value.errno == errno.ETIMEDOUT


async def test_mail_not_configured_is_permanent() -> None:
    with pytest.raises(MailPermanentError, match="host"):
        await send_mail(
            MailSettings.from_settings({}), to=["o@example.com"], subject="s", body_text="b"
        )


def test_a_ca_certificate_is_checked(cert: Certificate) -> None:
    assert check_ca_certificate("") is None
    assert check_ca_certificate(cert.pem) is None
    assert check_ca_certificate("-----BEGIN CERTIFICATE-----\nnope\n") is not None
