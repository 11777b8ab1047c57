"""The Python clients against the real server: login, calls, jobs, events, abort, reconnection."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from middlewared.errors import ENOMETHOD, ENOTAUTHENTICATED
from middlewared_client import (
    AsyncClient,
    CallError,
    Client,
    ConnectFailed,
    ConnectionLost,
    JobProgress,
    LoginFailed,
    MethodNotFound,
    MiddlewareError,
    NotAuthenticated,
    NotConnected,
)
from tests.serverproc import ServerProc

WAIT = 30.0  # upper bound on waits for things that happen in milliseconds


def gate() -> str:
    """A fresh gate name for ``test.wait`` (a job that runs until aborted or its gate opens)."""
    return f"client-{uuid.uuid4().hex}"


def connect(server: ServerProc, **kwargs: Any) -> Any:
    return AsyncClient.connect(server.ws_url, username="root", password=server.password, **kwargs)


class EventLog:
    """Collects a subscription's events; ``wait_for`` waits until one matches."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    def __call__(self, params: dict[str, Any]) -> None:
        self.events.append(params)
        self._arrived.set()

    def of_job(self, job_id: int | None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("id") == job_id]

    async def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                for event in self.events:
                    if match(event):
                        return event
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_job_end(self, job_id: int | None) -> dict[str, Any]:
        def ended(event: dict[str, Any]) -> bool:
            state = event.get("fields", {}).get("state")
            return event.get("id") == job_id and state in ("SUCCESS", "FAILED", "ABORTED")

        return await self.wait_for(ended)


async def test_login_and_ping(server: ServerProc) -> None:
    async with connect(server) as client:
        assert client.connected
        assert await client.call("core.ping") == "pong"
    assert client.closed


async def test_login_later_and_calls_before_login_are_refused(server: ServerProc) -> None:
    async with AsyncClient.connect(server.ws_url) as client:
        assert await client.call("core.ping") == "pong"
        with pytest.raises(NotAuthenticated) as info:
            await client.call("core.get_jobs")
        assert info.value.errno == ENOTAUTHENTICATED
        handle = await client.call("test.progress", 1, job=True)
        with pytest.raises(NotAuthenticated):
            await handle.result(timeout=WAIT)
        await client.login("root", server.password)
        assert isinstance(await client.call("core.get_jobs", [], {"limit": 1}), list)


async def test_unknown_method_raises_method_not_found(server: ServerProc) -> None:
    async with connect(server) as client:
        with pytest.raises(MethodNotFound) as info:
            await client.call("no.such_method")
        assert info.value.errno == ENOMETHOD
        assert info.value.method == "no.such_method"


async def test_connection_refused_raises_connect_failed() -> None:
    with pytest.raises(ConnectFailed) as info:
        await AsyncClient.connect(f"ws://127.0.0.1:{free_port()}/api/current")
    assert info.value.errno == errno.ECONNREFUSED


async def test_job_reports_its_id_progress_and_result(server: ServerProc) -> None:
    async with connect(server) as client:
        progress: list[JobProgress] = []
        handle = await client.call("test.progress", 5, job=True, on_progress=progress.append)
        job_id = await handle.wait_id(timeout=WAIT)
        assert await handle.result(timeout=WAIT) == 5
        assert handle.id == job_id
        assert handle.state == "SUCCESS"
        assert progress and progress[-1].percent == 100
        assert handle.progress.percent == 100
        assert client.jobs_in_flight == 0  # ended calls are forgotten
        [record] = await client.call("core.get_jobs", [["id", "=", job_id]])
        assert record["state"] == "SUCCESS"
        assert record["result"] == 5
        assert handle.call_id in record["message_ids"]


