"""karajo's configuration over the wire (``--karajo-config``): the example in ``examples/``
loading as it is, each section kind running against real receivers (an aiohttp server, an
aiosmtpd server with STARTTLS), every webhook kind signed as karajo's callers sign, unknown
keys refusing the start with the file and line, SIGHUP changing and deleting what the file
no longer says (a bad edit changing nothing), ``jobs.d/*.toml`` the same, and the file's
secrets nowhere in logs or query answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.acceptance.test_config_file import hup
from tests.acceptance.test_http_jobs import receiver
from tests.acceptance.test_triggers import post, until
from tests.serverproc import ServerProc
from tests.sinks import make_certificate, smtp_server
from tests.wsraw import Raw, raw

PLUGINS = Path(__file__).parents[1] / "plugins"
EXAMPLE = Path(__file__).parents[2] / "examples" / "karajo.ini"
SECRETS = (
    "change-this-karajo-secret",
    "change-this-smtp-password",
    "change-this-github-secret",
    "change-this-ping-secret",
    "change-this-token",
)


def karajo_sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def declared_triggers(c: Raw) -> dict[str, dict[str, Any]]:
    return {t["declared"]: t for t in await c.call("trigger.query", [["declared", "!=", None]])}


def shape(triggers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a file declares of each trigger (not its state, which firing changes)."""
    return {n: (t["id"], t["type"], t["arguments"], t["params"]) for n, t in triggers.items()}


async def commands(c: Raw) -> dict[str, dict[str, Any]]:
    return {x["name"]: x for x in await c.call("command.query")}


async def finished(c: Raw, trigger_id: int, count: int = 1) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        jobs = await c.call("trigger.jobs", trigger_id, {})
        ended = [j for j in jobs if j["state"] in ("SUCCESS", "FAILED", "ABORTED")]
        return ended if len(ended) >= count else None

    found: list[dict[str, Any]] = await until(done, f"{count} jobs of trigger {trigger_id}")
    return found


