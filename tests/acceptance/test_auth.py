"""Authentication and permissions over the wire: every refusal, users, keys, tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

PUBLIC = {
    "core.ping",
    "core.set_options",
    "auth.login",
    "auth.login_with_api_key",
    "auth.login_with_token",
    "auth.mechanism_choices",
    "auth.login_ex",
    "auth.login_ex_continue",
}


async def test_every_method_refuses_before_login(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        methods = await admin.call("core.get_methods")
    assert {"core.get_jobs", "filesystem.copy", "user.create"} <= set(methods)
    assert {name for name, m in methods.items() if m["public"]} == PUBLIC
    async with raw(server.ws_url) as c:
        for name in methods:
            if name in PUBLIC:
                continue
            err = await c.error(name)
            assert err["code"] == -32001, name
            assert err["data"]["error"] == 207, name
        # Unknown methods look the same before login: nothing is revealed.
        err = await c.error("no.such_method")
        assert err["data"]["error"] == 207
        # Subscribing before login is refused the way TrueNAS's client expects.
        err = await c.error("core.subscribe", "core.get_jobs")
        assert (err["code"], err["data"]["error"]) == (-32001, 207)


async def test_wrong_password_and_unknown_user(server: ServerProc) -> None:
    async with raw(server.ws_url, local_addr=("127.0.0.3", 0)) as c:
        assert await c.call("auth.login", "root", "wrong") is False
        assert await c.call("auth.login", "nobody", "wrong") is False
        assert await c.call("auth.login_with_api_key", "1-notakey") is False
        assert await c.call("auth.login_with_token", "bogus") is False
        res = await c.call(
            "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "root", "password": "nope"}
        )
        assert res == {"response_type": "AUTH_ERR"}
        err = await c.error("core.get_jobs")
        assert err["data"]["error"] == 207


async def test_failed_logins_are_throttled_per_address(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server("--login-max-failures", "3", "--login-window", "600")
    async with raw(srv.ws_url, local_addr=("127.0.0.4", 0)) as c:
        # Successful logins do not count.
        for _ in range(5):
            assert await c.call("auth.login", "root", srv.password) is True
        for _ in range(3):
            assert await c.call("auth.login", "root", "bad") is False
        err = await c.error("auth.login", "root", srv.password)
        assert err["data"]["errname"] == "EBUSY"
        err = await c.error(
            "auth.login_ex",
            {"mechanism": "PASSWORD_PLAIN", "username": "root", "password": srv.password},
        )
        assert err["data"]["errname"] == "EBUSY"
    # Another address is not affected.
    async with raw(srv.ws_url, local_addr=("127.0.0.5", 0)) as c:
        assert await c.call("auth.login", "root", srv.password) is True


async def test_login_ex_me_logout(server: ServerProc) -> None:
    async with raw(server.ws_url) as c:
        assert await c.call("auth.mechanism_choices") == [
            "PASSWORD_PLAIN",
            "API_KEY_PLAIN",
            "TOKEN_PLAIN",
            "SCRAM",
        ]
        res = await c.call(
            "auth.login_ex",
            {"mechanism": "PASSWORD_PLAIN", "username": "root", "password": server.password},
        )
        assert res["response_type"] == "SUCCESS"
        assert res["user_info"]["username"] == "root"
        me = await c.call("auth.me")
        assert me["username"] == "root" and me["admin"] is True
        assert me["credentials"]["type"] == "LOGIN_PASSWORD"
        assert await c.call("auth.logout") is True
        err = await c.error("auth.me")
        assert err["data"]["error"] == 207


async def test_tokens(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        once = await c.call("auth.generate_token", 600, True)
        many = await c.call("auth.generate_token", 600, False)
        short = await c.call("auth.generate_token", 1)
    for token in (once, many, many):
        async with raw(server.ws_url) as c:
            assert await c.call("auth.login_with_token", token) is True
            assert (await c.call("auth.me"))["credentials"]["type"] == "TOKEN"
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login_with_token", once) is False
        res = await c.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": many})
        assert res["response_type"] == "SUCCESS"
    # Its one-second lifetime passes: poll until it is refused (the fake-clock unit tests in
    # tests/unit/test_auth_parts.py pin the exact expiry and the cap on minted tokens).
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        async with raw(server.ws_url) as c:
            if await c.call("auth.login_with_token", short) is False:
                break
        assert asyncio.get_running_loop().time() < deadline, "the token never expired"
        await asyncio.sleep(0.1)


async def make_user(admin: Raw, name: str, allowlist: list[str]) -> int:
    user = await admin.call(
        "user.create", {"username": name, "password": "pass-" + name * 2, "allowlist": allowlist}
    )
    assert "pass-" not in str(user) and "password_hash" not in user
    uid: int = user["id"]
    return uid


async def test_allowlist_calls_queries_and_events(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        await make_user(admin, "alice", ["test.subtract", "test.progress"])
        await make_user(admin, "bob", ["test.progress"])
        await admin.call("core.subscribe", "core.get_jobs")
        async with (
            raw(server.ws_url, "alice", "pass-alicealice") as alice,
            raw(server.ws_url, "bob", "pass-bobbob") as bob,
        ):
            assert await alice.call("test.subtract", 3, 1) == 2
            err = await bob.error("test.subtract", 3, 1)
            assert (err["code"], err["data"]["errname"]) == (-32001, "EACCES")
            err = await alice.error("user.query")
            assert err["data"]["errname"] == "EACCES"
            err = await alice.error("filesystem.listdir", "/")
            assert err["data"]["errname"] == "EACCES"
            await bob.call("core.subscribe", "core.get_jobs")
            await alice.call("core.subscribe", "core.get_jobs")
            a_job = await alice.call(
                "core.set_options", {"legacy_jobs": True}
            ) and await alice.call("test.progress", 2)
            await alice.notification(
                lambda n: n["params"]["id"] == a_job and n["params"]["fields"]["state"] == "SUCCESS"
            )
            await admin.notification(
                lambda n: n["params"]["id"] == a_job and n["params"]["fields"]["state"] == "SUCCESS"
            )
            b_call = await bob.request("test.progress", 2)
            await bob.reply(b_call)
            # Bob saw only his own job's events and sees only his own jobs.
            assert all(
                n["params"]["fields"]["credentials"]["data"]["username"] == "bob"
                for n in bob.notifications
            )
            assert bob.notifications
            bob_jobs = await bob.call("core.get_jobs")
            assert bob_jobs and {j["credentials"]["data"]["username"] for j in bob_jobs} == {"bob"}
            err = await bob.error("core.job_abort", a_job)
            assert err["data"]["errname"] in ("ENOENT", "EACCES")
            assert await bob.call("core.get_jobs", [["id", "=", a_job]]) == []
            methods = await bob.call("core.get_methods")
            assert "test.progress" in methods and "test.subtract" not in methods
            assert "user.create" not in methods


async def test_api_keys(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        key = await admin.call("api_key.create", {"name": "ci", "allowlist": ["test.*"]})
        assert key["key"].startswith(f"{key['id']}-")
        listed = await admin.call("api_key.query", [["id", "=", key["id"]]])
        assert "key" not in listed[0] and "key_hash" not in listed[0]
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login_with_api_key", key["key"]) is True
        assert await c.call("test.subtract", 2, 1) == 1
        err = await c.error("user.query")
        assert err["data"]["errname"] == "EACCES"
        err = await c.error("filesystem.listdir", "/")
        assert err["data"]["errname"] == "EACCES"
    async with raw(server.ws_url) as c:
        res = await c.call(
            "auth.login_ex",
            {"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": key["key"]},
        )
        assert res["response_type"] == "SUCCESS"
        res = await c.call(
            "auth.login_ex",
            {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": key["key"]},
        )
        assert res["response_type"] == "AUTH_ERR"
    async with raw(server.ws_url, "root", server.password) as admin:
        assert await admin.call("api_key.delete", key["id"]) is True
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login_with_api_key", key["key"]) is False
    assert key["key"].split("-", 1)[1] not in server.log_text()


async def test_user_crud_and_validation(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        uid = await make_user(admin, "carol", [])
        err = await admin.error("user.create", {"username": "carol", "password": "x" * 10})
        assert err["code"] == -32602 and err["data"]["extra"][0][0] == "username"
        err = await admin.error("user.create", {"username": "Bad Name!", "password": "x" * 10})
        assert err["code"] == -32602
        updated = await admin.call(
            "user.update", uid, {"allowlist": ["core.*"], "password": "new-password"}
        )
        assert updated["allowlist"] == ["core.*"]
        async with raw(server.ws_url, "carol", "new-password") as carol:
            assert await carol.call("core.ping") == "pong"
        assert await admin.call("user.delete", uid) is True
        assert await admin.call("user.query", [["username", "=", "carol"]]) == []
        err = await admin.error("user.delete", 1)
        assert "last administrator" in err["data"]["reason"]
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login", "carol", "new-password") is False
    assert "new-password" not in server.log_text()
