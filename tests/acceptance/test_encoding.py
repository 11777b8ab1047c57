"""Names that are not UTF-8 (lone surrogates) and values JSON has no form for, on every path
that sends or stores: replies, batches, events, stored jobs and download headers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.rpcsync import Rpc, wait_ended
from tests.serverproc import ServerProc

# os.fsdecode(b"caf\xe9.txt"): what the filesystem hands over for a Latin-1 name.
NAME = "caf\udce9.txt"
ESCAPED = "caf\\udce9.txt"
EXPECTED_RESULT = {"name": NAME, "names": [NAME, "plain"]}
EVENT_TIMEOUT = 15.0


def event(rpc: Rpc, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The params of the next collection_update matching ``predicate`` (replies skipped)."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        msg = json.loads(rpc.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if msg.get("method") == "collection_update" and predicate(msg["params"]):
            params: dict[str, Any] = msg["params"]
            return params


def ended(job_id: int) -> Callable[[dict[str, Any]], bool]:
    def match(params: dict[str, Any]) -> bool:
        fields = params.get("fields") or {}
        return params["id"] == job_id and fields.get("state") in ("SUCCESS", "FAILED")

    return match


@pytest.fixture
def admins(server: ServerProc) -> Iterator[list[Rpc]]:
    """Three admin connections subscribed to core.get_jobs."""
    with ExitStack() as stack:
        conns = []
        for _ in range(3):
            rpc = Rpc(server.ws_url, server.password)
            stack.callback(rpc.close)
            rpc.result("core.subscribe", "core.get_jobs")
            conns.append(rpc)
        yield conns


def still_hear(admins: list[Rpc], caller: Rpc) -> None:
    """Every subscriber still gets the events of a later job."""
    later = caller.start("test.progress", 1)
    for rpc in admins:
        assert event(rpc, ended(later))["fields"]["state"] == "SUCCESS"


def test_listdir_of_a_name_that_is_not_utf8(server: ServerProc) -> None:
    folder = server.data_dir / "files" / "latin1"
    folder.mkdir()
    (folder / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"x")
    with connect(server.ws_url) as ws:
        for i, (method, params) in enumerate(
            [("auth.login", ["root", server.password]), ("filesystem.listdir", [str(folder)])]
        ):
            ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
            text = ws.recv(timeout=10)
        assert isinstance(text, str) and text.isascii() and ESCAPED in text
        assert [e["name"] for e in json.loads(text)["result"]] == [NAME]


def test_a_lone_surrogate_is_answered_and_echoed_back(server: ServerProc) -> None:
    rpc = Rpc(server.ws_url, server.password)
    try:
        assert rpc.result("test.undecodable") == NAME
        # The client sends the escaped name back (json.dumps writes "\udce9"): same string.
        assert rpc.result("test.echo", NAME) == NAME
        assert rpc.result("test.echo", {NAME: [NAME]}) == {NAME: [NAME]}
        assert rpc.result("core.ping") == "pong"
    finally:
        rpc.close()


def test_a_batch_with_lone_surrogates_gets_all_its_replies(server: ServerProc) -> None:
    calls = [
        {"jsonrpc": "2.0", "id": 1, "method": "test.undecodable"},
        {"jsonrpc": "2.0", "id": 2, "method": "core.ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "test.echo", "params": [NAME]},
        {"jsonrpc": "2.0", "id": 4, "method": "test.unencodable"},
    ]
    rpc = Rpc(server.ws_url, server.password)
    try:
        rpc.ws.send(json.dumps(calls))
        replies = {r["id"]: r for r in json.loads(rpc.ws.recv(timeout=10))}
        assert replies[1]["result"] == NAME
        assert replies[2]["result"] == "pong"
        assert replies[3]["result"] == NAME
        assert replies[4]["error"]["code"] == -32603
        assert "cannot be encoded" in replies[4]["error"]["data"]["reason"]
        assert rpc.result("core.ping") == "pong"
    finally:
        rpc.close()


def test_subscribers_hear_a_job_that_ends_with_lone_surrogates(
    server: ServerProc, admins: list[Rpc]
) -> None:
    caller = Rpc(server.ws_url, server.password)
    try:
        assert caller.result("test.undecodable_job") == EXPECTED_RESULT
        job_id = caller.result("core.get_jobs", [["method", "=", "test.undecodable_job"]])[-1]["id"]
        for rpc in admins:
            fields = event(rpc, ended(job_id))["fields"]
            assert (fields["state"], fields["result"]) == ("SUCCESS", EXPECTED_RESULT)
        still_hear(admins, caller)
    finally:
        caller.close()


def test_core_bulk_of_lone_surrogates(server: ServerProc, admins: list[Rpc]) -> None:
    caller = Rpc(server.ws_url, server.password)
    try:
        statuses = caller.result("core.bulk", "test.undecodable", [[], [], []])
        assert [s["result"] for s in statuses] == [NAME] * 3
        bulk_id = caller.result("core.get_jobs", [["method", "=", "core.bulk"]])[-1]["id"]
        for rpc in admins:
            fields = event(rpc, ended(bulk_id))["fields"]
            assert [s["result"] for s in fields["result"]] == [NAME] * 3
        still_hear(admins, caller)
    finally:
        caller.close()


def test_a_job_with_no_json_form_fails_with_the_reason(
    server: ServerProc, admins: list[Rpc]
) -> None:
    caller = Rpc(server.ws_url, server.password)
    try:
        reply = caller.call("test.unencodable_job", "result")
        assert "cannot be encoded as JSON" in reply["error"]["data"]["reason"], reply
        job_id = caller.result("core.get_jobs", [["method", "=", "test.unencodable_job"]])[-1]
        assert job_id["state"] == "FAILED"
        for rpc in admins:
            assert event(rpc, ended(job_id["id"]))["fields"]["state"] == "FAILED"
        # A progress extra with no JSON form: that event is dropped, the job goes on.
        assert caller.result("test.unencodable_job", "progress") is True
        last = caller.result("core.get_jobs", [["method", "=", "test.unencodable_job"]])[-1]
        assert last["state"] == "SUCCESS" and last["progress"]["extra"] is None, last
        for rpc in admins:
            assert event(rpc, ended(last["id"]))["fields"]["state"] == "SUCCESS"
        still_hear(admins, caller)
    finally:
        caller.close()
    assert server.log_text().count("cannot be encoded") <= 3


def test_job_ends_with_lone_surrogates_are_stored(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server()
    rpc = Rpc(srv.ws_url, srv.password)
    ok = rpc.start("test.undecodable_job")
    failed = rpc.start("test.fail", NAME)
    rpc.close()
    rpc = Rpc(srv.ws_url, srv.password)
    try:
        wait_ended(rpc, [ok, failed])
    finally:
        rpc.close()
    srv.restart()
    rpc = Rpc(srv.ws_url, srv.password)
    try:
        done = rpc.job(ok)
        assert (done["state"], done["result"]) == ("SUCCESS", EXPECTED_RESULT), done
        assert done["progress"]["description"] == NAME
        refused = rpc.job(failed)
        assert (refused["state"], refused["error"]) == ("FAILED", NAME), refused
        # Filters carrying such a name find it (in SQL or in Python, the same answer).
        found = rpc.result("core.get_jobs", [["error", "=", NAME]], {"select": ["id"]})
        assert found == [{"id": failed}]
        found = rpc.result("core.get_jobs", [["error", "^", "caf\udce9"]], {"select": ["id"]})
        assert found == [{"id": failed}]
    finally:
        rpc.close()


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_a_download_named_with_a_lone_surrogate(server: ServerProc) -> None:
    assert CURL is not None
    src = server.data_dir / "files" / "named.bin"
    src.write_bytes(b"named")
    rpc = Rpc(server.ws_url, server.password)
    try:
        job_id, url = rpc.result("core.download", "filesystem.get", [str(src)], NAME, True)
        wait_ended(rpc, [job_id])
    finally:
        rpc.close()
    out = subprocess.run(
        [CURL, "-sS", "-D", "-", server.url + url], capture_output=True, check=True, timeout=60
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"named"
    assert b"filename*=UTF-8''caf%EF%BF%BD.txt" in head, head
