"""What TrueNAS's own client (truenas_api_client) and its midclt do on the wire, replayed
frame by frame: its package is not on PyPI, so this test follows its source's behaviour.

The client sends ``core.set_options`` first, subscribes to ``core.get_jobs`` before every
call (a refusal with errno 207 is ignored), logs in with ``auth.login_ex``, learns a job's id
from the first ``core.get_jobs`` event whose ``fields.message_ids`` holds its call id, and
finishes the job on the CHANGED event with an ended state (not on the reply).
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

ENDED = ("SUCCESS", "FAILED", "ABORTED")
ERROR_DATA_KEYS = {"error", "errname", "reason", "extra", "trace"}


async def tn_call(c: Raw, method: str, *params: Any) -> dict[str, Any]:
    call_id = str(uuid.uuid4())
    await c.send({"jsonrpc": "2.0", "method": method, "id": call_id, "params": list(params)})
    return await c.reply(call_id)


async def handshake(c: Raw) -> None:
    reply = await tn_call(
        c,
        "core.set_options",
        {"legacy_jobs": False, "private_methods": False, "py_exceptions": False},
    )
    assert reply["result"]["legacy_jobs"] is False


async def silent_subscribe(c: Raw) -> str | None:
    reply = await tn_call(c, "core.subscribe", "core.get_jobs")
    if "error" in reply:
        err = reply["error"]
        assert err["code"] == -32001 and set(err["data"]) >= ERROR_DATA_KEYS
        assert err["data"]["error"] == 207  # the only refusal the client ignores
        return None
    sub: str = reply["result"]
    assert isinstance(sub, str)
    return sub


async def job_call(c: Raw, method: str, *params: Any) -> dict[str, Any]:
    """Follow the job as the client does; return the job dict it would hold at the end."""
    call_id = str(uuid.uuid4())
    await c.send({"jsonrpc": "2.0", "method": method, "id": call_id, "params": list(params)})
    job_id = None
    job: dict[str, Any] = {}
    while True:
        n = await c.notification()
        p = n["params"]
        assert n["method"] == "collection_update" and p["collection"] == "core.get_jobs"
        if p["msg"] not in ("added", "changed"):
            continue
        fields = p["fields"]
        assert isinstance(fields["message_ids"], list)  # read on every event
        assert p["id"] == fields["id"]
        if job_id is None and call_id in fields["message_ids"]:
            job_id = p["id"]
        if p["id"] != job_id:
            continue
        job.update(fields)
        if p["msg"] == "changed" and job["state"] in ENDED:
            break
    assert job_id is not None
    # The reply comes after; the client has already unregistered the call and ignores it.
    reply = await c.reply(call_id)
    assert ("result" in reply) == (job["state"] == "SUCCESS")
    return job


async def test_password_login_jobs_and_errors(server: ServerProc) -> None:
    async with raw(server.ws_url) as c:
        await handshake(c)
        assert await silent_subscribe(c) is None
        reply = await tn_call(
            c,
            "auth.login_ex",
            {"mechanism": "PASSWORD_PLAIN", "username": "root", "password": server.password},
        )
        assert reply["result"]["response_type"] == "SUCCESS"
        assert await silent_subscribe(c) is not None

        job = await job_call(c, "test.progress", 5)
        assert job["state"] == "SUCCESS" and job["result"] == 5
        assert job["progress"]["percent"] == 100

        job = await job_call(c, "test.fail", "boom")
        assert job["state"] == "FAILED" and job["error"] == "boom"
        assert {"type", "extra", "repr"} <= set(job["exc_info"])
        assert job["exception"].splitlines()[-1]

        job = await job_call(c, "filesystem.copy", "/etc/passwd", "/tmp/x")
        assert job["exc_info"]["type"] == "VALIDATION"
        assert job["exc_info"]["extra"][0][0] == "src"

        err = (await tn_call(c, "no.such_method"))["error"]
        assert err["code"] == -32601 and err["message"] == "Method does not exist"
        err = (await tn_call(c, "test.subtract", "a", 1))["error"]
        assert err["code"] == -32602
        assert all(len(e) == 3 for e in err["data"]["extra"])
        err = (await tn_call(c, "core.job_abort", 10**9))["error"]
        assert err["code"] == -32001 and set(err["data"]) == ERROR_DATA_KEYS
        assert err["data"]["trace"] is None


async def test_api_key_plain_login_and_legacy_jobs(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as admin:
        key = (await admin.call("api_key.create", {"name": "midclt"}))["key"]
    async with raw(server.ws_url) as c:
        await handshake(c)
        # midclt --plain: auth.mechanism_choices, then auth.login_with_api_key [key].
        choices = (await tn_call(c, "auth.mechanism_choices"))["result"]
        assert "API_KEY_PLAIN" in choices
        assert (await tn_call(c, "auth.login_with_api_key", key))["result"] is True
        # The older client: legacy jobs answer with the id, then it follows the events.
        await tn_call(c, "core.set_options", {"legacy_jobs": True})
        assert await silent_subscribe(c) is not None
        reply = await tn_call(c, "test.progress", 3)
        job_id = reply["result"]
        state = None
        while state not in ENDED:
            n = await c.notification(lambda n: n["params"]["id"] == job_id)
            state = n["params"]["fields"]["state"]
        assert state == "SUCCESS"


async def test_subscriber_callbacks_get_collection_updates(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await handshake(c)
        sub = (await tn_call(c, "core.subscribe", "*"))["result"]
        await tn_call(c, "test.progress", 2)
        n = await c.notification()
        assert set(n["params"]) >= {"msg", "collection", "id", "fields"}
        assert (await tn_call(c, "core.unsubscribe", sub))["result"] is None
