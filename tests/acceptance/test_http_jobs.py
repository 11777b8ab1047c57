"""http.request over the wire against a real local HTTP server: `_epoch` in the query, form
or JSON body, the HMAC-SHA256 signature of what was sent, non-2xx failing the job, the
answer's status and first 64 KiB in the job's log, the secret nowhere in the record, a
timeout, admins only, and a trigger starting it on a schedule."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from tests.acceptance.test_triggers import until
from tests.serverproc import ServerProc
from tests.wsraw import raw

SECRET = "an-http-job-secret"


@dataclass
class Seen:
    method: str
    query: dict[str, str]
    body: bytes
    headers: dict[str, str]
    raw_query: str


@dataclass
class Receiver:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    status: int = 200
    answer: bytes = b'{"ok": true}\n'
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        raw_query = urlsplit(str(request.rel_url)).query
        self.seen.append(
            Seen(request.method, dict(request.query), body, dict(request.headers), raw_query)
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        # A redirect points back here: had it been followed, the sink would see it twice.
        moved = {"Location": self.url} if 300 <= self.status < 400 else None
        return web.Response(status=self.status, body=self.answer, headers=moved)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    sink = Receiver()
    app = web.Application()
    app.router.add_route("*", "/hook", sink.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sink.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    await web.SockSite(runner, sock).start()
    try:
        yield sink
    finally:
        await runner.cleanup()


def signature(data: bytes) -> str:
    return hmac.new(SECRET.encode(), data, hashlib.sha256).hexdigest()


async def test_query_form_and_json_requests_signed(server: ServerProc) -> None:
    async with receiver() as sink, raw(server.ws_url, "root", server.password) as c:
        before = int(time.time())
        result = await c.call(
            "http.request",
            {
                "url": sink.url + "?fixed=1",
                "params": {"name": "report", "n": 3, "at": "2026-12-06T03:00:00/x@y"},
                "secret": SECRET,
                "headers": ["X-Trace: abc", "Authorization: Bearer token-not-for-records"],
            },
        )
        assert result == {"status": 200, "logged_bytes": len(sink.answer)}
        get = sink.seen[-1]
        assert get.method == "GET" and get.query["name"] == "report" and get.query["n"] == "3"
        assert before <= int(get.query["_epoch"]) <= int(time.time())
        assert get.headers["X-Trace"] == "abc"
        # The signature is over the query it added (karajo signs what it sends), exactly
        # as it arrives (':', '/' and '@' in a value are not requoted on the way out).
        added = get.raw_query.split("&", 1)[1]
        assert get.headers["X-Karajo-Sign"] == signature(added.encode())
        assert get.query["at"] == "2026-12-06T03:00:00/x@y"

        await c.call(
            "http.request",
            {
                "method": "POST",
                "url": sink.url,
                "request_type": "form",
                "params": {"a": "b c"},
                "secret": SECRET,
                "header_sign": "X-Sign",
            },
        )
        form = sink.seen[-1]
        assert dict(parse_qsl(form.body.decode()))["a"] == "b c"
        assert "_epoch" in dict(parse_qsl(form.body.decode()))
        assert form.headers["X-Sign"] == signature(form.body)

        await c.call(
            "http.request",
            {"method": "PUT", "url": sink.url, "request_type": "json", "params": {"x": [1]}},
        )
        put = sink.seen[-1]
        sent = json.loads(put.body)
        assert put.method == "PUT" and sent["x"] == [1] and isinstance(sent["_epoch"], int)
        assert "X-Karajo-Sign" not in put.headers

        # A URL's password and query, header values and the secret are in no record, event,
        # description, log or error.
        await c.call("http.request", {"url": sink.url.replace("//", "//u:url-pass@") + "?k=v1"})
        assert sink.seen[-1].headers["Authorization"].startswith("Basic ")
        jobs = await c.call("core.get_jobs", [["method", "=", "http.request"]])
        text = json.dumps(jobs)
        for secret in (SECRET, "token-not-for-records", "url-pass", "k=v1"):
            assert secret not in text
            for job in jobs:
                log = server.data_dir / "logs" / f"{job['id']}.log"
                assert secret not in log.read_text()


async def test_a_refusal_fails_the_job_with_the_answer_in_its_log(server: ServerProc) -> None:
    async with receiver() as sink, raw(server.ws_url, "root", server.password) as c:
        sink.status = 503
        sink.answer = b"busy\n" + b"y" * 100_000
        err = await c.error("http.request", {"url": sink.url})
        assert "503" in err["data"]["reason"] and err["data"]["errname"] == "EREMOTEIO"
        (job,) = await c.call(
            "core.get_jobs", [["method", "=", "http.request"]], {"order_by": ["-id"], "limit": 1}
        )
        assert job["state"] == "FAILED"
        log = (server.data_dir / "logs" / f"{job['id']}.log").read_bytes()
        assert b"503" in log and b"busy" in log
        assert log.count(b"y") <= 64 * 1024  # only the first 64 KiB of the answer
        # A timeout, an unreachable host and a bad URL: clear errors, the server serves on.
        sink.status, sink.delay = 200, 3.0
        err = await c.error("http.request", {"url": sink.url, "timeout": 0.3})
        assert err["data"]["errname"] == "ETIMEDOUT"
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        err = await c.error("http.request", {"url": f"http://127.0.0.1:{port}/"})
        assert err["data"]["errname"] == "ECONNREFUSED"
        # A redirect is not followed: the signature would go elsewhere.
        sink.delay, sink.status, sink.answer = 0.0, 302, b""
        count = len(sink.seen)
        err = await c.error("http.request", {"url": sink.url, "secret": SECRET})
        assert err["data"]["errname"] == "EREMOTEIO" and "302" in err["data"]["reason"]
        assert len(sink.seen) == count + 1
        err = await c.error("http.request", {"url": "file:///etc/passwd"})
        assert err["code"] == -32602 and "url" in json.dumps(err["data"])
        assert await c.call("core.ping") == "pong"


async def test_only_admins_and_a_trigger_runs_it(server: ServerProc) -> None:
    async with receiver() as sink, raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "user.create",
            {"username": "plain-http", "password": "a-password-long-enough", "allowlist": ["*"]},
        )
        async with raw(server.ws_url, "plain-http", "a-password-long-enough") as user:
            err = await user.error("http.request", {"url": sink.url})
            assert "administrators" in err["data"]["reason"]
        assert sink.seen == []
        trig = await c.call(
            "trigger.create",
            {
                "type": "@every",
                "arguments": "1s",
                "method": "http.request",
                "params": [{"url": sink.url, "secret": SECRET}],
            },
        )
        await until(lambda: _at_least(sink, 2), "two scheduled requests")
        record = await c.call("trigger.get_instance", trig["id"])
        assert SECRET not in json.dumps(record)
        await c.call("trigger.delete", trig["id"])
        assert all(s.headers.get("X-Karajo-Sign") for s in sink.seen)


async def _at_least(sink: Receiver, n: int) -> bool:
    return len(sink.seen) >= n