async def test_progress_of_a_running_job_arrives_before_it_ends(server: ServerProc) -> None:
    async with connect(server) as client:
        halfway = asyncio.Event()
        name = gate()

        def on_progress(progress: JobProgress) -> None:
            if progress.percent == 50:
                halfway.set()

        handle = await client.call("test.progress", 4, name, job=True, on_progress=on_progress)
        await asyncio.wait_for(halfway.wait(), WAIT)  # the job waits on its gate at step 2
        assert handle.state == "RUNNING"
        assert handle.progress.description == "step 2 of 4"
        assert not handle.done()
        assert await client.call("test.open_gate", name) is True
        assert await handle.result(timeout=WAIT) == 4
        assert handle.progress.percent == 100


async def test_call_with_on_progress_waits_for_the_result(server: ServerProc) -> None:
    async with connect(server) as client:
        seen: list[JobProgress] = []
        assert await client.call("test.progress", 3, on_progress=seen.append) == 3
        assert seen[-1].percent == 100


async def test_job_method_called_plainly_answers_when_the_job_ends(server: ServerProc) -> None:
    async with connect(server) as client:
        assert await client.call("test.progress", 2) == 2


async def test_concurrent_jobs_get_their_own_ids_and_results(server: ServerProc) -> None:
    async with connect(server) as client:
        handles = [await client.call("test.progress", n, job=True) for n in (1, 2, 3, 4)]
        results = await asyncio.gather(*(h.result(timeout=WAIT) for h in handles))
        assert results == [1, 2, 3, 4]
        assert len({h.id for h in handles}) == 4
        assert client.jobs_in_flight == 0


async def test_failed_job_raises_its_call_error(server: ServerProc) -> None:
    async with connect(server) as client:
        handle = await client.call("test.fail", "it broke", job=True)
        with pytest.raises(CallError) as info:
            await handle.result(timeout=WAIT)
        assert "it broke" in info.value.reason
        assert handle.state == "FAILED"
        assert isinstance(handle.id, int)
        [record] = await client.call("core.get_jobs", [["id", "=", handle.id]])
        assert record["state"] == "FAILED"
        assert "it broke" in record["error"]


async def test_abort_through_the_handle(server: ServerProc) -> None:
    async with connect(server) as client:
        handle = await client.call("test.wait", gate(), job=True)
        job_id = await handle.wait_id(timeout=WAIT)
        await handle.abort()
        with pytest.raises(MiddlewareError):
            await handle.result(timeout=WAIT)
        assert handle.state == "ABORTED"
        [record] = await client.call("core.get_jobs", [["id", "=", job_id]])
        assert record["state"] == "ABORTED"


async def test_subscribe_receives_job_events_until_unsubscribed(server: ServerProc) -> None:
    async with connect(server) as client:
        log = EventLog()
        sub_id = await client.subscribe("core.get_jobs", log)
        handle = await client.call("test.progress", 3, job=True)
        assert await handle.result(timeout=WAIT) == 3
        await log.wait_job_end(handle.id)
        events = log.of_job(handle.id)
        assert events[0]["msg"] == "added"
        assert handle.call_id in events[0]["fields"]["message_ids"]
        assert events[-1]["fields"]["state"] == "SUCCESS"
        assert all(e["collection"] == "core.get_jobs" for e in events)

        await client.unsubscribe(sub_id)
        handle = await client.call("test.progress", 1, job=True)
        assert await handle.result(timeout=WAIT) == 1
        assert log.of_job(handle.id) == []
        assert client.jobs_in_flight == 0


async def test_two_subscribers_of_one_collection_share_it(server: ServerProc) -> None:
    async with connect(server) as client:
        first: list[dict[str, Any]] = []
        second: list[dict[str, Any]] = []
        got_both = asyncio.Event()

        def on_second(params: dict[str, Any]) -> None:
            second.append(params)
            got_both.set()

        one = await client.subscribe("core.get_jobs", first.append)
        await client.subscribe("core.get_jobs", on_second)
        await client.unsubscribe(one)  # the other listener keeps the server subscription
        await client.call("test.progress", 1)
        await asyncio.wait_for(got_both.wait(), WAIT)
        assert first == []


