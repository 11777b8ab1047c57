"""Admission in memory: who counts against the caps and when, addresses as the caps see them,
the descriptor budget, and warnings that recur."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from middlewared.config import ConnectionLimits
from middlewared.http.admission import Admission, Conn, address_key
from middlewared.http.fds import FdBudget, Recurring, count_open


class FakeTransport(asyncio.Transport):
    """What admission reads of a socket: its peer, and whether it was aborted."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.peer = (host, 40000)
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True


def limits(**kw: Any) -> ConnectionLimits:
    base: dict[str, Any] = {
        "max_unauthenticated": 3,
        "max_unauthenticated_per_address": 2,
        "fd_reserve": 0,
    }
    return ConnectionLimits(**(base | kw))


def admission(**kw: Any) -> Admission:
    return Admission(limits(**kw), asyncio.Protocol)


def test_address_keys() -> None:
    assert address_key(("192.0.2.7", 1)) == "192.0.2.7"
    assert address_key(("2001:db8:1:2:3:4:5:6", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert address_key(("2001:db8:1:2:ffff::1", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert address_key(("::ffff:192.0.2.7", 1, 0, 0)) == "192.0.2.7"
    assert address_key("") == "local"
    assert address_key(None) == "local"


async def test_caps_per_address_and_in_all() -> None:
    adm = admission()
    first = [adm.admit(FakeTransport("192.0.2.1")) for _ in range(2)]
    assert all(isinstance(c, Conn) for c in first)
    assert adm.admit(FakeTransport("192.0.2.1")) == (
        "Too many connections not logged in from this address"
    )
    assert isinstance(adm.admit(FakeTransport("192.0.2.2")), Conn)
    assert adm.admit(FakeTransport("192.0.2.3")) == "Too many connections not logged in"
    assert adm.pending == 3


async def test_who_counts_and_when() -> None:
    adm = admission(max_unauthenticated=10)
    transport = FakeTransport("192.0.2.1")
    assert isinstance(adm.admit(transport), Conn)
    assert adm.pending == 1
    adm.request_started(transport)
    assert adm.pending == 0
    lates: list[bool] = []
    logged_in = adm.await_login(transport, lambda: lates.append(True))
    assert adm.pending == 1
    logged_in()
    assert adm.pending == 0
    logged_in()  # a second login (or the end) changes nothing
    assert adm.pending == 0
    adm.closed(transport)
    assert adm.pending == 0 and lates == []
    other = FakeTransport("192.0.2.1")
    adm.admit(other)
    adm.closed(other)
    assert adm.pending == 0


async def test_deadlines() -> None:
    adm = admission(header_timeout_seconds=0.0, login_timeout_seconds=0.0)
    idle = FakeTransport("192.0.2.1")
    adm.admit(idle)
    websocket = FakeTransport("192.0.2.2")
    adm.admit(websocket)
    adm.request_started(websocket)
    late = asyncio.Event()
    adm.await_login(websocket, late.set)
    await asyncio.wait_for(late.wait(), 5)
    assert idle.aborted
    assert not websocket.aborted


async def test_no_descriptor_to_spare_drops_the_connection() -> None:
    budget = FdBudget(reserve=1_000_000_000)
    adm = Admission(limits(), asyncio.Protocol, budget)
    if budget.limit is None:
        pytest.skip("no RLIMIT_NOFILE or fd listing here")
    assert adm.admit(FakeTransport("192.0.2.1")) is None
    assert FdBudget(reserve=1).room()
    assert FdBudget(reserve=0).limit is None  # none kept: nothing to check


def test_open_descriptors_are_counted() -> None:
    before = count_open()
    if before is None:
        pytest.skip("this system does not list open descriptors")
    with open(__file__) as _:
        assert count_open() == before + 1


def test_a_recurring_warning_is_logged_once_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    now = [1000.0]
    recurring = Recurring(interval=60, clock=lambda: now[0])
    assert recurring.warn("accept", "cannot accept: %s", "EMFILE")
    assert not any(recurring.warn("accept", "cannot accept: %s", "EMFILE") for _ in range(100))
    assert recurring.warn("other", "something else")
    now[0] += 61
    assert recurring.warn("accept", "cannot accept: %s", "EMFILE")
    assert [r.getMessage() for r in caplog.records] == [
        "cannot accept: EMFILE",
        "something else",
        "cannot accept: EMFILE (100 more times in the last 61 s)",
    ]
