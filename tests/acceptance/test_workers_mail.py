"""mail.send over the wire to a real SMTP server (aiosmtpd): both modes, both parts,
attachments by content and by path, non-ASCII headers, STARTTLS and implicit TLS with a
self-signed certificate, a 4xx retried, a 5xx failing at once, and refusals with reasons."""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import socket
import sys
import uuid
from asyncio.subprocess import PIPE
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.serverproc import ServerProc
from tests.sinks import MailSink, make_certificate, smtp_server
from tests.wsraw import Raw, raw

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMTP_PASSWORD = "smtp-secret-5be0a9d4"
FROM = "middlewared@example.com"
NOREPLY = "noreply@example.com"
PARTS = [
    {"type": "text/plain", "body": "Bonjour, ça va ?"},
    {"type": "text/html", "body": "<h1>Bonjour, ça va ?</h1>"},
]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def configure(c: Raw, port: int, security: str = "PLAIN", **extra: Any) -> None:
    await c.call(
        "mail.update",
        {
            "host": "127.0.0.1",
            "port": port,
            "security": security,
            "from_email": FROM,
            "noreply_email": NOREPLY,
            "username": "",
            "password": "",
            "ca_certificate": "",
            **extra,
        },
    )


async def make_user(c: Raw, email: str = "", full_name: str = "Zoë Ünal") -> tuple[str, str]:
    name = unique("mail")
    password = "pw-" + name
    created = await c.call(
        "user.create",
        {
            "username": name,
            "password": password,
            "full_name": full_name,
            "email": email,
            "allowlist": ["mail.send"],
        },
    )
    assert created["email"] == email
    return name, password


async def last_job(c: Raw) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = await c.call(
        "core.get_jobs", [["method", "=", "mail.send"]], {"order_by": ["-id"], "limit": 1}
    )
    return jobs[0]


def bodies(mail: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in mail.walk()
        if part.get_content_maintype() == "text" and not part.get_filename()
    }


async def test_from_mode_sends_both_parts_and_attachments(server: ServerProc) -> None:
    files = server.data_dir / "files"
    (files / "report.csv").write_bytes(b"a,b\n1,2\n")
    async with smtp_server(account=("bot", SMTP_PASSWORD)) as sink:
        async with raw(server.ws_url, "root", server.password) as admin:
            await configure(admin, sink.port, username="bot", password=SMTP_PASSWORD)
            user, password = await make_user(admin, email="zoe@example.org")
        async with raw(server.ws_url, user, password) as c:
            options = {
                "mode": "from",
                "to": [
                    {"name": "Jöhn Doe", "email": "john@doe.example"},
                    {"name": "Doe, Jane", "email": "jane@doe.example"},
                ],
                "subject": "Réunion à 10 h ✓",
                "parts": PARTS,
                "attachments": [
                    {
                        "filename": "notes.bin",
                        "content": base64.b64encode(b"\x00\x01binary").decode(),
                    },
                    {"path": str(files / "report.csv")},
                ],
            }
            assert await c.call("mail.send", options) is None
            job = await last_job(c)
        mail = await sink.next_mail()
    assert sink.logins == ["bot"]
    assert mail["Subject"] == "Réunion à 10 h ✓"
    assert mail["From"].addresses[0].display_name == "Zoë Ünal"
    assert mail["From"].addresses[0].addr_spec == FROM
    assert mail["Reply-To"].addresses[0].addr_spec == "zoe@example.org"
    assert [(a.display_name, a.addr_spec) for a in mail["To"].addresses] == [
        ("Jöhn Doe", "john@doe.example"),
        ("Doe, Jane", "jane@doe.example"),
    ]
    assert mail.get_content_type() == "multipart/mixed"
    alternative = next(p for p in mail.walk() if p.get_content_type() == "multipart/alternative")
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert bodies(mail) == {
        "text/plain": "Bonjour, ça va ?\n",
        "text/html": "<h1>Bonjour, ça va ?</h1>\n",
    }
    attached = {a.get_filename(): a.get_content() for a in mail.iter_attachments()}
    assert attached == {"notes.bin": b"\x00\x01binary", "report.csv": "a,b\n1,2\n"}
    # The job's record shows the attachments by name, not their bytes; no password anywhere.
    shown = job["arguments"][0]["attachments"]
    assert shown[0] == {"filename": "notes.bin", "content_length": 12}
    assert job["state"] == "SUCCESS" and job["attempt"] == 1
    assert SMTP_PASSWORD not in server.log_text()
    assert SMTP_PASSWORD not in str(job)


