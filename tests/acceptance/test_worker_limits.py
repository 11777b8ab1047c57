"""Worker limits per job method over the wire (PROTOCOL.md section 8): worker.config and
worker.update (administrators), a disabled method, a rate per user per hour, attempts
(retried, and not when lowered to one), a timeout, and the refusals."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.test_config_file import hup
from tests.acceptance.test_karajo_config import wait_logged
from tests.acceptance.test_triggers import until
from tests.serverproc import ServerProc
from tests.wsraw import raw

PASSWORD = "worker-password-1"


async def test_config_shows_every_job_method_and_cozys_defaults(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        limits = await c.call("worker.config")
    assert limits["hard.flaky"] == {
        "concurrency": None,
        "max_exec_count": 3,
        "timeout": None,
        "rate": None,
    }
    assert "core.ping" not in limits  # not a job
    assert limits["test.progress"]["max_exec_count"] == 1


async def test_a_disabled_method_is_refused_and_comes_back(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server()
    async with raw(srv.ws_url, "root", srv.password) as c:
        assert (await c.call("worker.update", "test.progress", {"concurrency": 0}))[
            "concurrency"
        ] == 0
        err = await c.error("test.progress", 1)
        assert err["data"]["errname"] == "ENOTSUP" and "disabled" in err["data"]["reason"]
        await c.call("worker.update", "test.progress", {"concurrency": None})
        assert await c.call("test.progress", 1) == 1


async def test_the_rate_counts_per_user(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server()
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("worker.update", "test.progress", {"rate": 2})
        await c.call("user.create", {"username": "bob", "password": PASSWORD, "admin": True})
        assert await c.call("test.progress", 1) == 1
        assert await c.call("test.progress", 1) == 1
        err = await c.error("test.progress", 1)
        assert err["data"]["errname"] == "EBUSY"
        assert "at most 2 calls an hour" in err["data"]["reason"]
    async with raw(srv.ws_url, "bob", PASSWORD) as c:
        assert await c.call("test.progress", 1) == 1  # another user's count


async def test_attempts_are_the_limit_and_retries_follow_it(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server()
    async with raw(srv.ws_url, "root", srv.password) as c:
        # Declared: 3 attempts. Two failures, then the third attempt succeeds.
        assert await c.call("hard.flaky", uuid.uuid4().hex, 2) == 3
        await c.call("worker.update", "hard.flaky", {"max_exec_count": 1})
        err = await c.error("hard.flaky", uuid.uuid4().hex, 1)
        assert "attempt 1 failed" in err["data"]["reason"]
        await c.call("worker.update", "hard.flaky", {"max_exec_count": 5})
        assert await c.call("hard.flaky", uuid.uuid4().hex, 4) == 5


async def test_a_timeout_ends_the_attempt(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server()
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("worker.update", "test.wait", {"timeout": 0.3})
        err = await c.error("test.wait", uuid.uuid4().hex)
        assert err["data"]["errname"] == "ETIMEDOUT", err


async def test_limits_are_for_administrators_and_checked(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        name = "w" + uuid.uuid4().hex[:8]
        await c.call("user.create", {"username": name, "password": PASSWORD, "allowlist": ["*"]})
        bad = await c.error("worker.update", "core.ping", {"rate": 5})
        assert "is not a job method" in bad["data"]["reason"]
        bad = await c.error("worker.update", "test.progress", {"max_exec_count": 0})
        assert bad["data"]["errname"] == "EINVAL"
        bad = await c.error("worker.update", "test.progress", {"priority": 3})
        assert bad["data"]["errname"] == "EINVAL"
    async with raw(server.ws_url, name, PASSWORD) as c:
        refused = await c.error("worker.update", "test.progress", {"rate": 1})
        assert refused["data"]["errname"] == "EACCES"
        assert (await c.error("worker.config"))["data"]["errname"] == "EACCES"


async def test_jobs_d_worker_tables_set_limits_at_start_and_reload(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    folder = data / "jobs.d"
    folder.mkdir(parents=True)
    limits = folder / "limits.toml"
    limits.write_text('[[worker]]\nname = "test.progress"\nrate = 1\n')
    srv = make_server(data_dir=data)
    async with raw(srv.ws_url, "root", srv.password) as c:
        assert (await c.call("worker.config"))["test.progress"]["rate"] == 1
        assert await c.call("test.progress", 1) == 1
        assert (await c.error("test.progress", 1))["data"]["errname"] == "EBUSY"
        # A bad table: its file, line and reason; the limits loaded before stay.
        limits.write_text(
            '[[worker]]\nname = "test.progress"\nrate = 1\n\n[[worker]]\nname = "core.ping"\n'
        )
        hup(srv)
        await wait_logged(srv, f"{limits}:5: worker 'core.ping': 'core.ping' is not a job method")
        limits.write_text('[[worker]]\nname = "test.progress"\nrate = 3\n')
        hup(srv)

        async def reloaded() -> bool:
            return bool((await c.call("worker.config"))["test.progress"]["rate"] == 3)

        await until(reloaded, "the reload")
        assert await c.call("test.progress", 1) == 1