async def test_the_example_loads_as_it_is(make_server: Any) -> None:
    # The README quotes the file this test loads.
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    assert f"```ini\n{EXAMPLE.read_text()}```" in readme
    proc = make_server("--karajo-config", str(EXAMPLE))
    async with raw(proc.ws_url, "root", proc.password) as c:
        found = await commands(c)
        assert sorted(found) == ["build", "cleanup", "github-push", "sourcehut-push"]
        build = found["build"]
        assert build["commands"] == [
            'echo "build number $MIDDLEWARED_COUNTER"',
            'test -n "$MIDDLEWARED_FIELDS"',
        ]
        assert build["description"] == "Build <b>the site</b>"
        assert (build["log_retention"], build["notify_on_failure"]) == (10, ["email-to-admin"])
        assert build["declared"] == str(EXAMPLE)
        assert found["cleanup"]["commands"] == ["find . -name '*.tmp' -delete"]
        triggers = await declared_triggers(c)
        assert sorted(triggers) == [
            "karajo/job.http/ping",
            "karajo/job/build/hook",
            "karajo/job/build/timer",
            "karajo/job/cleanup/timer",
            "karajo/job/github-push/hook",
            "karajo/job/sourcehut-push/hook",
        ]
        timer = triggers["karajo/job/build/timer"]
        assert (timer["type"], timer["arguments"]) == ("@schedule", "daily@01:00,13:00")
        assert (timer["method"], timer["params"]) == ("command.run", ["build"])
        # karajo computes schedules in UTC: at 01:00 or 13:00 sharp.
        next_ms = timer["next_run"]["$date"]
        assert next_ms % 3_600_000 == 0 and (next_ms // 3_600_000) % 24 in (1, 13)
        every = triggers["karajo/job/cleanup/timer"]
        assert (every["type"], every["arguments"]) == ("@interval", "10m")
        ping = triggers["karajo/job.http/ping"]
        assert (ping["type"], ping["arguments"], ping["method"]) == (
            "@schedule",
            "hourly@15,45",
            "http.request",
        )
        options = ping["params"][0]
        assert (options["method"], options["request_type"], options["timeout"]) == (
            "POST",
            "json",
            30.0,
        )
        assert options["secret"] == "********"
        (notifier,) = await c.call("notifier.query")
        assert notifier["name"] == "email-to-admin" and notifier["kind"] == "mail"
        assert notifier["to"] == ["admin@example.com", "ops@example.com"]
        assert notifier["smtp"] == {
            "server": "smtps://mail.example.com",
            "from": "karajo@example.com",
            "user": "karajo@example.com",
            "password_set": True,
        }
        hook = triggers["karajo/job/build/hook"]
        assert hook["auth"]["header"] == "X-Karajo-Sign" and hook["auth"]["path"] == "build"

        # The webhook, signed with [karajo]'s secret in X-Karajo-Sign, at /hooks/<path> and at
        # karajo's own URL; the request reaches the command as MIDDLEWARED_FIELDS.
        body = json.dumps({"_karajo_epoch": 1700000000}).encode()
        signed = {"X-Karajo-Sign": karajo_sign(body, "change-this-karajo-secret")}
        code, answer = await post(f"{proc.url}/hooks/build", body, signed)
        assert code == 202, answer
        code, answer = await post(f"{proc.url}/karajo/api/job_exec/run/build", body, signed)
        assert code == 202, answer
        jobs = await finished(c, hook["id"], 2)
        assert {j["state"] for j in jobs} == {"SUCCESS"}, jobs
        logs = await c.call("command.logs", "build")
        assert sorted(r["counter"] for r in logs) == [1, 2]
        text = await c.call("command.log", "build", 1)
        assert "build number 1" in text
        # Unsigned, wrongly signed, or a path karajo's URL does not serve: refused.
        assert (await post(f"{proc.url}/hooks/build", body, {}))[0] == 403
        bad = {"X-Karajo-Sign": karajo_sign(body, "another-secret-entirely")}
        assert (await post(f"{proc.url}/karajo/api/job_exec/run/build", body, bad))[0] == 403
        other = f"{proc.url}/karajo/api/job_exec/run/{hook['id']}"
        assert (await post(other, body, signed))[0] == 404

        # GitHub's signature for auth_kind = github.
        gh_hook = triggers["karajo/job/github-push/hook"]
        gh = {"X-Hub-Signature-256": "sha256=" + karajo_sign(body, "change-this-github-secret")}
        code, answer = await post(f"{proc.url}/hooks/github/push", body, gh)
        assert code == 202, answer
        assert (await post(f"{proc.url}/hooks/github/push", body, signed))[0] == 403
        (gh_job,) = await finished(c, gh_hook["id"])
        assert gh_job["state"] == "SUCCESS"
        # sourcehut: sr.ht's own key signs; a signature of another key is refused.
        key = Ed25519PrivateKey.generate()
        srht = {
            "X-Payload-Nonce": "n1",
            "X-Payload-Signature": base64.b64encode(key.sign(body + b"n1")).decode(),
        }
        code, answer = await post(f"{proc.url}/hooks/srht/push", body, srht)
        assert code == 403 and answer["error"] == "Bad signature"
        assert triggers["karajo/job/sourcehut-push/hook"]["auth"]["kind"] == "sourcehut"

        # What the file declares is changed there, not through the API.
        err = await c.error("command.update", "build", {"commands": ["true"]})
        assert err["data"]["errname"] == "EPERM" and str(EXAMPLE) in err["data"]["reason"]
        assert (await c.error("command.delete", "cleanup"))["data"]["errname"] == "EPERM"
        err = await c.error("notifier.update", notifier["id"], {"to": ["x@example.com"]})
        assert err["data"]["errname"] == "EPERM"
        assert (await c.error("notifier.delete", notifier["id"]))["data"]["errname"] == "EPERM"
        err = await c.error("trigger.delete", timer["id"])
        assert err["data"]["errname"] == "EPERM"
        answers = json.dumps(
            [
                await c.call("command.query"),
                await c.call("trigger.query"),
                await c.call("notifier.query"),
                await c.call("core.get_jobs"),
            ]
        )
    for secret in SECRETS:
        assert secret not in answers, secret
        assert secret not in proc.log_text(), secret
    assert "[karajo] name ignored" in proc.log_text()
    assert "commands: 2 may run at once" in proc.log_text()


def config(mail_port: int, http_url: str, *, extra: str = "") -> str:
    return f"""
[karajo]
secret = a-default-karajo-secret
http_timeout = 20s

[notif "ops"]
kind = email
smtp_server = smtp://127.0.0.1:{mail_port}
smtp_user = karajo
smtp_password = a-smtp-password-here
smtp_insecure = true
from = Karajo <karajo@example.com>
to = Ops <ops@example.com>

[job "ok"]
interval = 5m
command = echo "it went well"
notif_on_success = ops

[job "broken"]
schedule = minutely
command = echo about to fail
command = exit 3
command = echo never here
notif_on_failed = ops

[job.http "ping"]
interval = 1h
http_method = POST
http_url = {http_url}
http_request_type = json
http_header = X-Token: a-header-token
secret = an-http-job-secret
{extra}"""


async def test_each_section_kind_runs(make_server: Any, tmp_path: Path) -> None:
    cert = make_certificate(tmp_path)
    async with (
        smtp_server("STARTTLS", cert, account=("karajo", "a-smtp-password-here")) as mail,
        receiver() as sink,
    ):
        ini = tmp_path / "karajo.ini"
        ini.write_text(config(mail.port, sink.url))
        proc = make_server("--karajo-config", str(ini))
        async with raw(proc.ws_url, "root", proc.password) as c:
            triggers = await declared_triggers(c)
            ok = triggers["karajo/job/ok/timer"]
            await c.call("trigger.launch", ok["id"])
            (job,) = await finished(c, ok["id"])
            assert job["state"] == "SUCCESS"
            message = await mail.next_mail()
            assert message["Subject"] == "ok: #1: SUCCESS"
            assert (message["From"], message["To"]) == ("karajo@example.com", "ops@example.com")
            assert "it went well" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert mail.logins == ["karajo"]

            broken = triggers["karajo/job/broken/timer"]
            await c.call("trigger.launch", broken["id"])
            (job,) = await finished(c, broken["id"])
            assert job["state"] == "FAILED" and "3" in job["error"]
            message = await mail.next_mail()
            assert message["Subject"] == "broken: #1: FAILED"
            body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert "about to fail" in body and "never here" not in body

            ping = triggers["karajo/job.http/ping"]
            assert ping["params"][0]["timeout"] == 20.0  # [karajo] http_timeout
            await c.call("trigger.launch", ping["id"])
            (job,) = await finished(c, ping["id"])
            assert job["state"] == "SUCCESS", job
            (seen,) = sink.seen
            assert seen.method == "POST" and seen.headers["X-Token"] == "a-header-token"
            assert "_epoch" in json.loads(seen.body)
            expected = karajo_sign(seen.body, "an-http-job-secret")
            assert seen.headers["X-Karajo-Sign"] == expected
            answers = json.dumps([await c.call("trigger.query"), await c.call("core.get_jobs")])
    for secret in ("a-smtp-password-here", "an-http-job-secret", "a-header-token"):
        assert secret not in answers
        assert secret not in proc.log_text()


def start(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    ini = tmp_path / f"{name}.ini"
    ini.write_text(text)
    args = ["--data-dir", str(tmp_path / name), "--karajo-config", str(ini)]
    return subprocess.run(
        [sys.executable, "-m", "middlewared", "--port", "0", "--plugins-dir", str(PLUGINS), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_keys_and_bad_values_refuse_the_start(tmp_path: Path) -> None:
    cases = {
        "key": ('[job "x"]\ncommand = true\n\nfoo = 1\n', 4, 'unknown key "foo" in [job "x"]'),
        "section": ('[jobs "x"]\ncommand = true\n', 1, 'unknown section [jobs "x"]'),
        "interval": (
            '[job "x"]\ncommand = true\ninterval = 30s\n',
            3,
            "[job \"x\"]: interval: '30s' is too short: at least 1m",
        ),
        "notif": (
            '[job "x"]\ncommand = true\nnotif_on_failed = nobody\n',
            3,
            'no [notif "nobody"] in this file',
        ),
        "secret": (
            '[job "x"]\ncommand = true\npath = /x\nsecret = s3cr3t\n',
            3,
            "trigger 'karajo/job/x/hook': auth.secret: a hmac-sha256 webhook needs a secret",
        ),
    }
    for name, (text, line, reason) in cases.items():
        done = start(tmp_path, name, text)
        assert done.returncode != 0, name
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"middlewared: {tmp_path / name}.ini:{line}: "), last
        assert reason in last, last
        assert "Traceback" not in done.stderr
        assert "s3cr3t" not in done.stderr


async def wait_logged(proc: ServerProc, text: str) -> None:
    async def seen() -> bool:
        return any(text in line for line in proc.output)

    await until(seen, repr(text))


async def test_sighup_changes_and_deletes_and_a_bad_edit_changes_nothing(
    make_server: Any, tmp_path: Path
) -> None:
    ini = tmp_path / "karajo.ini"
    ini.write_text(config(2525, "http://127.0.0.1:9/x"))
    proc = make_server("--karajo-config", str(ini))
    async with raw(proc.ws_url, "root", proc.password) as c:
        before = await declared_triggers(c)
        (notifier,) = await c.call("notifier.query")
        # "broken" goes, "ok" changes (its command and its timer), "new" comes with a hook,
        # the notifier's recipient changes.
        edited = config(2525, "http://127.0.0.1:9/x").replace(
            'command = echo "it went well"', "command = echo changed"
        )
        edited = edited.replace("to = Ops <ops@example.com>", "to = other@example.com")
        edited = edited.replace("interval = 5m", "schedule = hourly@5")
        start_broken = edited.index('[job "broken"]')
        end_broken = edited.index("[job.http")
        edited = edited[:start_broken] + edited[end_broken:]
        edited += '\n[job "new"]\npath = /new\ncommand = true\n'
        ini.write_text(edited)
        hup(proc)

        async def reloaded() -> dict[str, dict[str, Any]] | None:
            now = await declared_triggers(c)
            return now if "karajo/job/new/hook" in now else None

        after = await until(reloaded, "the reload")
        assert "karajo/job/broken/timer" not in after
        assert after["karajo/job/ok/timer"]["id"] == before["karajo/job/ok/timer"]["id"]
        assert after["karajo/job/ok/timer"]["type"] == "@schedule"
        found = await commands(c)
        assert sorted(found) == ["new", "ok"]
        assert found["ok"]["commands"] == ["echo changed"]
        (changed,) = await c.call("notifier.query")
        assert (changed["id"], changed["to"]) == (notifier["id"], ["other@example.com"])
        assert changed["smtp"]["password_set"] is True
        body = b"{}"
        signed = {"X-Karajo-Sign": karajo_sign(body, "a-default-karajo-secret")}
        assert (await post(f"{proc.url}/hooks/new", body, signed))[0] == 202

        # A bad edit: logged with the file, its line and the reason; nothing moves.
        ini.write_text(edited + '\n[notif "x"]\nkind = sms\n')
        line = len((edited + '\n[notif "x"]\n').splitlines()) + 1
        hup(proc)
        await wait_logged(proc, f'{ini}:{line}: [notif "x"]: kind:')
        assert shape(await declared_triggers(c)) == shape(after)
        assert sorted(await commands(c)) == ["new", "ok"]
        # The file gone from the command line at the next start: what it declared goes.
        proc.stop()
        proc.args = [a for a in proc.args if a not in ("--karajo-config", str(ini))]
        proc.start()
    async with raw(proc.ws_url, "root", proc.password) as c:
        assert await declared_triggers(c) == {}
        assert await c.call("command.query") == []
        assert await c.call("notifier.query") == []


JOBS = """
[[notifier]]
name = "hooks"
kind = "webhook"
url = "http://127.0.0.1:9/notify"
secret = "a-notifier-secret-value"

[[command]]
name = "hello"
commands = ["echo hello from jobs.d"]
notify_on_failure = ["hooks"]

[[trigger]]
name = "hello-hourly"
type = "@cron"
arguments = "0 * * * *"
method = "command.run"
params = ["hello"]
"""


async def test_jobs_d_files_load_reload_and_refuse(make_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = data / "jobs.d"
    folder.mkdir(parents=True)
    (folder / "a.toml").write_text(JOBS)
    proc = make_server(data_dir=data)
    async with raw(proc.ws_url, "root", proc.password) as c:
        (hello,) = await c.call("command.query")
        assert hello["declared"] == str(folder / "a.toml")
        triggers = await declared_triggers(c)
        trigger = triggers["hello-hourly"]
        await c.call("trigger.launch", trigger["id"])
        (job,) = await finished(c, trigger["id"])
        assert job["state"] == "SUCCESS"
        assert "hello from jobs.d" in await c.call("command.log", "hello", 1)
        (notifier,) = await c.call("notifier.query")
        assert notifier["declared"] == str(folder / "a.toml") and notifier["secret_set"]
        err = await c.error("command.update", "hello", {"commands": ["true"]})
        assert err["data"]["errname"] == "EPERM"

        # A bad second file: its name, line and reason; what was loaded stays.
        (folder / "b.toml").write_text('\n[[command]]\nname = "bad"\ncommands = []\n')
        hup(proc)
        await wait_logged(proc, f"{folder / 'b.toml'}:2: command 'bad': ")
        assert [x["name"] for x in await c.call("command.query")] == ["hello"]
        # A command made through the API is never taken over by a file.
        await c.call("command.create", {"name": "mine", "commands": ["true"]})
        (folder / "b.toml").write_text('[[command]]\nname = "mine"\ncommands = ["false"]\n')
        hup(proc)
        await wait_logged(proc, "command 'mine': a command of that name exists that no file")
        (mine,) = await c.call("command.query", [["name", "=", "mine"]])
        assert (mine["commands"], mine["declared"]) == (["true"], None)
        # Fixed: both load; a.toml's trigger deleted from it goes.
        (folder / "b.toml").write_text('[[command]]\nname = "bad"\ncommands = ["true"]\n')
        (folder / "a.toml").write_text(JOBS.split("[[trigger]]")[0])
        hup(proc)

        async def reloaded() -> bool:
            names = sorted(x["name"] for x in await c.call("command.query"))
            return names == ["bad", "hello", "mine"]

        await until(reloaded, "the reload")
        assert await declared_triggers(c) == {}
    assert "a-notifier-secret-value" not in proc.log_text()


async def test_max_job_running_lets_jobs_run_together(make_server: Any, tmp_path: Path) -> None:
    """Each job waits for the other to have started: they end only if both run at once."""
    meet = tmp_path / "meet"
    meet.mkdir()
    # Quoted: outside quotes, ';' starts a comment (the dialect's rule).
    wait = '"until [ -e {dir}/{other} ]; do sleep 0.05; done"'
    ini = tmp_path / "karajo.ini"
    ini.write_text(
        "[karajo]\nmax_job_running = 2\n"
        + "".join(
            f'[job "{me}"]\ncommand = touch {meet}/{me}\n'
            f"command = {wait.format(dir=meet, other=other)}\n"
            for me, other in (("a", "b"), ("b", "a"))
        )
    )
    proc = make_server("--karajo-config", str(ini))
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        jobs = [await c.call("command.run", name) for name in ("a", "b")]

        async def both_ended() -> list[str] | None:
            states = {j["id"]: j["state"] for j in await c.call("core.get_jobs")}
            found = [states[j] for j in jobs]
            return found if "RUNNING" not in found and "WAITING" not in found else None

        assert await until(both_ended, "both jobs") == ["SUCCESS", "SUCCESS"]


async def test_a_notifier_with_its_own_smtp_server_through_the_api(
    make_server: Any, tmp_path: Path
) -> None:
    """The notifier fields karajo's [notif] maps to, as notifier.create takes them: TLS from
    the first byte (smtps://), the password kept when an update leaves it out."""
    cert = make_certificate(tmp_path)
    proc = make_server()
    async with (
        smtp_server("TLS", cert, account=("u", "an-smtp-password-x")) as mail,
        raw(proc.ws_url, "root", proc.password) as c,
    ):
        smtp = {
            "server": f"smtps://127.0.0.1:{mail.port}",
            "user": "u",
            "password": "wrong-password-first",
            "from": "me@example.com",
            "insecure": True,
        }
        made = await c.call(
            "notifier.create",
            {"name": "tls", "kind": "mail", "to": ["a@example.com"], "smtp": smtp},
        )
        assert made["smtp"]["password_set"] is True and "password" not in made["smtp"]
        assert made["declared"] is None
        smtp["password"] = "an-smtp-password-x"
        await c.call("notifier.update", made["id"], {"smtp": smtp})
        # Left out: the password stays.
        kept = {k: v for k, v in smtp.items() if k != "password"}
        await c.call("notifier.update", made["id"], {"smtp": kept})
        await c.call(
            "command.create", {"name": "hi", "commands": ["echo hi"], "notify_on_success": ["tls"]}
        )
        await c.call("core.set_options", {"legacy_jobs": True})
        job_id = await c.call("command.run", "hi")
        message = await mail.next_mail()
        assert message["Subject"] == "hi: #1: SUCCESS" and message["From"] == "me@example.com"
        assert mail.logins == ["u"]
        err = await c.error(
            "notifier.create",
            {"name": "bad", "kind": "mail", "to": ["a@example.com"], "smtp": {"server": "x"}},
        )
        assert err["data"]["errname"] == "EINVAL", err
        assert job_id > 0
    assert "an-smtp-password-x" not in proc.log_text()