async def test_noreply_goes_to_the_callers_own_email(server: ServerProc) -> None:
    async with smtp_server() as sink, raw(server.ws_url, "root", server.password) as admin:
        await configure(admin, sink.port)
        user, password = await make_user(admin, email="me@example.org", full_name="")
        bare, bare_password = await make_user(admin)
        async with raw(server.ws_url, user, password) as c:
            only_html = [{"type": "text/html", "body": "<p>done</p>"}]
            await c.call("mail.send", {"mode": "noreply", "subject": "Done", "parts": only_html})
            mail = await sink.next_mail()
            err = await c.error(
                "mail.send",
                {"mode": "noreply", "to": [{"email": "x@y.z"}], "subject": "s", "parts": PARTS},
            )
            assert "own email" in err["data"]["extra"][0][1], err
        assert (mail["From"].addresses[0].addr_spec, mail["Reply-To"]) == (NOREPLY, None)
        assert [(a.display_name, a.addr_spec) for a in mail["To"].addresses] == [
            (user, "me@example.org")
        ]
        assert mail.get_content_type() == "text/html"
        async with raw(server.ws_url, bare, bare_password) as c:
            for mode, extra in (("noreply", {}), ("from", {"to": [{"email": "a@b.c"}]})):
                err = await c.error(
                    "mail.send", {"mode": mode, "subject": "s", "parts": PARTS, **extra}
                )
                assert err["data"]["errname"] == "EINVAL", err
                field, reason, _ = err["data"]["extra"][0]
                assert field.endswith("options.mode") and "has no email" in reason, err
        # The email is the user's to change (and to remove).
        uid = (await admin.call("user.query", [["username", "=", bare]], {"get": True}))["id"]
        assert (await admin.call("user.update", uid, {"email": "b@example.org"}))["email"]
        err = await admin.error("user.update", uid, {"email": "not an address"})
        assert err["code"] == -32602, err
    assert sink.inbox.empty()


