"""Two-factor logins over the wire in TrueNAS's model (PROTOCOL.md section 12): a user's
secret and its otpauth URI, OTP_REQUIRED then auth.login_ex_continue, the legacy
auth.login with its otp_token, wrong, replayed and out-of-window codes, who may renew whose
secret, keys never asked, midclt, and no secret in logs or records."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyotp
import pytest

from tests.midcltproc import midclt
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

PASSWORD = "alice-password-1"


def code(totp: pyotp.TOTP, steps_ahead: int = 0) -> str:
    return str(totp.at(time.time() + steps_ahead * totp.interval))


async def password_ex(c: Raw, username: str, password: str = PASSWORD) -> dict[str, Any]:
    answer: dict[str, Any] = await c.call(
        "auth.login_ex",
        {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password},
    )
    return answer


async def continue_with(c: Raw, otp: str) -> dict[str, Any]:
    answer: dict[str, Any] = await c.call(
        "auth.login_ex_continue", {"mechanism": "OTP_TOKEN", "otp_token": otp}
    )
    return answer


@pytest.fixture
def two_factor(make_server: Callable[..., ServerProc]) -> Any:
    """A server with two-factor on (window 1) and a user alice who has a secret."""

    async def setup(window: int = 1) -> tuple[ServerProc, str, pyotp.TOTP]:
        server = make_server("--login-max-failures", "1000")
        name = "alice" + uuid.uuid4().hex[:6]
        async with raw(server.ws_url, "root", server.password) as c:
            await c.call("user.create", {"username": name, "password": PASSWORD})
        async with raw(server.ws_url, name, PASSWORD) as c:
            record = await c.call("user.renew_2fa_secret", name, {"interval": 30})
            assert record["twofactor_auth_configured"] is True
            uri = await c.call("user.provisioning_uri", name)
        totp = pyotp.parse_uri(uri)
        assert isinstance(totp, pyotp.TOTP) and uri.startswith("otpauth://totp/")
        async with raw(server.ws_url, "root", server.password) as c:
            config = await c.call("auth.twofactor.update", {"enabled": True, "window": window})
        assert config == {"id": 1, "enabled": True, "window": window, "services": {"ssh": False}}
        return server, name, totp

    return setup


async def test_otp_required_then_continue(two_factor: Any) -> None:
    server, name, totp = await two_factor()
    async with raw(server.ws_url) as c:
        assert await password_ex(c, name) == {"response_type": "OTP_REQUIRED", "username": name}
        # Half logged in is not logged in.
        assert (await c.error("auth.me"))["data"]["errname"] == "ENOTAUTHENTICATED"
        answer = await continue_with(c, code(totp))
        assert answer["response_type"] == "SUCCESS" and answer["user_info"]["pw_name"] == name
        assert (await c.call("auth.me"))["pw_name"] == name


async def test_wrong_replayed_and_late_codes_are_refused(two_factor: Any) -> None:
    server, name, totp = await two_factor()
    async with raw(server.ws_url) as c:
        await password_ex(c, name)
        wrong = f"{(int(code(totp)) + 1) % 1_000_000:06d}"
        assert await continue_with(c, wrong) == {"response_type": "AUTH_ERR"}
        # The half-login ended with the wrong code: the right one no longer finishes it.
        assert await continue_with(c, code(totp)) == {"response_type": "AUTH_ERR"}
        assert (await c.error("auth.me"))["data"]["errname"] == "ENOTAUTHENTICATED"
    used = code(totp)
    async with raw(server.ws_url) as c:
        await password_ex(c, name)
        assert (await continue_with(c, used))["response_type"] == "SUCCESS"
    async with raw(server.ws_url) as c:
        # The same code again: used up.
        await password_ex(c, name)
        assert await continue_with(c, used) == {"response_type": "AUTH_ERR"}
        # A code from outside the window (two steps ahead, the window is one).
        await password_ex(c, name)
        assert await continue_with(c, code(totp, 2)) == {"response_type": "AUTH_ERR"}
        # The next step's code is inside the window and newer than the last used.
        await password_ex(c, name)
        assert (await continue_with(c, code(totp, 1)))["response_type"] == "SUCCESS"
    # A code with no half-login under way.
    async with raw(server.ws_url) as c:
        assert await continue_with(c, code(totp)) == {"response_type": "AUTH_ERR"}


async def test_the_legacy_login_takes_the_code_as_its_third_argument(two_factor: Any) -> None:
    server, name, totp = await two_factor()
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login", name, PASSWORD) is False
        assert await c.call("auth.login", name, PASSWORD, "000000") is False
        otp = code(totp)
        assert await c.call("auth.login", name, PASSWORD, otp) is True
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login", name, PASSWORD, otp) is False  # used up


async def test_keys_users_without_a_secret_and_two_factor_off_are_not_asked(
    two_factor: Any,
) -> None:
    server, name, _ = await two_factor()
    async with raw(server.ws_url, "root", server.password) as c:
        key = await c.call("api_key.create", {"name": "k", "username": name})
        await c.call("user.create", {"username": "plain" + name, "password": PASSWORD})
    async with raw(server.ws_url) as c:
        assert await c.call("auth.login_with_api_key", key["key"]) is True
    async with raw(server.ws_url) as c:
        assert (await password_ex(c, "plain" + name))["response_type"] == "SUCCESS"
    async with raw(server.ws_url, "root", server.password) as c:
        assert (await c.call("auth.twofactor.update", {"enabled": False}))["enabled"] is False
    async with raw(server.ws_url) as c:
        assert (await password_ex(c, name))["response_type"] == "SUCCESS"


async def test_who_may_renew_whose_secret(two_factor: Any) -> None:
    server, name, _ = await two_factor()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("user.create", {"username": "bob" + name, "password": PASSWORD})
        limited = await c.call("api_key.create", {"name": "ping", "allowlist": ["core.ping"]})
    async with raw(server.ws_url, "bob" + name, PASSWORD) as c:
        refused = await c.error("user.renew_2fa_secret", name)
        assert refused["data"]["errname"] == "EACCES", refused
        refused = await c.error("user.provisioning_uri", name)
        assert refused["data"]["errname"] == "EACCES", refused
        assert (await c.call("user.renew_2fa_secret", "bob" + name))["username"] == "bob" + name
    async with raw(server.ws_url) as c:
        # An admin key narrowed to core.ping is not an administrator for this.
        assert await c.call("auth.login_with_api_key", limited["key"]) is True
        assert (await c.error("user.renew_2fa_secret", name))["data"]["errname"] == "EACCES"
        assert (await c.error("auth.twofactor.config"))["data"]["errname"] == "EACCES"
    async with raw(server.ws_url, "root", server.password) as c:
        # An administrator takes the secret away (a lost phone): the password is enough.
        assert (await c.call("user.unset_2fa_secret", name))["twofactor_auth_configured"] is False
        missing = await c.error("user.provisioning_uri", name)
        assert "no two-factor secret" in missing["data"]["reason"]
    async with raw(server.ws_url) as c:
        assert (await password_ex(c, name))["response_type"] == "SUCCESS"


async def test_no_secret_in_records_or_logs(two_factor: Any) -> None:
    server, name, totp = await two_factor()
    async with raw(server.ws_url, "root", server.password) as c:
        (record,) = await c.call("user.query", [["username", "=", name]])
    assert record["twofactor_auth_configured"] is True
    assert totp.secret not in str(record)
    async with raw(server.ws_url) as c:
        await password_ex(c, name)
        otp = code(totp)
        await continue_with(c, otp)
    logged = "".join(server.output)
    assert totp.secret not in logged and otp not in logged


async def test_midclt_takes_the_code(two_factor: Any) -> None:
    server, name, totp = await two_factor()
    base = ["-u", server.ws_url, "-U", name, "-P", PASSWORD]
    without = midclt(*base, "call", "auth.me")
    assert without.returncode == 1 and "login failed" in without.stderr, without
    done = midclt(*base, "--otp-token", code(totp), "call", "auth.me")
    assert done.returncode == 0 and name in done.stdout, done


def on_a_terminal(argv: list[str], prompt: str, typed: str) -> tuple[int, str, str]:
    """Run ``argv`` with a terminal as its stdin, typing ``typed`` there once ``prompt`` is
    on its stderr (typed earlier, it would be flushed when the echo is turned off)."""
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDCLT_", "MIDDLEWARED_"))}
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    assert proc.stderr is not None
    seen = b""
    try:
        while prompt.encode() not in seen:
            ready, _, _ = select.select([proc.stderr], [], [], 60)
            chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
            if not chunk:
                break
            seen += chunk
        os.write(master, typed.encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return proc.returncode, out.decode(), (seen + err).decode()


async def test_midclt_asks_for_the_code_on_a_terminal(two_factor: Any) -> None:
    server, name, totp = await two_factor()
    argv = [sys.executable, "-m", "middlewared_client.midclt", "-u", server.ws_url]
    argv += ["-U", name, "-P", PASSWORD, "call", "auth.me"]
    code_typed = code(totp) + "\n"
    returncode, out, err = await asyncio.to_thread(
        on_a_terminal, argv, "Two-factor code", code_typed
    )
    assert returncode == 0 and name in out, err
    assert "Two-factor code" in err
