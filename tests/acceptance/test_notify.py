"""Mail settings, notifiers and notifications over the wire, with real receivers: an SMTP
server (aiosmtpd: plain, STARTTLS, TLS with a self-signed certificate) and a webhook
receiver that checks the signature. Passwords and secrets never come back, nor reach the
server's log."""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.serverproc import ServerProc
from tests.sinks import Certificate, make_certificate, smtp_server, webhook_receiver
from tests.snapshots import upload_config
from tests.wsraw import Raw, raw

SMTP_PASSWORD = "smtp-password-7d1f0c"
HOOK_SECRET = "hook-secret-3a9e41b2c7"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def logged(proc: ServerProc, *parts: str, timeout: float = 30) -> str:
    """The first server log line holding every one of ``parts`` (the log is read by a
    thread, so a line written before a reply may land just after it)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in list(proc.output):
            if all(p in line for p in parts):
                return line
        assert time.monotonic() < deadline, f"no log line with {parts}"
        await asyncio.sleep(0.05)


async def use_mail(c: Raw, port: int, **extra: Any) -> None:
    await c.call(
        "mail.update",
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "PLAIN",
            "from_email": "middlewared@example.com",
            "username": "",
            "ca_certificate": "",
            **extra,
        },
    )


async def run_job(c: Raw, method: str, *params: Any) -> int:
    await c.call("core.set_options", {"legacy_jobs": True})
    try:
        job_id: int = await c.call(method, *params)
    finally:
        await c.call("core.set_options", {"legacy_jobs": False})
    reply = await c.reply(await c.request("core.job_wait", job_id))
    assert reply.get("id") is not None
    return job_id


async def test_mail_settings_never_show_the_password(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        shown = await c.call(
            "mail.update",
            {
                "host": "smtp.example.com",
                "port": 587,
                "security": "STARTTLS",
                "username": "bot",
                "password": SMTP_PASSWORD,
                "from_email": "mw@example.com",
            },
        )
        assert "password" not in shown and shown["password_set"] is True
        assert (shown["host"], shown["port"], shown["security"]) == (
            "smtp.example.com",
            587,
            "STARTTLS",
        )
        config = await c.call("mail.config")
        assert config == shown
        # The generic settings methods leave write-only fields out too.
        assert "password" not in await c.call("settings.get", "mail")
        assert "password" not in await c.call("settings.update", "mail", {"port": 2525})
        assert (await c.call("mail.config"))["password_set"] is True
        for bad, field in (
            ({"security": "SSL"}, "security"),
            ({"port": 0}, "port"),
            ({"from_email": "not an address"}, "from_email"),
            ({"ca_certificate": "-----BEGIN CERTIFICATE-----\nnope\n"}, "ca_certificate"),
            ({"password": 7}, "password"),
            ({"colour": "red"}, "colour"),
        ):
            err = await c.error("mail.update", bad)
            assert err["code"] == -32602 and err["data"]["extra"][0][0].endswith(field), err
        assert (await c.call("mail.update", {"password": ""}))["password_set"] is False
        user = unique("m")
        await c.call(
            "user.create", {"username": user, "password": "pw-" + user, "allowlist": ["*"]}
        )
    async with raw(server.ws_url, user, "pw-" + user) as u:
        for method, params in (("mail.config", []), ("mail.update", [{"port": 25}])):
            err = await u.error(method, *params)
            assert err["data"]["errname"] == "EACCES", err
    assert SMTP_PASSWORD not in server.log_text()


async def test_notifiers_are_for_admins_and_keep_their_secret(server: ServerProc) -> None:
    mail_name, hook_name = unique("ops-"), unique("hook-")
    async with raw(server.ws_url, "root", server.password) as c:
        mail = await c.call(
            "notifier.create", {"name": mail_name, "kind": "mail", "to": ["ops@example.com"]}
        )
        hook = await c.call(
            "notifier.create",
            {
                "name": hook_name,
                "kind": "webhook",
                "url": "http://127.0.0.1:9/h",
                "secret": HOOK_SECRET,
            },
        )
        assert mail["to"] == ["ops@example.com"] and mail["secret_set"] is False
        assert hook["secret_set"] is True and "secret" not in hook
        found = await c.call(
            "notifier.query", [["name", "in", [mail_name, hook_name]]], {"order_by": ["id"]}
        )
        assert [n["name"] for n in found] == [mail_name, hook_name]
        assert all("secret" not in n for n in found)
        # The secret cannot be found by filtering on it either.
        assert await c.call("notifier.query", [["secret", "=", HOOK_SECRET]]) == []
        for data, field in (
            ({"name": mail_name, "kind": "mail", "to": ["x@example.com"]}, "name"),
            ({"name": unique("w"), "kind": "webhook", "url": "http://h/"}, "secret"),
            (
                {"name": unique("w"), "kind": "webhook", "url": "ftp://h/", "secret": HOOK_SECRET},
                "url",
            ),
            (
                {"name": unique("w"), "kind": "webhook", "url": "http://h/", "secret": "short"},
                "secret",
            ),
            ({"name": unique("m"), "kind": "mail", "to": []}, "to"),
            ({"name": unique("m"), "kind": "mail", "to": ["a@b.c\r\nBcc: x@y.z"]}, "to"),
            ({"name": "bad name", "kind": "mail", "to": ["a@b.c"]}, "name"),
            ({"name": unique("m"), "kind": "pager"}, "kind"),
        ):
            err = await c.error("notifier.create", data)
            assert err["code"] == -32602 and field in err["data"]["extra"][0][0], (data, err)
            assert HOOK_SECRET not in json.dumps(err)
        renamed = await c.call(
            "notifier.update", hook["id"], {"name": hook_name + "x", "url": "https://h.example/x"}
        )
        assert (renamed["name"], renamed["url"], renamed["secret_set"]) == (
            hook_name + "x",
            "https://h.example/x",
            True,
        )
        err = await c.error("notifier.update", hook["id"], {"name": mail_name})
        assert err["code"] == -32602 and err["data"]["extra"][0][::2] == ["name", errno.EEXIST]
        assert (await c.error("notifier.update", 10**9, {"url": "http://h/"}))["data"][
            "errname"
        ] == "ENOENT"
        user = unique("n")
        await c.call(
            "user.create", {"username": user, "password": "pw-" + user, "allowlist": ["*"]}
        )
        async with raw(server.ws_url, user, "pw-" + user) as u:
            for method, params in (
                ("notifier.query", []),
                ("notifier.create", [{"name": unique("u"), "kind": "mail", "to": ["a@b.c"]}]),
                ("notifier.update", [mail["id"], {"to": ["evil@example.com"]}]),
                ("notifier.delete", [mail["id"]]),
            ):
                err = await u.error(method, *params)
                assert err["data"]["errname"] == "EACCES", (method, err)
        assert await c.call("notifier.delete", mail["id"]) is True
        assert (await c.error("notifier.delete", mail["id"]))["data"]["errname"] == "ENOENT"
        assert await c.call("notifier.query", [["id", "=", mail["id"]]]) == []
        await c.call("notifier.delete", hook["id"])
    assert HOOK_SECRET not in server.log_text()


async def test_a_mail_notification_carries_the_jobs_log(server: ServerProc) -> None:
    name = unique("ops-")
    async with smtp_server() as sink, raw(server.ws_url, "root", server.password) as c:
        await use_mail(c, sink.port)
        await c.call(
            "notifier.create",
            {"name": name, "kind": "mail", "to": ["ops@example.com", "dev@example.com"]},
        )
        job_id = await run_job(c, "test.logs", 3)
        await c.call("notifytest.notify", job_id, [name], 7, "nightly")
        mail = await sink.next_mail()
        assert mail["Subject"] == "nightly: #7: SUCCESS"
        assert (mail["From"], mail["To"]) == (
            "middlewared@example.com",
            "ops@example.com, dev@example.com",
        )
        body = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "line 0" in body and "line 2" in body
        # A job that wrote no log: a summary with its error.
        failed = await run_job(c, "test.fail", "disk on fire")
        await c.call("notifytest.notify", failed, [name], 8, "nightly")
        mail = await sink.next_mail()
        assert mail["Subject"] == "nightly: #8: FAILED"
        assert "disk on fire" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    await logged(server, f"notifier {name}:", f"job {failed}")


async def test_tls_mail_notifications_trust_the_configured_certificate(
    server: ServerProc, tmp_path: Path
) -> None:
    cert: Certificate = make_certificate(tmp_path)
    name = unique("tls-")
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("notifier.create", {"name": name, "kind": "mail", "to": ["ops@example.com"]})
        job_id = await run_job(c, "test.logs", 1)
        for counter, security in enumerate(("STARTTLS", "TLS"), 1):
            async with smtp_server(security, cert, account=("bot", SMTP_PASSWORD)) as sink:
                await use_mail(
                    c,
                    sink.port,
                    security=security,
                    ca_certificate=cert.pem,
                    username="bot",
                    password=SMTP_PASSWORD,
                )
                await c.call("notifytest.notify", job_id, [name], counter, security)
                assert (await sink.next_mail())["Subject"] == f"{security}: #{counter}: SUCCESS"
                # Without the certificate the system's store does not trust it: logged, once.
                await c.call("mail.update", {"ca_certificate": ""})
                await c.call("notifytest.notify", job_id, [name], counter, security + "-untrusted")
                await logged(
                    server, f"notifier {name} (mail)", "permanent failure", "TLS", "certificate"
                )
                assert sink.inbox.empty() and sink.logins == ["bot"]
    assert SMTP_PASSWORD not in server.log_text()


async def test_smtp_refusals_are_logged_as_transient_or_permanent(server: ServerProc) -> None:
    name = unique("refused-")
    async with smtp_server(rcpt_reply="451 4.3.0 Greylisted, try later") as sink:
        async with raw(server.ws_url, "root", server.password) as c:
            await use_mail(c, sink.port)
            await c.call(
                "notifier.create", {"name": name, "kind": "mail", "to": ["ops@example.com"]}
            )
            job_id = await run_job(c, "test.logs", 1)
            # The call (the job engine, in real use) never sees the failure.
            assert await c.call("notifytest.notify", job_id, [name]) is None
            await logged(
                server, f"notifier {name} (mail)", "transient failure", "451 4.3.0 Greylisted"
            )
            sink.rcpt_reply = "550 5.1.1 No such mailbox"
            assert await c.call("notifytest.notify", job_id, [name]) is None
            await logged(
                server, f"notifier {name} (mail)", "permanent failure", "550 5.1.1 No such mailbox"
            )
            # Unknown names are logged, not fatal.
            ghost = unique("ghost-")
            assert await c.call("notifytest.notify", job_id, [ghost]) is None
            await logged(server, f"no notifier named '{ghost}'", f"job {job_id}")
    assert sink.inbox.empty()


async def test_a_webhook_notification_is_the_signed_job_record(server: ServerProc) -> None:
    name = unique("hook-")
    async with (
        webhook_receiver(HOOK_SECRET) as hook,
        raw(server.ws_url, "root", server.password) as c,
    ):
        await c.call(
            "notifier.create",
            {"name": name, "kind": "webhook", "url": hook.url, "secret": HOOK_SECRET},
        )
        job_id = await run_job(c, "test.logs", 2)
        await c.call("notifytest.notify", job_id, [name])
        body, signed, headers = await hook.next_request()
        assert signed, headers
        record = json.loads(body)
        assert (record["id"], record["state"], record["method"]) == (job_id, "SUCCESS", "test.logs")
        assert headers["Content-Type"] == "application/json"
        # A receiver that answers an error: logged with the notifier's name, never its URL's
        # token nor the secret.
        hook.status = 500
        await c.call("notifytest.notify", job_id, [name])
        assert (await hook.next_request())[1]
        line = await logged(server, f"notifier {name} (http://127.0.0.1:", "HTTP 500")
        assert "not-for-logs" not in line
        # A wrong secret on our side would be refused by the receiver: change it and see.
        await c.call(
            "notifier.update",
            (await c.call("notifier.query", [["name", "=", name]], {"get": True}))["id"],
            {"secret": "another-secret-0123456789"},
        )
        await c.call("notifytest.notify", job_id, [name])
        assert (await hook.next_request())[1] is False
        await logged(server, f"notifier {name} (http://127.0.0.1:", "HTTP 403")
    assert HOOK_SECRET not in server.log_text()
    assert "not-for-logs" not in server.log_text()


async def test_notifiers_are_kept_by_config_save_and_upload(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    proc = make_server()
    backup = tmp_path / "backup.db"
    async with raw(proc.ws_url, "root", proc.password) as c:
        kept = await c.call(
            "notifier.create", {"name": "kept", "kind": "mail", "to": ["a@example.com"]}
        )
        await c.call("mail.update", {"host": "smtp.example.com", "password": SMTP_PASSWORD})
        _, url = await c.call("core.download", "config.save", [{}], "backup.db")
        await curl("-o", str(backup), proc.url + url)
        await c.call("notifier.delete", kept["id"])
        later = await c.call(
            "notifier.create", {"name": "later", "kind": "mail", "to": ["b@example.com"]}
        )
        await c.call("mail.update", {"host": "other.example.com", "password": ""})
        await upload_config(c, proc, backup)
        restored = await c.call("notifier.query")
        assert [(n["id"], n["name"]) for n in restored] == [(kept["id"], "kept")]
        config = await c.call("mail.config")
        assert (config["host"], config["password_set"]) == ("smtp.example.com", True)
        # Ids are never reused: the next one comes after those the restore dropped.
        new = await c.call(
            "notifier.create", {"name": "new", "kind": "mail", "to": ["c@example.com"]}
        )
        assert new["id"] > later["id"]


async def curl(*args: str) -> str:
    out = await asyncio.to_thread(subprocess.check_output, ["curl", "-sf", *args], timeout=60)
    return out.decode()