async def test_attachment_paths_stay_under_the_roots(server: ServerProc, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not for mail")
    link = server.data_dir / "files" / unique("link")
    link.symlink_to(outside)
    async with smtp_server() as sink, raw(server.ws_url, "root", server.password) as admin:
        await configure(admin, sink.port)
        user, password = await make_user(admin, email="me@example.org")
        async with raw(server.ws_url, user, password) as c:
            for path, code in ((str(outside), errno.EACCES), (str(link), errno.ELOOP)):
                err = await c.error(
                    "mail.send",
                    {
                        "mode": "noreply",
                        "subject": "s",
                        "parts": PARTS,
                        "attachments": [{"path": path}],
                    },
                )
                field, _, found = err["data"]["extra"][0]
                assert field.endswith("attachments.0.path") and found == code, err
            err = await c.error(
                "mail.send",
                {
                    "mode": "noreply",
                    "subject": "s",
                    "parts": PARTS,
                    "attachments": [{"filename": "x", "content": "not base64!"}],
                },
            )
            assert "Not base64" in err["data"]["extra"][0][1], err
    assert sink.inbox.empty()


async def test_starttls_and_implicit_tls_with_a_self_signed_certificate(
    server: ServerProc, tmp_path: Path
) -> None:
    cert = make_certificate(tmp_path)
    async with raw(server.ws_url, "root", server.password) as admin:
        user, password = await make_user(admin, email="me@example.org")
        for security in ("STARTTLS", "TLS"):
            async with smtp_server(security, cert) as sink:
                # Not trusted yet: a permanent failure that names TLS, at once.
                await configure(admin, sink.port, security)
                async with raw(server.ws_url, user, password) as c:
                    opts = {"mode": "noreply", "subject": security, "parts": PARTS}
                    err = await c.error("mail.send", opts)
                    assert "TLS" in err["data"]["reason"] and (await last_job(c))["attempt"] == 1
                    await configure(admin, sink.port, security, ca_certificate=cert.pem)
                    await c.call("mail.send", opts)
                mail = await sink.next_mail()
                assert mail["Subject"] == security


async def test_a_4xx_is_retried_and_a_5xx_fails_at_once(server: ServerProc) -> None:
    async with smtp_server() as sink, raw(server.ws_url, "root", server.password) as admin:
        await configure(admin, sink.port)
        user, password = await make_user(admin, email="me@example.org")
        replies = ["451 4.3.0 Try again later"]

        async def handle_rcpt(
            server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
        ) -> str:
            if replies:
                return replies.pop(0)
            envelope.rcpt_tos.append(address)
            return "250 OK"

        # aiosmtpd looks the hook up on the handler object: this one answers 451 once.
        sink.handle_RCPT = handle_rcpt  # type: ignore[method-assign]
        async with raw(server.ws_url, user, password) as c:
            opts = {"mode": "noreply", "subject": "retry", "parts": PARTS}
            await c.call("mail.send", opts)
            job = await last_job(c)
            assert (job["state"], job["attempt"]) == ("SUCCESS", 2)
            assert (await sink.next_mail())["Subject"] == "retry"
            replies.append("550 5.1.1 No such mailbox here")
            err = await c.error("mail.send", {**opts, "subject": "permanent"})
            assert "550 5.1.1 No such mailbox here" in err["data"]["reason"], err
            job = await last_job(c)
            assert (job["state"], job["attempt"]) == ("FAILED", 1)
    assert sink.inbox.empty()


async def test_the_readme_example_sends_a_mail(server: ServerProc) -> None:
    """examples/send_mail.py, as the README quotes it, run as a user runs it."""
    report = server.data_dir / "files" / f"{unique('report-')}.txt"
    report.write_text("all good\n")
    async with smtp_server() as sink:
        async with raw(server.ws_url, "root", server.password) as admin:
            await configure(admin, sink.port)
            user, password = await make_user(admin, email="me@example.org")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_")}
        env.update(
            MIDDLEWARED_URL=server.ws_url, MIDDLEWARED_USER=user, MIDDLEWARED_PASSWORD=password
        )
        command = [sys.executable, str(EXAMPLES / "send_mail.py"), "ops@example.com"]
        process = await asyncio.create_subprocess_exec(
            *command, "--attach", str(report), env=env, stdout=PIPE, stderr=PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        assert out.decode() == "sent to ops@example.com\n"
        mail = await sink.next_mail()
    assert mail["To"].addresses[0].addr_spec == "ops@example.com"
    assert mail["Reply-To"].addresses[0].addr_spec == "me@example.org"
    assert {a.get_filename(): a.get_content() for a in mail.iter_attachments()} == {
        report.name: "all good\n"
    }


async def test_a_refused_connection_is_retried(server: ServerProc) -> None:
    """Nothing listens at first: the job goes back to WAITING for its second attempt, which
    reaches the SMTP server started meanwhile on that port."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    sink = MailSink()
    async with raw(server.ws_url, "root", server.password) as admin:
        await configure(admin, port)
        user, password = await make_user(admin, email="me@example.org")
    async with raw(server.ws_url, user, password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call = await c.request("mail.send", {"mode": "noreply", "subject": "late", "parts": PARTS})
        event = await c.notification(
            lambda n: (
                n["params"].get("fields", {}).get("attempt") == 2
                and n["params"]["fields"]["state"] == "WAITING"
            )
        )
        assert "Cannot connect" in event["params"]["fields"]["error"], event
        loop = asyncio.get_running_loop()
        smtp = await loop.create_server(lambda: SMTP(sink, hostname="localhost"), "127.0.0.1", port)
        try:
            reply = await c.reply(call)
            assert reply.get("result", "missing") is None, reply
            assert (await sink.next_mail())["Subject"] == "late"
        finally:
            smtp.close()
            await smtp.wait_closed()
