"""Triggers over the wire, on the real server and real time (second-scale schedules):
schedules, signed webhooks of every kind with their refusals, debounce with pass_event,
job events, notifiers, snapshots, a file dropped into a root, and kill -9 with fires due."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.serverproc import ServerProc
from tests.sinks import webhook_receiver
from tests.snapshots import save_config, upload_config
from tests.wsraw import Raw, raw

SECRET = "a-webhook-secret-of-enough-length"


async def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "--data-binary", "@-"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    out = await asyncio.to_thread(
        subprocess.run, [*cmd, url], input=body, capture_output=True, timeout=60, check=True
    )
    text, _, code = out.stdout.decode().rpartition("\n")
    return int(code), json.loads(text) if text.strip() else None


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def jobs_of(c: Raw, trigger_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await c.call("trigger.jobs", trigger_id, {})
    return found


async def test_a_schedule_fires_every_second_and_the_collection_says_so(
    server: ServerProc,
) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "trigger.query")
        trig = await c.call(
            "trigger.create",
            {"type": "@every", "arguments": "1s", "method": "test.progress", "params": [1]},
        )
        added = await c.notification(lambda n: n["params"]["collection"] == "trigger.query")
        assert added["params"]["msg"] == "added" and added["params"]["id"] == trig["id"]
        done = await until(lambda: _ended(c, trig["id"], 2), "two runs of the every-second trigger")
        assert all(j["origin"] == f"trigger:{trig['id']}" for j in done)
        assert all(j["credentials"]["type"] == "TRIGGER" for j in done)
        record = await c.call("trigger.get_instance", trig["id"])
        assert record["current_state"]["status"] in ("done", "running")
        await c.call("trigger.pause", trig["id"])
        paused = len(await jobs_of(c, trig["id"]))
        await c.call("trigger.delete", trig["id"])
        removed = await c.notification(lambda n: n["params"]["msg"] == "removed")
        assert removed["params"]["id"] == trig["id"]
        assert (
            len(await c.call("core.get_jobs", [["origin", "=", f"trigger:{trig['id']}"]])) >= paused
        )


async def _ended(c: Raw, trigger_id: int, count: int) -> list[dict[str, Any]] | None:
    jobs = [j for j in await jobs_of(c, trigger_id) if j["state"] == "SUCCESS"]
    return jobs if len(jobs) >= count else None


async def test_webhooks_signed_every_way_and_every_refusal(make_server: Any) -> None:
    proc = make_server("--max-webhook-body", "2000", "--webhook-max-failures", "8")
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    async with raw(proc.ws_url, "root", proc.password) as c:

        def hook(kind: str, **auth: Any) -> Any:
            return c.call(
                "trigger.create",
                {
                    "type": "@webhook",
                    "method": "test.progress",
                    "params": [1],
                    "auth": {"kind": kind, **auth},
                },
            )

        plain = await hook("hmac-sha256", secret=SECRET, header="X-Karajo-Sign", path="deploy/app")
        github = await hook("github", secret=SECRET)
        srht = await hook("sourcehut", public_key=public.decode())
        stamped = await hook("hmac-sha256", secret=SECRET, timestamp_header="X-Stamp", tolerance=60)
        assert plain["auth"]["secret"] == "********"
        body = b'{"ref": "main"}'
        url = f"{proc.url}/hooks"
        code, answer = await post(f"{url}/deploy/app", body, {"X-Karajo-Sign": sign(body)})
        assert code == 202 and isinstance(answer["job_id"], int), answer
        code, answer = await post(f"{url}/{plain['id']}", body, {"X-Karajo-Sign": sign(body)})
        assert code == 202
        code, answer = await post(f"{url}/{plain['id']}", body, {"X-Karajo-Sign": sign(b"x")})
        assert (code, answer["error"]) == (403, "Bad signature")
        code, _ = await post(f"{url}/{plain['id']}", body, {})
        assert code == 403
        gh = {"X-Hub-Signature-256": "sha256=" + sign(body)}
        assert (await post(f"{url}/{github['id']}", body, gh))[0] == 202
        sha1 = {"X-Hub-Signature": "sha1=" + hmac.new(SECRET.encode(), body, "sha1").hexdigest()}
        code, answer = await post(f"{url}/{github['id']}", body, sha1)
        assert code == 403 and "SHA-1" in answer["error"]
        nonce = "12345"
        signature = base64.b64encode(key.sign(body + nonce.encode())).decode()
        srht_headers = {"X-Payload-Signature": signature, "X-Payload-Nonce": nonce}
        assert (await post(f"{url}/{srht['id']}", body, srht_headers))[0] == 202
        bad = {"X-Payload-Signature": signature, "X-Payload-Nonce": "54321"}
        assert (await post(f"{url}/{srht['id']}", body, bad))[0] == 403
        now = str(int(time.time()))
        signed = {"X-Stamp": now, "X-Middlewared-Sign": sign(f"{now}.".encode() + body)}
        assert (await post(f"{url}/{stamped['id']}", body, signed))[0] == 202
        code, answer = await post(f"{url}/{stamped['id']}", body, signed)
        assert code == 403 and "replayed" in answer["error"]
        old = str(int(time.time()) - 3600)
        stale = {"X-Stamp": old, "X-Middlewared-Sign": sign(f"{old}.".encode() + body)}
        code, answer = await post(f"{url}/{stamped['id']}", body, stale)
        assert code == 403 and "Stale" in answer["error"]
        assert (await post(f"{url}/999999", body, {}))[0] == 404
        big = b"x" * 3000
        assert (await post(f"{url}/{plain['id']}", big, {"X-Karajo-Sign": sign(big)}))[0] == 413
        await c.call("trigger.pause", plain["id"])
        code, answer = await post(f"{url}/{plain['id']}", body, {"X-Karajo-Sign": sign(body)})
        assert code == 409 and "paused" in answer["error"]
        # Failed signatures from this address: past --webhook-max-failures, 429 for all.
        for _ in range(8):
            await post(f"{url}/{github['id']}", body, {"X-Hub-Signature-256": "sha256=00"})
        code, answer = await post(f"{url}/{github['id']}", body, gh)
        assert code == 429, answer
        # Unsigned webhooks need the server's consent.
        err = await c.error(
            "trigger.create",
            {
                "type": "@webhook",
                "method": "test.progress",
                "params": [1],
                "auth": {"kind": "none"},
            },
        )
        assert err["code"] == -32602 and "allow-unsigned" in err["data"]["reason"]
        assert SECRET not in proc.log_text()


async def test_a_debounced_webhook_passes_every_request(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        trig = await c.call(
            "trigger.create",
            {
                "type": "@webhook",
                "method": "test.echo_job",
                "params": [],
                "auth": {"kind": "hmac-sha256", "secret": SECRET},
                "debounce": "2s",
                "pass_event": True,
            },
        )
        url = f"{server.url}/hooks/{trig['id']}"
        for i in range(3):
            body = json.dumps({"n": i}).encode()
            code, answer = await post(url, body, {"X-Middlewared-Sign": sign(body)})
            assert code == 202 and answer["debounced"] is True, answer
        (job,) = await until(lambda: _ended(c, trig["id"], 1), "the window to close")
        passed = job["result"]
        assert passed["trigger_id"] == trig["id"]
        assert [e["body"] for e in passed["events"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert len(await jobs_of(c, trig["id"])) == 1


async def test_a_job_event_fires_a_trigger_that_notifies(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c, webhook_receiver(SECRET) as sink:
        name = f"hook-{uuid.uuid4().hex[:6]}"
        await c.call(
            "notifier.create", {"name": name, "kind": "webhook", "url": sink.url, "secret": SECRET}
        )
        tag = uuid.uuid4().hex
        trig = await c.call(
            "trigger.create",
            {
                "type": "@event",
                "arguments": f"core.get_jobs:UPDATED:{tag}:arguments.0",
                "method": "test.progress",
                "params": [2],
                "notify_on_success": [name],
            },
        )
        await c.call("test.echo_job", tag)  # its events carry the tag: the trigger fires once
        (job,) = await until(lambda: _ended(c, trig["id"], 1), "the event trigger's job")
        body, signed, _ = await sink.next_request()
        assert signed and json.loads(body)["id"] == job["id"]


async def test_triggers_are_in_snapshots(make_server: Any, tmp_path: Path) -> None:
    proc = make_server()
    backup = tmp_path / "b.db"
    async with raw(proc.ws_url, "root", proc.password) as c:
        trig = await c.call(
            "trigger.create",
            {"type": "@cron", "arguments": "0 3 * * *", "method": "test.progress", "params": [1]},
        )
        await save_config(c, proc, backup)
        await c.call("trigger.delete", trig["id"])
        await upload_config(c, proc, backup)
    proc.restart()
    async with raw(proc.ws_url, "root", proc.password) as c:
        (back,) = await c.call("trigger.query", [["id", "=", trig["id"]]])
        assert back["arguments"] == "0 3 * * *" and back["next_run"] is not None


async def test_a_file_dropped_into_a_root_starts_a_job(server: ServerProc, tmp_path: Path) -> None:
    root = server.data_dir / "files" / f"drop-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    async with raw(server.ws_url, "root", server.password) as c:
        trig = await c.call(
            "trigger.create",
            {
                "type": "@event",
                "arguments": "filesystem.files:CREATED:text/csv:mime",
                "method": "test.echo_job",
                "params": [],
                "pass_event": True,
            },
        )
        target = root / "report.csv"
        code = f"open({str(target)!r}, 'w').write('a,b\\n')"
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], check=True)
        jobs = await until(lambda: _ended(c, trig["id"], 1), "a job for the dropped file")
        events = jobs[0]["result"]["events"]
        assert any(e["id"] == str(target) for e in events)
        await c.call("trigger.delete", trig["id"])


async def test_kill_9_with_fires_due_loses_and_doubles_nothing(make_server: Any) -> None:
    proc = make_server()
    async with raw(proc.ws_url, "root", proc.password) as c:
        every = await c.call(
            "trigger.create",
            {"type": "@every", "arguments": "1s", "method": "test.progress", "params": [1]},
        )
        window = await c.call(
            "trigger.create",
            {
                "type": "@webhook",
                "method": "test.echo_job",
                "params": [],
                "auth": {"kind": "hmac-sha256", "secret": SECRET},
                "debounce": "3s",
                "pass_event": True,
            },
        )
        await until(lambda: _ended(c, every["id"], 2), "two fires before the kill")
        body = b'{"kept": true}'
        code, _ = await post(
            f"{proc.url}/hooks/{window['id']}", body, {"X-Middlewared-Sign": sign(body)}
        )
        assert code == 202
    proc.kill()  # SIGKILL
    proc.output.clear()
    proc.start()
    async with raw(proc.ws_url, "root", proc.password) as c:
        # The window opened before the kill fires after the restart, with its event.
        (job,) = await until(lambda: _ended(c, window["id"], 1), "the debounce window")
        assert job["result"]["events"][0]["body"] == {"kept": True}
        await until(lambda: _ended(c, every["id"], 4), "fires after the restart")
        await c.call("trigger.pause", every["id"])
        jobs = await jobs_of(c, every["id"])
        ids = [j["id"] for j in jobs]
        assert len(ids) == len(set(ids))
        starts = sorted(j["time_started"]["$date"] for j in jobs)
        # One job per due second at most: no fire ran twice.
        assert all(b - a >= 500 for a, b in itertools.pairwise(starts)), starts
