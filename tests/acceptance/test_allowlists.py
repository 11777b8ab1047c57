"""A restricted key or user sees and touches only what its allow-list grants, on every core
method every logged-in identity may call (hardening 3); the login throttle counts attempts
made concurrently (hardening 4)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.serverproc import ServerProc
from tests.wsraw import raw


def absent(err: dict[str, Any]) -> bool:
    """The error says the job does not exist (ENOENT, or a validation error naming it)."""
    data = err["data"]
    return data["errname"] == "ENOENT" or any(e[2] == 2 for e in data["extra"] or [])


def gate() -> str:
    return f"acl-{uuid.uuid4().hex[:8]}"


async def test_an_admin_key_limited_to_ping_sees_and_touches_no_job(server: ServerProc) -> None:
    g = gate()
    async with raw(server.ws_url, "root", server.password) as admin:
        await admin.call("core.set_options", {"legacy_jobs": True})
        job = await admin.call("test.wait", g)
        logged = await admin.call("test.logs", 2)
        key = await admin.call("api_key.create", {"name": "ping-only", "allowlist": ["core.ping"]})
        async with raw(server.ws_url) as k:
            assert await k.call("auth.login_with_api_key", key["key"]) is True
            me = await k.call("auth.me")
            assert me["admin"] is True and me["full_admin"] is False
            assert await k.call("core.ping") == "pong"
            assert await k.call("core.get_jobs") == []
            assert await k.call("core.get_jobs", [], {"count": True}) == 0
            # Root's password session's own core.bulk is not the key's either.
            await admin.call("core.bulk", "core.ping", [[]])
            assert await k.call("core.get_jobs") == []
            for method, args in (
                ("core.job_abort", [job]),
                ("core.job_download_logs", [logged]),
                ("core.job_wait", [job]),
            ):
                err = await k.error(method, *args)
                assert absent(err), (method, err)
            err = await k.error("core.download", "filesystem.get", ["/x"], "x")
            assert err["data"]["errname"] == "EACCES"
            statuses = await k.call("core.bulk", "user.query", [[]])
            assert statuses[0]["errno"] == 13 and statuses[0]["result"] is None
            await k.call("core.subscribe", "*")
            token = await k.call("auth.generate_token", 600)
            methods = await k.call("core.get_methods")
            assert "user.query" not in methods and "core.ping" in methods
            # No event about root's jobs is delivered to it.
            await k.call("core.subscribe", "core.get_jobs")
            await admin.call("test.open_gate", g)
            later = await admin.call("test.progress", 2)
            await admin.call("core.job_wait", later)
            # A call of its own after root's jobs ended: nothing of root's came before it.
            assert await k.call("core.ping") == "pong"
            roots = {job, logged, later}
            assert not [n for n in k.notifications if n["params"].get("id") in roots]
        async with raw(server.ws_url) as t:
            assert await t.call("auth.login_with_token", token) is True
            err = await t.error("user.query")
            assert err["data"]["errname"] == "EACCES"
            # Only what this key started itself (its core.bulk and core.job_wait jobs).
            seen = await t.call("core.get_jobs")
            assert {j["credentials"]["data"]["api_key"]["id"] for j in seen} == {key["id"]}
            assert not {j["id"] for j in seen} & roots


async def test_a_restricted_user_sees_own_jobs_of_granted_methods_only(
    server: ServerProc,
) -> None:
    user = f"ru{uuid.uuid4().hex[:6]}"
    async with raw(server.ws_url, "root", server.password) as admin:
        uid = (
            await admin.call(
                "user.create",
                {"username": user, "password": "pw-" + user, "allowlist": ["test.progress"]},
            )
        )["id"]
        async with raw(server.ws_url, user, "pw-" + user) as u:
            assert await u.call("test.progress", 1) == 1
            bulk = await u.call("core.bulk", "test.progress", [[1], [1]])
            assert [s["result"] for s in bulk] == [1, 1]
            mine = await u.call("core.get_jobs")
            assert {j["method"] for j in mine} == {"test.progress", "core.bulk"}
            # Granted no more: its test.progress jobs are no longer shown; core.bulk ones
            # are (every identity may call core.bulk).
            await admin.call("user.update", uid, {"allowlist": ["test.echo"]})
            assert {j["method"] for j in await u.call("core.get_jobs")} == {"core.bulk"}
        async with raw(server.ws_url, user, "pw-" + user) as u:
            statuses = await u.call("core.bulk", "test.progress", [[1]])
            assert statuses[0]["errno"] == 13 and statuses[0]["job_id"] is None


def _try_login(url: str, user: str, password: str) -> int:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    out = subprocess.run(
        [
            *("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"),
            *("-H", f"Authorization: Basic {auth}", "-X", "POST", f"{url}/_upload"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout)


async def test_concurrent_wrong_logins_are_all_counted(make_server: Any) -> None:
    proc = make_server("--login-max-failures", "5", "--login-window", "600")
    async with raw(proc.ws_url) as c:
        # 200 wrong passwords in ONE frame: at most 5 are checked, the rest refused EBUSY.
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "auth.login", "params": ["root", f"w{i}"]}
            for i in range(200)
        ]
        await c.send(batch)
        replies = await c.recv()
        checked = [r for r in replies if r.get("result") is False]
        refused = [r for r in replies if "error" in r]
        assert len(checked) <= 5, len(checked)
        assert len(checked) + len(refused) == 200
        assert {r["error"]["data"]["errname"] for r in refused} == {"EBUSY"}
        # The right password from this address is refused too until the window passes.
        err = await c.error("auth.login", "root", proc.password)
        assert err["data"]["errname"] == "EBUSY"
    # HTTP from another address: 50 concurrent wrong Basic logins, at most 5 checked (401),
    # the others 429 (only the body's first line is awaited; curl sends nothing else).
    other = make_server("--login-max-failures", "5", "--login-window", "600")
    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(lambda i: _try_login(other.url, "root", f"bad{i}"), range(50)))
    assert codes.count(401) <= 5, codes
    assert codes.count(401) + codes.count(429) == 50, codes


async def test_a_login_flood_does_not_stall_file_calls(make_server: Any) -> None:
    proc = make_server("--login-max-failures", "100000")
    async with raw(proc.ws_url, "root", proc.password) as admin, raw(proc.ws_url) as flood:
        calls = [
            {"jsonrpc": "2.0", "id": i, "method": "auth.login", "params": ["root", f"w{i}"]}
            for i in range(200)
        ]
        await flood.send(calls)
        # Password checks run in a pool of their own: the admin's file call answers while
        # the flood is being checked (or refused once the pool's queue is full).
        stat = await asyncio.wait_for(
            admin.call("filesystem.stat", str(proc.data_dir / "files")), 20
        )
        assert stat["type"] == "DIRECTORY"
        replies = await flood.recv(120)
        assert len(replies) == 200
        outcomes = {
            r.get("result", r.get("error", {}).get("data", {}).get("errname")) for r in replies
        }
        assert outcomes <= {False, "EBUSY"}
