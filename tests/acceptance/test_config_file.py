"""--config FILE (TOML) over the wire: options from the file (the command line wins),
[[trigger]] tables loaded at start and on SIGHUP (created, changed, deleted by name), a bad
file refused with its name, line and reason (at start: exit; on SIGHUP: logged, nothing
changes), declared triggers not changed through the API, and config.upload taking effect
without a restart."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from middlewared.cli import parse
from tests.acceptance.test_triggers import post, until
from tests.serverproc import ServerProc
from tests.snapshots import save_config, upload_config
from tests.wsraw import Raw, raw

PLUGINS = Path(__file__).parents[1] / "plugins"
NIGHTLY = """
[[trigger]]
name = "nightly"
type = "@cron"
arguments = "{cron}"
method = "test.progress"
params = [1]
"""
HOOK = """
[[trigger]]
name = "deploy"
type = "@webhook"
method = "test.echo_job"
auth = { kind = "none", path = "deploy/app" }
"""
EVERY = """
[[trigger]]
name = "hourly"
owner = "root"
type = "@every"
arguments = "1h"
method = "test.progress"
params = [2]
paused = true
"""
OPTIONS = """# middlewared configuration
max-subscriptions = 2
allow-unsigned-webhooks = true
max-webhook-body = 100
"""


async def declared(c: Raw) -> dict[str, dict[str, Any]]:
    found = await c.call("trigger.query", [["declared", "!=", None]])
    return {t["declared"]: t for t in found}


def hup(proc: ServerProc) -> None:
    assert proc.process is not None
    proc.process.send_signal(signal.SIGHUP)


async def test_options_and_triggers_come_from_the_file(make_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "middlewared.toml"
    config.write_text(OPTIONS + NIGHTLY.format(cron="0 3 * * *") + HOOK)
    proc = make_server("--config", str(config), "--max-webhook-body", "5000")
    async with raw(proc.ws_url, "root", proc.password) as c:
        # An option from the file: the third subscription is refused.
        await c.call("core.subscribe", "core.get_jobs")
        await c.call("core.subscribe", "trigger.query")
        err = await c.error("core.subscribe", "filesystem.files")
        assert "2" in err["data"]["reason"]
        triggers = await declared(c)
        assert sorted(triggers) == ["deploy", "nightly"]
        assert triggers["nightly"]["arguments"] == "0 3 * * *"
        assert triggers["nightly"]["next_run"] is not None
        assert triggers["nightly"]["owner"] == "root"
        # allow-unsigned-webhooks came from the file (the hook could not exist without it);
        # the command line's --max-webhook-body won over the file's 100 bytes.
        code, body = await post(f"{proc.url}/hooks/deploy/app", b"x" * 300, {})
        assert code == 202, body
        # What the file declares is changed there, not through the API; pausing is allowed.
        err = await c.error("trigger.update", triggers["nightly"]["id"], {"arguments": "@hourly"})
        assert err["data"]["errname"] == "EPERM" and "nightly" in err["data"]["reason"]
        err = await c.error("trigger.delete", triggers["deploy"]["id"])
        assert err["data"]["errname"] == "EPERM"
        paused = await c.call("trigger.pause", triggers["nightly"]["id"])
        assert paused["paused"] is True


async def test_sighup_reloads_the_triggers_and_a_bad_file_changes_nothing(
    make_server: Any, tmp_path: Path
) -> None:
    config = tmp_path / "middlewared.toml"
    config.write_text(OPTIONS + NIGHTLY.format(cron="0 3 * * *") + HOOK)
    proc = make_server("--config", str(config))
    async with raw(proc.ws_url, "root", proc.password) as c:
        before = await declared(c)
        # Changed, deleted and added by name.
        config.write_text(OPTIONS + NIGHTLY.format(cron="30 4 * * 1") + EVERY)
        hup(proc)

        async def reloaded() -> dict[str, dict[str, Any]] | None:
            now = await declared(c)
            return now if sorted(now) == ["hourly", "nightly"] else None

        after = await until(reloaded, "the reload")
        assert after["nightly"]["id"] == before["nightly"]["id"]
        assert after["nightly"]["arguments"] == "30 4 * * 1"
        assert after["hourly"]["paused"] is True and after["hourly"]["params"] == [2]
        code, _ = await post(f"{proc.url}/hooks/deploy/app", b"{}", {})
        assert code == 404

        # A table that is wrong: logged with the file, its line and the reason; nothing moves.
        bad = OPTIONS + NIGHTLY.format(cron="0 3 32 * *") + EVERY
        config.write_text(bad)
        line = bad.splitlines().index("[[trigger]]") + 1
        hup(proc)
        await until(
            lambda: _logged(proc, f"{config}:{line}: trigger 'nightly'"), "the refusal logged"
        )
        assert "day of month" in proc.log_text()
        assert await declared(c) == after
        # A file that is not TOML: its line too.
        config.write_text(OPTIONS + "[[trigger]\nname = 'x'\n")
        hup(proc)
        await until(lambda: _logged(proc, f"{config}:5: "), "the syntax error logged")
        assert await declared(c) == after


async def _logged(proc: ServerProc, text: str) -> bool:
    return any("configuration not reloaded" in ln and text in ln for ln in proc.output)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "middlewared", "--port", "0", "--plugins-dir", str(PLUGINS), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("max-subscriptions = 2\nmax-subscripton = 3\n")
    done = _run("--data-dir", str(tmp_path / "d1"), "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == f"middlewared: {config}:2: unknown option 'max-subscripton'"
    config.write_text('durability = "sometimes"\n')
    done = _run("--data-dir", str(tmp_path / "d2"), "--config", str(config))
    assert done.returncode == 2 and f"{config}:1: durability:" in done.stderr
    # A trigger the server refuses: its table's line, after the store is open; exit 1.
    config.write_text("\n" + NIGHTLY.format(cron="61 * * * *"))
    done = _run("--data-dir", str(tmp_path / "d3"), "--config", str(config))
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"middlewared: {config}:3: trigger 'nightly': arguments"), last
    assert "Traceback" not in done.stderr
    # A one-shot trigger ends once it fires: the file would bring it back at each reload.
    config.write_text(
        '[[trigger]]\nname = "once"\ntype = "@in"\narguments = "1h"\nmethod = "test.echo_job"\n'
    )
    done = _run("--data-dir", str(tmp_path / "d4"), "--config", str(config))
    assert done.returncode == 1 and "cannot be declared" in done.stderr, done.stderr
    config.write_text("trigger = [1, 2]\n")
    done = _run("--data-dir", str(tmp_path / "d5"), "--config", str(config))
    assert done.returncode == 2 and "[[trigger]] tables" in done.stderr, done.stderr


async def test_config_upload_takes_effect_without_a_restart(
    make_server: Any, tmp_path: Path
) -> None:
    proc = make_server()
    backup = tmp_path / "b.db"
    async with raw(proc.ws_url, "root", proc.password) as c:
        kept = await c.call(
            "trigger.create", {"type": "@cron", "arguments": "0 5 * * *", "method": "test.echo_job"}
        )
        await save_config(c, proc, backup)
        await c.call("trigger.delete", kept["id"])
        later = await c.call(
            "trigger.create", {"type": "@every", "arguments": "1h", "method": "test.echo_job"}
        )
        await upload_config(c, proc, backup)
        ids = [t["id"] for t in await c.call("trigger.query")]
        assert kept["id"] in ids and later["id"] not in ids
        (back,) = await c.call("trigger.query", [["id", "=", kept["id"]]])
        assert back["next_run"] is not None
        # The engine works on what it reloaded: the restored trigger can be changed.
        changed = await c.call("trigger.update", kept["id"], {"arguments": "0 6 * * *"})
        assert changed["arguments"] == "0 6 * * *"


async def test_the_readme_example_loads(make_server: Any, tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### A configuration file", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "readme.toml"
    config.write_text(example)
    proc = make_server("--config", str(config))
    async with raw(proc.ws_url, "root", proc.password) as c:
        (trigger,) = (await declared(c)).values()
        assert trigger["declared"] == "nightly-backup" and trigger["method"] == "command.run"
        assert trigger["options"]["timezone"] == "Europe/Paris"


def test_the_command_line_wins_even_with_a_default_value(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('host = "0.0.0.0"\nport = 7000\nfs-root = ["/srv/a", "/srv/b"]\n')
    args = parse(["--config", str(config), "--host", "127.0.0.1"])
    assert (args.host, args.port) == ("127.0.0.1", 7000)
    assert [str(p) for p in args.fs_root] == ["/srv/a", "/srv/b"]
    args = parse(["--config", str(config), "--fs-root", "/srv/c"])
    assert [str(p) for p in args.fs_root] == ["/srv/c"]


EVENT = """
[[trigger]]
name = "on-echo"
type = "@event"
arguments = "core.get_jobs:UPDATED:{tag}:arguments.0"
method = "test.progress"
params = [1]
"""


async def test_event_triggers_fire_after_a_start_and_a_restart(
    make_server: Any, tmp_path: Path
) -> None:
    """An @event trigger loaded at start (declared, or stored and loaded again after a
    restart) hears the bus: its listener starts with the others."""
    config = tmp_path / "events.toml"
    config.write_text(EVENT.format(tag="an-echo-tag"))
    proc = make_server("--config", str(config))
    for count in (1, 2):
        async with raw(proc.ws_url, "root", proc.password) as c:
            await c.call("test.echo_job", "an-echo-tag")
            await until(functools.partial(_fired, c, count), f"the trigger's job number {count}")
        proc.restart()


async def _fired(c: Raw, count: int) -> bool:
    (trigger,) = (await declared(c)).values()
    jobs = await c.call("trigger.jobs", trigger["id"], {})
    return len([j for j in jobs if j["state"] == "SUCCESS"]) >= count