def test_sync_client(server: ServerProc) -> None:
    with Client(server.ws_url, username="root", password=server.password) as client:
        assert client.call("core.ping") == "pong"
        seen: list[JobProgress] = []
        handle = client.call("test.progress", 4, job=True, on_progress=seen.append)
        assert handle.result(timeout=WAIT) == 4
        assert handle.state == "SUCCESS"
        assert isinstance(handle.id, int)
        assert seen[-1].percent == 100

        events: list[dict[str, Any]] = []
        ended = threading.Event()

        def on_event(params: dict[str, Any]) -> None:
            events.append(params)
            if params.get("fields", {}).get("state") == "SUCCESS":
                ended.set()

        client.subscribe("core.get_jobs", on_event)
        assert client.call("test.progress", 1) == 1
        assert ended.wait(WAIT)

        sleeper = client.call("test.wait", gate(), job=True)
        sleeper.wait_id(timeout=WAIT)
        sleeper.abort()
        with pytest.raises(MiddlewareError):
            sleeper.result(timeout=WAIT)
        assert sleeper.state == "ABORTED"

        failing = client.call("test.fail", "sync boom", job=True)
        with pytest.raises(CallError, match="sync boom"):
            failing.result(timeout=WAIT)
        with pytest.raises(MethodNotFound):
            client.call("no.such_method")


def test_bad_password_fails_both_clients(make_server: Callable[..., ServerProc]) -> None:
    """On a server of its own: failed logins are rate limited per address."""
    fresh_server = make_server()
    with pytest.raises(LoginFailed):
        Client(fresh_server.ws_url, username="root", password="wrong")
    asyncio.run(bad_then_good_login(fresh_server))
    with Client(fresh_server.ws_url, username="root", password=fresh_server.password) as client:
        assert client.call("core.ping") == "pong"


async def bad_then_good_login(server: ServerProc) -> None:
    with pytest.raises(LoginFailed):
        await AsyncClient.connect(server.ws_url, username="root", password="wrong")
    async with AsyncClient.connect(server.ws_url) as client:
        with pytest.raises(LoginFailed):
            await client.login("root", "wrong")
        with pytest.raises(NotAuthenticated):
            await client.call("core.get_jobs")
        await client.login("root", server.password)
        assert await client.call("core.ping") == "pong"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def pinned_server(make_server: Callable[..., ServerProc]) -> ServerProc:
    """A server of the test's own on a fixed port, so that a client can reconnect to it."""
    return make_server("--port", str(free_port()))


async def test_reconnect_fails_calls_in_flight_then_logs_in_and_resubscribes(
    pinned_server: ServerProc,
) -> None:
    async with connect(pinned_server, call_timeout=WAIT) as client:
        log = EventLog()
        await client.subscribe("core.get_jobs", log)
        sleeper = await client.call("test.wait", gate(), job=True)
        await sleeper.wait_id(timeout=WAIT)

        pinned_server.kill()
        with pytest.raises(ConnectionLost) as info:
            await sleeper.result(timeout=WAIT)
        assert info.value.errno == errno.ECONNRESET
        assert client.jobs_in_flight == 0
        # Started from a thread, so that the client's attempts meet a closed port a while.
        await asyncio.to_thread(pinned_server.start)

        # The next call waits for the reconnection, made with the same credentials.
        assert isinstance(await client.call("core.get_jobs", [], {"limit": 1}), list)
        handle = await client.call("test.progress", 2, job=True)
        assert await handle.result(timeout=WAIT) == 2
        await log.wait_job_end(handle.id)  # the subscription came back with the connection


async def test_without_reconnect_a_drop_is_final(pinned_server: ServerProc) -> None:
    ended: list[MiddlewareError | None] = []
    async with connect(pinned_server, reconnect=False) as client:
        await client.subscribe("core.get_jobs", lambda params: None, on_end=ended.append)
        sleeper = await client.call("test.wait", gate(), job=True)
        await sleeper.wait_id(timeout=WAIT)
        pinned_server.kill()
        with pytest.raises(ConnectionLost):
            await sleeper.result(timeout=WAIT)
        with pytest.raises(NotConnected):
            await client.call("core.ping")
        assert len(ended) == 1 and isinstance(ended[0], ConnectionLost)
