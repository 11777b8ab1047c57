"""A client that goes away at any stage frees what it held, the jobs it started still end,
and a reader that does not keep up cannot grow the server's memory.

Each test reads ``core.stats`` (sessions, subscriptions, live jobs, downloads, asyncio tasks,
open fds, rss) from an admin connection of its own before and after, and polls it until the
counts are back to that baseline (a settle loop on an observable, never a fixed sleep).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.multipart import upload_start
from tests.rawws import RawWs, close_code, request_frame, ws_frame
from tests.rpcsync import ENDED, POLL, TIMEOUT, Rpc, wait_ended, wait_for
from tests.serverproc import ServerProc

SETTLE = 10.0
MIB = 1024 * 1024
RSS_SLACK = 50 * MIB
KEYS = ("sessions", "subscriptions", "live_jobs", "downloads", "tasks", "fds")
CURL = shutil.which("curl")


# --- clients -----------------------------------------------------------------------------------


class Watcher:
    """A subscriber that reads everything as it comes, in a thread: each job's latest state,
    how many events and bytes it got, and how its connection ended."""

    def __init__(self, url: str, password: str) -> None:
        self.rpc = Rpc(url, password)
        self.rpc.result("core.subscribe", "core.get_jobs")
        self.states: dict[int, str] = {}
        self.events = 0
        self.bytes = 0
        self.ended: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self.rpc.ws:
                msg = json.loads(frame)
                self.bytes += len(frame)
                if isinstance(msg, dict) and msg.get("method") == "collection_update":
                    self.events += 1
                    state = msg["params"].get("fields", {}).get("state")
                    if state is not None:
                        self.states[msg["params"]["id"]] = state
            self.ended = "closed normally"
        except ConnectionClosed as e:
            self.ended = repr(e)

    def wait_ended(self, ids: list[int], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.states.get(i) in ENDED for i in ids):
            assert self.ended is None, f"the watcher was disconnected: {self.ended}"
            assert time.monotonic() < deadline, {i: self.states.get(i) for i in ids}
            time.sleep(POLL)

    def close(self) -> None:
        self.rpc.close()
        self._thread.join(10)


def drain(raw: RawWs, done: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> int:
    """Read until ``done`` holds for a message; returns the close code if one came first."""
    raw.sock.settimeout(timeout)
    while True:
        opcode, payload = raw.read_frame()
        if opcode == 8:
            code = close_code(payload)
            assert code is not None
            return code
        if opcode == 1 and done(json.loads(payload)):
            return 0


# --- settling ----------------------------------------------------------------------------------


def settle(
    admin: Rpc, baseline: dict[str, Any], keys: tuple[str, ...] = KEYS, timeout: float = SETTLE
) -> dict[str, Any]:
    """Poll core.stats until every count is back to (at most) its baseline."""
    deadline = time.monotonic() + timeout
    while True:
        now = admin.stats()
        if all(now[k] <= baseline[k] for k in keys):
            return now
        if time.monotonic() > deadline:
            grown = {k: (baseline[k], now[k]) for k in keys if now[k] > baseline[k]}
            raise AssertionError(f"not back to baseline within {timeout} s: {grown}")
        time.sleep(POLL)


def report(name: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    keys = (*KEYS, "rss_bytes")
    print(f"{name}: " + ", ".join(f"{k} {before[k]}->{after[k]}" for k in keys))


@pytest.fixture
def admin(server: ServerProc) -> Iterator[Rpc]:
    rpc = Rpc(server.ws_url, server.password)
    yield rpc
    rpc.close()


# --- (a) at every stage of a connection --------------------------------------------------------


def _stage_tcp(raw: RawWs, password: str) -> None:
    pass


def _stage_half_upgrade(raw: RawWs, password: str) -> None:
    request = raw.upgrade_request()
    raw.sock.sendall(request[: len(request) // 2])


def _stage_upgraded(raw: RawWs, password: str) -> None:
    raw.handshake()


def _stage_half_frame(raw: RawWs, password: str) -> None:
    raw.handshake()
    frame = request_frame(1, "test.echo", "x" * 5000)
    raw.sock.sendall(frame[:1000])


def _stage_before_login_reply(raw: RawWs, password: str) -> None:
    raw.handshake().call("auth.login", "root", password)


def _stage_after_call(raw: RawWs, password: str) -> None:
    raw.handshake().login(password).call("core.get_jobs", [], {"limit": 100})


def _stage_after_batch(raw: RawWs, password: str) -> None:
    raw.handshake().login(password)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "core.ping"} for i in range(200)]
    raw.sock.sendall(ws_frame(json.dumps(batch).encode()))


def _stage_after_big_reply(raw: RawWs, password: str) -> None:
    raw.handshake().login(password).call("test.echo", "x" * (4 * MIB))


def _stage_after_subscribe(raw: RawWs, password: str) -> None:
    raw.handshake().login(password)
    raw.reply(raw.call("core.subscribe", "core.get_jobs"))
    raw.call("core.subscribe", "*")


def _stage_after_job_call(raw: RawWs, password: str) -> None:
    raw.handshake().login(password).call("test.progress", 200)


STAGES: dict[str, Callable[[RawWs, str], None]] = {
    "tcp only": _stage_tcp,
    "half an upgrade": _stage_half_upgrade,
    "upgraded": _stage_upgraded,
    "half a frame": _stage_half_frame,
    "login in flight": _stage_before_login_reply,
    "after a call": _stage_after_call,
    "after a batch": _stage_after_batch,
    "4 MiB reply in flight": _stage_after_big_reply,
    "subscribed": _stage_after_subscribe,
    "job call in flight": _stage_after_job_call,
}


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_disconnect_at_every_stage(server: ServerProc, admin: Rpc, stage: str, how: str) -> None:
    before = admin.stats()
    raw = RawWs(server)
    STAGES[stage](raw, server.password)
    if how == "rst":
        raw.reset()
    else:
        raw.close()
    after = settle(admin, before)
    assert admin.result("core.ping") == "pong"
    report(f"(a) {stage}/{how}", before, after)


def test_disconnect_right_after_calls_with_a_normal_client(server: ServerProc, admin: Rpc) -> None:
    """The websockets client sends calls and closes cleanly without reading the replies."""
    before = admin.stats()
    for i in range(20):
        with connect(server.ws_url, max_size=None) as ws:
            login = {"jsonrpc": "2.0", "id": 0, "method": "auth.login"}
            ws.send(json.dumps(login | {"params": ["root", server.password]}))
            for j in range(i):
                ws.send(json.dumps({"jsonrpc": "2.0", "id": j + 1, "method": "core.get_jobs"}))
    after = settle(admin, before)
    report("(a) websockets client", before, after)


# --- (b) while waiting for a job's reply -------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_disconnect_while_waiting_for_a_job(server: ServerProc, admin: Rpc, how: str) -> None:
    before = admin.stats()
    gate = f"disconnect-{uuid.uuid4().hex}"
    raw = RawWs(server).handshake().login(server.password)
    raw.call("test.wait", gate)  # answered only when the job ends

    def running() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = admin.result(
            "core.get_jobs", [["method", "=", "test.wait"], ["arguments.0", "=", gate]]
        )
        return [r for r in found if r["state"] == "RUNNING"]

    (job,) = wait_for(running, "the job to run")
    if how == "rst":
        raw.reset()
    else:
        raw.close()
    # The caller is gone; its job is not.
    during = settle(admin, before, ("sessions", "subscriptions", "fds"))
    assert admin.job(job["id"])["state"] == "RUNNING"
    assert admin.result("test.open_gate", gate) is True
    (record,) = wait_ended(admin, [job["id"]])
    assert record["state"] == "SUCCESS" and record["result"] == gate, record
    after = settle(admin, before)
    report(f"(b) job reply/{how}", before, after)
    assert during["live_jobs"] == before["live_jobs"] + 1


# --- (c) subscribed while events stream --------------------------------------------------------


def test_disconnect_while_events_stream(server: ServerProc, admin: Rpc) -> None:
    before = admin.stats()
    raws = []
    for name in ("core.get_jobs", "*", "core.get_jobs"):
        raw = RawWs(server).handshake().login(server.password)
        assert raw.reply(raw.call("core.subscribe", name))["result"]
        raws.append(raw)
    ids = [admin.start("test.flood", 20000) for _ in range(10)]
    ids += [admin.start("test.progress", 30000) for _ in range(5)]
    for i, raw in enumerate(raws):
        # Progress is flowing when the client vanishes.
        code = drain(raw, lambda m: "progress" in (m.get("params") or {}).get("fields", {}))
        assert code == 0
        if i % 2:
            raw.reset()
        else:
            raw.close()
    during = settle(admin, before, ("sessions", "subscriptions"))
    assert during["live_jobs"] > before["live_jobs"], "the jobs ended before the clients left"
    records = wait_ended(admin, ids)
    assert {r["state"] for r in records} == {"SUCCESS"}
    after = settle(admin, before)
    report("(c) streaming subscribers", before, after)
    assert during["subscriptions"] <= before["subscriptions"]


# --- (d) mid-upload ----------------------------------------------------------------------------


def _received(record: dict[str, Any]) -> int:
    words = (record["progress"]["description"] or "").split()
    return int(words[1]) if len(words) > 1 and words[0] == "Received" else 0


def _spooled_uploads(server: ServerProc) -> set[Path]:
    return set((server.data_dir / "spool").glob("*.upload"))


@pytest.mark.parametrize(
    ("where", "how"),
    [("in the first file", "fin"), ("in the first file", "rst"), ("in the second file", "rst")],
)
def test_disconnect_mid_upload(server: ServerProc, admin: Rpc, where: str, how: str) -> None:
    before = admin.stats()
    spooled = _spooled_uploads(server)
    folder = server.data_dir / "files" / f"up-{uuid.uuid4().hex}"
    folder.mkdir()
    files = [b"z" * 300_000] if where == "in the first file" else [b"a" * 1000, b"b" * 300_000]
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    sock.sendall(upload_start(server, str(folder), files, 5_000_000))
    # The job has started on the last file sent (the count is over all files).
    threshold = sum(len(f) for f in files[:-1]) + 1

    def progressed() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = admin.result(
            "core.get_jobs", [["method", "=", "filesystem.put"], ["arguments.0", "=", str(folder)]]
        )
        return [r for r in found if _received(r) >= threshold]

    (job,) = wait_for(progressed, "the job to receive the bytes sent")
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    (record,) = wait_ended(admin, [job["id"]])
    assert record["state"] == "FAILED" and record["error"] == "Upload interrupted", record
    after = settle(admin, before)
    assert _spooled_uploads(server) - spooled == set()
    assert not any(p.name.startswith(".") for p in folder.iterdir())  # no temporary file left
    report(f"(d) upload {where}/{how}", before, after)


def test_disconnect_before_the_data_part_ends(server: ServerProc, admin: Rpc) -> None:
    before = admin.stats()
    jobs_before = admin.result(
        "core.get_jobs", [["method", "=", "filesystem.put"]], {"count": True}
    )
    request = upload_start(server, "/x", [], 1000)
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    sock.sendall(request[: len(request) - 20])  # the data part is cut short
    sock.close()
    after = settle(admin, before)
    count = admin.result("core.get_jobs", [["method", "=", "filesystem.put"]], {"count": True})
    assert count == jobs_before
    report("(d) upload in the data part", before, after)


def _http_reply(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the response (read to its Content-Length: aiohttp lingers
    before it closes a connection whose request body was not read to the end)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    size = int(fields.get("content-length", 1 << 30))  # none when the server closes after
    while len(body) < size and (chunk := sock.recv(65536)):
        body += chunk
    return int(lines[0].split()[1]), json.loads(body)


@pytest.mark.parametrize("where", ["in a file", "in the data part"])
def test_a_stalled_upload_is_cut_off(make_server: Callable[..., ServerProc], where: str) -> None:
    """A client that stops sending mid-body gets 408 with the reason after the idle timeout;
    a job already started fails with that reason and its spooled bytes are removed."""
    srv = make_server("--upload-idle-timeout", "1")
    admin = Rpc(srv.ws_url, srv.password)
    try:
        before = admin.stats()
        folder = srv.data_dir / "files" / "stalled"
        folder.mkdir(parents=True)
        request = upload_start(srv, str(folder), [b"s" * 100_000], 1_000_000)
        if where == "in the data part":
            request = request[: request.index(b'name="file"') - 40]
        sock = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
        started = time.monotonic()
        sock.sendall(request)
        status, body = _http_reply(sock)
        waited = time.monotonic() - started
        sock.close()
        assert status == 408, body
        assert body["error"] == "Upload stalled: nothing received for 1 s", body
        print(f"stalled {where}: 408 after {waited:.2f} s")
        assert 0.9 < waited < TIMEOUT, waited
        jobs = admin.result("core.get_jobs", [["method", "=", "filesystem.put"]])
        if where == "in a file":
            (record,) = wait_ended(admin, [jobs[0]["id"]])
            assert record["state"] == "FAILED", record
            assert record["error"] == body["error"], record
        else:
            assert jobs == []
        settle(admin, before)
        assert _spooled_uploads(srv) == set()
        assert list(folder.iterdir()) == []
    finally:
        admin.close()


# --- (e) mid-download --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(server: ServerProc) -> Path:
    path = server.data_dir / "files" / "disconnect-64MiB.bin"
    with path.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(MIB))
    return path


def _fetch_then_vanish_curl(server: ServerProc, url: str) -> int:
    assert CURL is not None
    proc = subprocess.Popen([CURL, "-sS", "-N", server.url + url], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(64 * 1024)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    return len(first)


def _fetch_then_vanish_socket(server: ServerProc, url: str) -> int:
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
        got = sock.recv(64 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return len(got)


@pytest.mark.parametrize("client", ["curl", "socket"])
def test_disconnect_mid_download(
    server: ServerProc, admin: Rpc, big_file: Path, client: str
) -> None:
    if client == "curl" and CURL is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    before = admin.stats()
    job_id, url = admin.result("core.download", "filesystem.get", [str(big_file)], "big.bin")
    fetch = _fetch_then_vanish_curl if client == "curl" else _fetch_then_vanish_socket
    assert fetch(server, url) > 0
    started = time.monotonic()
    (record,) = wait_ended(admin, [job_id], timeout=15)
    assert record["state"] in ("FAILED", "ABORTED"), record
    ended_after = time.monotonic() - started
    after = settle(admin, before)
    report(f"(e) download/{client} (job {record['state']} in {ended_after:.2f} s)", before, after)


# --- (f) a slow subscriber ---------------------------------------------------------------------


def _slow_subscriber(srv: ServerProc) -> RawWs:
    """Logged in and subscribed, with a 4 KiB receive buffer; it will not read again."""
    raw = RawWs(srv, rcvbuf=4096).handshake().login(srv.password)
    assert raw.reply(raw.call("core.subscribe", "core.get_jobs"))["result"]
    return raw


def _fill_pipe(admin: Rpc, jobs: int, size: int) -> list[int]:
    """Big events (a job's message is in its arguments, error and exception): they fill the
    slow reader's socket buffers, so what follows waits in the server's outbox."""
    ids = [admin.start("test.fail", f"{i}" + "F" * size) for i in range(jobs)]
    wait_ended(admin, ids)
    return ids


def _read_until_states(
    raw: RawWs, want: dict[int, str], timeout: float = TIMEOUT
) -> tuple[int, int]:
    """Read until every job in ``want`` was seen in its state; (close code or 0, events)."""
    seen: dict[int, str] = {}
    events = 0

    def done(msg: dict[str, Any]) -> bool:
        nonlocal events
        if msg.get("method") == "collection_update":
            events += 1
            state = msg["params"].get("fields", {}).get("state")
            if state is not None:
                seen[msg["params"]["id"]] = state
        return all(seen.get(i) == s for i, s in want.items())

    return drain(raw, done, timeout), events


def test_slow_subscriber_memory_stays_bounded(server: ServerProc, admin: Rpc) -> None:
    before = admin.stats()
    slow = _slow_subscriber(server)
    fast = Watcher(server.ws_url, server.password)
    try:
        fillers = _fill_pipe(admin, 6, 256 * 1024)
        fast.wait_ended(fillers)
        # rss from here, with the slow reader's socket full: what the 50 streaming jobs add
        # (the fillers' own payload and a login's 16 MiB scrypt arena are not a backlog).
        rss_before = admin.stats()["rss_bytes"]
        ids = [admin.start("test.progress", 5000) for _ in range(45)]
        ids += [admin.start("test.flood", 50000) for _ in range(5)]
        peak = rss_before
        while not all(fast.states.get(i) in ENDED for i in ids):
            peak = max(peak, admin.stats()["rss_bytes"])
            assert fast.ended is None, fast.ended
            time.sleep(POLL)
        fast.wait_ended(ids)
        assert all(fast.states[i] == "SUCCESS" for i in ids)
        mid = admin.stats()
        # Far below what 50 jobs published: the slow one holds the latest state per job.
        assert mid["sessions"] == before["sessions"] + 2
        assert mid["rss_bytes"] - rss_before < RSS_SLACK, (rss_before, mid)
        assert peak - rss_before < RSS_SLACK, (rss_before, peak)
        # Not disconnected (it never had 10000 events pending): once it reads, it gets the
        # latest state of every job, and it is still served.
        want = {i: "SUCCESS" for i in ids} | {i: "FAILED" for i in fillers}
        code, slow_events = _read_until_states(slow, want)
        assert code == 0, f"the slow subscriber was closed with {code}"
        assert slow.reply(slow.call("core.ping"))["result"] == "pong"
        assert slow_events < fast.events, (slow_events, fast.events)
        print(
            f"(f) slow subscriber: fast got {fast.events} events ({fast.bytes} bytes), "
            f"slow got {slow_events} events ({slow.received} bytes); rss "
            f"{rss_before // MIB}->{peak // MIB} (peak)->{mid['rss_bytes'] // MIB} MiB"
        )
    finally:
        slow.close()
        fast.close()
    after = settle(admin, before)
    report("(f) slow subscriber", before, after)


def _unread_warnings(srv: ServerProc) -> int:
    return srv.log_text().count("events unread, disconnecting")


def test_slow_subscriber_past_max_pending_events_gets_4008(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server("--max-pending-events", "20")
    admin = Rpc(srv.ws_url, srv.password)
    fast = Watcher(srv.ws_url, srv.password)
    try:
        before = admin.stats()
        # Slow, but never 20 events behind: a few big jobs block its socket, then one job
        # streams thousands of progress updates that coalesce into one pending event.
        calm = _slow_subscriber(srv)
        fillers = _fill_pipe(admin, 4, MIB)
        fast.wait_ended(fillers)  # the fast reader is never 20 events behind either
        progress = admin.start("test.progress", 20000)
        fast.wait_ended([progress])
        assert _unread_warnings(srv) == 0
        code, calm_events = _read_until_states(calm, {progress: "SUCCESS", fillers[-1]: "FAILED"})
        assert code == 0, f"closed with {code} with fewer than 20 events pending"
        assert calm.reply(calm.call("core.ping"))["result"] == "pong"
        calm.close()

        # Slow and more than 20 events behind: 30 jobs after the pipe is full.
        slow = _slow_subscriber(srv)
        fast.wait_ended(_fill_pipe(admin, 4, MIB))
        many = [admin.start("test.fail", f"many {i}") for i in range(30)]
        fast.wait_ended(many)
        wait_for(lambda: _unread_warnings(srv), "the server to give up on the slow reader")
        # Observed: the close only reaches the client after what was already queued for it.
        code, _ = _read_until_states(slow, {many[-1]: "never"}, timeout=TIMEOUT)
        assert code == 4008, code
        slow.close()
        assert fast.ended is None, fast.ended
        assert all(fast.states[i] == "FAILED" for i in many)
        after = settle(admin, before)
        report("(f) max-pending-events 20", before, after)
        print(
            f"(f) calm slow subscriber: {calm_events} events, never disconnected; too slow one: "
            f"4008 after {_unread_warnings(srv)} 'events unread' warnings in the log"
        )
    finally:
        fast.close()
        admin.close()


def test_too_slow_reader_is_let_go_without_reading(
    make_server: Callable[..., ServerProc],
) -> None:
    """Its subscription goes at once; its connection is reset after the grace period."""
    srv = make_server("--max-pending-events", "20", "--slow-reader-grace", "1")
    admin = Rpc(srv.ws_url, srv.password)
    try:
        before = admin.stats()
        slow = _slow_subscriber(srv)
        _fill_pipe(admin, 4, MIB)
        many = [admin.start("test.fail", f"many {i}") for i in range(30)]
        wait_ended(admin, many)
        wait_for(lambda: _unread_warnings(srv), "the server to give up on the slow reader")
        try:
            settle(admin, before, ("sessions", "subscriptions"), timeout=5)
        finally:
            slow.close()
    finally:
        admin.close()


def test_unread_replies_do_not_grow_memory(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server()
    admin = Rpc(srv.ws_url, srv.password)
    slow = RawWs(srv, rcvbuf=4096).handshake().login(srv.password)
    try:
        before = admin.stats()
        frames = b"".join(request_frame(i, "core.ping") for i in range(10_000))
        # The server stops reading once replies wait unread: sending blocks, then times out.
        slow.sock.settimeout(2.0)
        with suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            for _ in range(40):
                slow.sock.sendall(frames)
        # Until the server has read it all: rss past the slack, or steady for a second.
        rss, steady_since, deadline = before["rss_bytes"], time.monotonic(), time.monotonic() + 30
        while time.monotonic() < deadline and rss - before["rss_bytes"] < RSS_SLACK:
            now = admin.stats()["rss_bytes"]
            if abs(now - rss) > MIB:
                rss, steady_since = now, time.monotonic()
            elif time.monotonic() - steady_since > 1.0:
                break
            time.sleep(POLL)
        print(f"(f) 400000 unread replies: rss {before['rss_bytes'] // MIB}->{rss // MIB} MiB")
        assert rss - before["rss_bytes"] < RSS_SLACK, (before["rss_bytes"], rss)
    finally:
        slow.close()
        admin.close()
