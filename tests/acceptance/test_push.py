"""Web Push over the wire to a local push service that checks the VAPID signature with the key
push.vapid_public_key gives and decrypts the payload with the device's own key: Urgency and
Topic, a 410 removing the subscription, who may send to whom, the endpoints refused (SSRF),
and a private key that stays on disk, 0600, the same across a restart."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Callable

from tests.pushservice import Device, push_service
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

MESSAGE = {"title": "Sauvegarde", "message": "Terminée ✓", "data": {"job": "42"}}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def make_user(c: Raw) -> tuple[str, str]:
    name = unique("push")
    await c.call(
        "user.create", {"username": name, "password": "pw-" + name, "allowlist": ["push.*"]}
    )
    return name, "pw-" + name


async def allow_local(c: Raw, allowed: bool) -> None:
    await c.call("settings.update", "push", {"allow_insecure_endpoints": allowed})


async def test_send_is_encrypted_signed_and_sets_urgency_and_topic(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        await allow_local(admin, True)
        await admin.call("settings.update", "push", {"contact": "mailto:ops@example.com"})
        user, password = await make_user(admin)
        public_key = await admin.call("push.vapid_public_key")
    async with push_service(public_key) as service, raw(server.ws_url, user, password) as c:
        assert await c.call("push.vapid_public_key") == public_key
        phone = Device("phone")
        subscription = {"endpoint": service.endpoint(phone), "keys": phone.keys()}
        client_id = await c.call("push.subscribe", subscription)
        # The same endpoint again keeps its id.
        assert await c.call("push.subscribe", subscription) == client_id
        result = await c.call(
            "push.send",
            {**MESSAGE, "client_id": client_id, "priority": "high", "topic": "backup-42"},
        )
        assert result == {"status": 201}
        got = await service.next_delivery()
        assert got.payload == {**MESSAGE, "priority": "high", "topic": "backup-42"}
        assert (got.headers["Urgency"], got.headers["Topic"]) == ("high", "backup-42")
        assert got.claims["sub"] == "mailto:ops@example.com"
        await c.call("push.send", {**MESSAGE, "client_id": client_id, "sound": "ding"})
        got = await service.next_delivery()
        assert (got.headers["Urgency"], "Topic" in got.headers) == ("normal", False)
        assert got.payload["sound"] == "ding"
        # A push service in trouble: the job fails with its status; the subscription stays.
        service.answers.append(503)
        err = await c.error("push.send", {**MESSAGE, "client_id": client_id})
        assert err["data"]["errname"] == "EAGAIN" and "503" in err["data"]["reason"], err
        await service.next_delivery()
        assert [s["client_id"] for s in await c.call("push.query")] == [client_id]
        # The push service says the subscription is gone: it is removed.
        service.answers.append(410)
        err = await c.error("push.send", {**MESSAGE, "client_id": client_id})
        assert err["data"]["errname"] == "ENOENT" and "410" in err["data"]["reason"], err
        assert await c.call("push.query") == []
        err = await c.error("push.send", {**MESSAGE, "client_id": client_id})
        assert err["data"]["errname"] == "ENOENT", err
    assert service.rejected == []


async def test_subscriptions_belong_to_their_user(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        await allow_local(admin, True)
        public_key = await admin.call("push.vapid_public_key")
        alice, alice_pw = await make_user(admin)
        bob, bob_pw = await make_user(admin)
        async with push_service(public_key) as service:
            laptop = Device("laptop")
            async with raw(server.ws_url, alice, alice_pw) as a:
                sub = {"endpoint": service.endpoint(laptop), "keys": laptop.keys()}
                client_id = await a.call("push.subscribe", sub)
                (shown,) = await a.call("push.query")
                assert shown["client_id"] == client_id and "keys" not in str(shown)
            async with raw(server.ws_url, bob, bob_pw) as b:
                assert await b.call("push.query") == []
                for method, params in (
                    ("push.send", [{**MESSAGE, "client_id": client_id}]),
                    ("push.unsubscribe", [client_id]),
                ):
                    err = await b.error(method, *params)
                    assert err["data"]["errname"] == "ENOENT", err
            # Administrators reach every subscription.
            await admin.call("push.send", {**MESSAGE, "client_id": client_id})
            assert (await service.next_delivery()).device == "laptop"
            assert await admin.call("push.unsubscribe", client_id) is True
            assert await admin.call("push.query", [["client_id", "=", client_id]]) == []


async def test_endpoints_inside_the_network_are_refused(server: ServerProc) -> None:
    device = Device("x")
    async with raw(server.ws_url, "root", server.password) as admin:
        await allow_local(admin, False)
        for endpoint in (
            "http://127.0.0.1:9/push/x",
            "https://127.0.0.1:9/push/x",
            "https://10.0.0.1/push/x",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost/push/x",
        ):
            err = await admin.error("push.subscribe", {"endpoint": endpoint, "keys": device.keys()})
            field, reason, _ = err["data"]["extra"][0]
            assert field.endswith("endpoint") and ("https://" in reason or "public" in reason), err
        bad_keys = {**device.keys(), "auth": "AAAA"}
        err = await admin.error(
            "push.subscribe", {"endpoint": "https://push.example.net/x", "keys": bad_keys}
        )
        assert "16 bytes" in err["data"]["extra"][0][1], err
        # Subscribed while allowed, then disallowed: sending refuses too.
        await allow_local(admin, True)
        client_id = await admin.call(
            "push.subscribe", {"endpoint": "http://127.0.0.1:9/push/x", "keys": device.keys()}
        )
        await allow_local(admin, False)
        err = await admin.error("push.send", {**MESSAGE, "client_id": client_id})
        assert err["data"]["errname"] == "EACCES", err
        await admin.call("push.unsubscribe", client_id)


async def test_the_vapid_key_is_kept_private_and_across_restarts(
    make_server: Callable[..., ServerProc],
) -> None:
    proc = make_server()
    async with raw(proc.ws_url, "root", proc.password) as c:
        first = await c.call("push.vapid_public_key")
    key_file = proc.data_dir / "push" / "vapid_private.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_text().splitlines()[1]
    proc.restart()
    async with raw(proc.ws_url, "root", proc.password) as c:
        assert await c.call("push.vapid_public_key") == first
        assert secret not in str(await c.call("settings.get", "push"))
    assert secret not in proc.log_text()
