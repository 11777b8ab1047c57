"""Revocation reaches open sessions, tokens, subscriptions and HTTP at once; keys, tokens and
jobs follow the user's id, not their name; the last administrator stays (hardening 2, 15,
16)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

PASSWORD = "pass-word-123"


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


async def make_user(conn: Raw, username: str, **fields: Any) -> int:
    user = await conn.call("user.create", {"username": username, "password": PASSWORD, **fields})
    uid: int = user["id"]
    return uid


def curl_status(*args: str) -> tuple[int, str]:
    out = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


async def test_locking_a_user_ends_their_session_subscriptions_and_tokens(
    server: ServerProc,
) -> None:
    user = name("lock")
    async with raw(server.ws_url, "root", server.password) as admin:
        uid = await make_user(admin, user, allowlist=["test.*"])
        async with raw(server.ws_url, user, PASSWORD) as u:
            await u.call("core.subscribe", "core.get_jobs")
            token = await u.call("auth.generate_token", 600)
            assert await u.call("test.echo", 1) == 1
            await admin.call("user.update", uid, {"locked": True})
            # The very next call is refused; the subscription ended with a notice.
            err = await u.error("test.echo", 1)
            assert err["data"]["errname"] == "ENOTAUTHENTICATED"
            notice = await u.notification(lambda n: n["method"] == "notify_unsubscribed")
            assert notice["params"]["collection"] == "core.get_jobs"
            assert "revoked" in notice["params"]["error"]["reason"]
        async with raw(server.ws_url) as c:
            assert await c.call("auth.login_with_token", token) is False
            assert await c.call("auth.login", user, PASSWORD) is False
        # Unlocked: the same password works again, the token minted before does not.
        await admin.call("user.update", uid, {"locked": False})
        async with raw(server.ws_url) as c:
            assert await c.call("auth.login_with_token", token) is False
            assert await c.call("auth.login", user, PASSWORD) is True


async def test_a_deleted_users_token_cannot_mint_a_token(server: ServerProc) -> None:
    user = name("del")
    async with raw(server.ws_url, "root", server.password) as admin:
        uid = await make_user(admin, user, allowlist=["test.*"])
        async with raw(server.ws_url, user, PASSWORD) as u:
            token = await u.call("auth.generate_token", 600, False)
        async with raw(server.ws_url) as t:
            assert await t.call("auth.login_with_token", token) is True
            await admin.call("user.delete", uid)
            err = await t.error("auth.generate_token", 86400)
            assert err["data"]["errname"] == "ENOTAUTHENTICATED"
        async with raw(server.ws_url) as c:
            assert await c.call("auth.login_with_token", token) is False


async def test_demoting_an_admin_narrows_the_open_session(server: ServerProc) -> None:
    boss = name("boss")
    async with raw(server.ws_url, "root", server.password) as admin:
        uid = await make_user(admin, boss, admin=True)
        assert await admin.call("test.progress", 1) == 1  # a job of root's
        async with raw(server.ws_url, boss, PASSWORD) as b:
            assert await b.call("user.query", [["id", "=", uid]])
            everything = await b.call("core.get_jobs", [], {"limit": 5})
            assert any(j["credentials"]["data"]["username"] == "root" for j in everything)
            await admin.call("user.update", uid, {"admin": False, "allowlist": ["test.*"]})
            err = await b.error("user.query")
            assert err["data"]["errname"] == "EACCES"
            mine = await b.call("core.get_jobs", [], {"limit": 50})
            assert all(j["credentials"]["data"]["username"] == boss for j in mine)
            await admin.call("user.update", uid, {"allowlist": []})
            err = await b.error("test.echo", 1)
            assert err["data"]["errname"] == "EACCES"


async def test_a_deleted_key_stops_its_session_http_and_downloads(
    server: ServerProc, tmp_path: Path
) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        key = await admin.call("api_key.create", {"name": name("k")})
        secret = key["key"]
        async with raw(server.ws_url) as k:
            assert await k.call("auth.login_with_api_key", secret) is True
            await k.call("core.subscribe", "core.get_jobs")
            (tmp_path / "f").write_text("hello")
            target = server.data_dir / "files" / name("up")
            upload = (
                "-F",
                f'data={{"method": "filesystem.put", "params": ["{target}"]}}',
                "-F",
                f"file=@{tmp_path / 'f'}",
                f"{server.url}/_upload",
            )
            code, body = curl_status("-H", f"Authorization: Bearer {secret}", *upload)
            assert code == 200, body
            source = server.data_dir / "files" / name("dl")
            source.write_text("payload")
            url = (await k.call("core.download", "filesystem.get", [str(source)], "o", True))[1]
            await admin.call("api_key.delete", key["id"])
            err = await k.error("core.get_jobs")
            assert err["data"]["errname"] == "ENOTAUTHENTICATED"
            code, body = curl_status("-H", f"Authorization: Bearer {secret}", *upload)
            assert code == 401, body
            await k.notification(lambda n: n["method"] == "notify_unsubscribed")
        code, body = curl_status(f"{server.url}{url}")
        assert code == 401, body  # the token died with its key


async def test_keys_tokens_and_jobs_follow_the_user_id_not_the_name(server: ServerProc) -> None:
    alice = name("al")
    async with raw(server.ws_url, "root", server.password) as admin:
        uid = await make_user(admin, alice, allowlist=["test.*"])
        key = await admin.call("api_key.create", {"name": "alices", "username": alice})
        async with raw(server.ws_url, alice, PASSWORD) as a:
            assert await a.call("test.progress", 1) == 1
            alice_jobs = [j["id"] for j in await a.call("core.get_jobs")]
        assert alice_jobs
        # Rename her, and give her old name to a new administrator.
        await admin.call("user.update", uid, {"username": alice + "x"})
        await make_user(admin, alice, admin=True)
        async with raw(server.ws_url) as k:
            assert await k.call("auth.login_with_api_key", key["key"]) is True
            me = await k.call("auth.me")
            assert (me["username"], me["admin"], me["id"]) == (alice + "x", False, uid)
            err = await k.error("user.query")
            assert err["data"]["errname"] == "EACCES"
        async with raw(server.ws_url, alice, PASSWORD) as new:
            # An administrator sees every job, but none of the old jobs are now "hers".
            mine = await new.call("core.get_jobs", [["id", "in", alice_jobs]])
            assert {j["credentials"]["data"]["username"] for j in mine} == {alice}
        async with raw(server.ws_url, alice + "x", PASSWORD) as old:
            still = await old.call("core.get_jobs", [["id", "in", alice_jobs]])
            assert sorted(j["id"] for j in still) == sorted(alice_jobs)


async def test_the_last_administrator_cannot_be_locked_demoted_or_deleted(
    make_server: Any,
) -> None:
    proc = make_server()
    async with raw(proc.ws_url, "root", proc.password) as admin:
        for change in ({"locked": True}, {"admin": False}):
            err = await admin.error("user.update", 1, change)
            assert err["data"]["errname"] == "EPERM", err
            assert "administrator" in err["data"]["reason"]
        err = await admin.error("user.delete", 1)
        assert err["data"]["errname"] == "EPERM"
        other = await make_user(admin, "second", admin=True)
        assert await admin.call("user.update", 1, {"admin": False})
        # Root's own session is no longer an administrator's from its next call.
        err = await admin.error("user.update", other, {"locked": True})
        assert err["data"]["errname"] == "EACCES"
    async with raw(proc.ws_url, "second", PASSWORD) as second:
        err = await second.error("user.update", other, {"locked": True})
        assert err["data"]["errname"] == "EPERM"
    proc.restart()
    async with raw(proc.ws_url, "second", PASSWORD) as second:
        assert (await second.call("auth.me"))["admin"] is True


async def test_an_expiring_key_ends_its_session_when_it_expires(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        expires = int((time.time() + 2) * 1000)
        key = await admin.call("api_key.create", {"name": name("exp"), "expires": expires})
    async with raw(server.ws_url) as k:
        assert await k.call("auth.login_with_api_key", key["key"]) is True
        token = await k.call("auth.generate_token", 86400)
        await k.call("core.subscribe", "core.get_jobs")
        # The session ends when the key expires (the server's timer, not a poll by us).
        notice = await k.notification(lambda n: n["method"] == "notify_unsubscribed", 30)
        assert "revoked" in notice["params"]["error"]["reason"]
        err = await k.error("core.get_jobs")
        assert err["data"]["errname"] == "ENOTAUTHENTICATED"
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login_with_token", token) is False
