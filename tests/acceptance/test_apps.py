"""cozy-style apps over the wire, with real processes: the example app installed from a
folder under a root fires once for a burst of files (debounce) and calls back through
``midclt`` with its token (its permissions work, the rest is refused); an exec service
sees its event in MIDDLEWARED_FIELDS; a zip install, update (new folder, triggers kept)
and uninstall (triggers gone, jobs kept); what is refused, with its reason: bad
manifests, paths outside the roots, symlinks, permissions beyond a restricted admin key;
``midclt service run`` as cozy's dev runner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

from tests.acceptance.test_commands import until
from tests.acceptance.test_triggers import post
from tests.conftest import PLUGINS
from tests.midcltproc import midclt
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cozy_app"
ECHO_JOB = {"type": "jobs", "verbs": ["POST"], "selector": "worker", "values": ["test.echo_job"]}
EXEC_SCRIPT = """#!/bin/sh
echo "fields=$MIDDLEWARED_FIELDS app=$MIDDLEWARED_APP service=$MIDDLEWARED_SERVICE"
midclt call test.echo_job allowed-call && echo "allowed: ok"
midclt call test.echo refused-call || echo "outside: refused"
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def source(server: ServerProc, name: str) -> Path:
    """A fresh folder under the server's root."""
    folder = server.data_dir / "files" / unique(name)
    folder.mkdir()
    return folder


def write_app(
    folder: Path, manifest: dict[str, Any], files: dict[str, str], executable: tuple[str, ...] = ()
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if name in executable else 0o644)
    return folder


def exec_app(slug: str, version: str = "1.0.0", trigger: str = "@client") -> dict[str, Any]:
    return {
        "slug": slug,
        "version": version,
        "permissions": {"echo": ECHO_JOB},
        "services": {"probe": {"type": "exec", "file": "bin/probe.sh", "trigger": trigger}},
    }


async def service_jobs(c: Raw, trigger_id: int, count: int) -> list[dict[str, Any]]:
    """The trigger's jobs once ``count`` of them ended."""

    async def check() -> list[dict[str, Any]] | None:
        jobs: list[dict[str, Any]] = await c.call("trigger.jobs", trigger_id, {})
        done = [j for j in jobs if j["state"] in ("SUCCESS", "FAILED", "ABORTED")]
        return jobs if len(done) >= count else None

    found: list[dict[str, Any]] = await until(check, f"{count} jobs of trigger {trigger_id}")
    return found


def _exists(path: str) -> bool:
    return Path(path).exists()


def job_log(server: ServerProc, job_id: int) -> str:
    return (server.data_dir / "logs" / f"{job_id}.log").read_text()


async def test_the_example_app_runs_once_per_burst_within_its_permissions(
    server: ServerProc,
) -> None:
    src = source(server, "census-src")
    drop = source(server, "census-drop")
    async with raw(server.ws_url, "root", server.password) as c:
        # The copy's own events are told before the app listens (they would open its window).
        await c.call("core.subscribe", "filesystem.files")
        shutil.copytree(EXAMPLE, src, dirs_exist_ok=True)
        copied = str(src / "services" / "on_files_created.py")
        await c.notification(lambda n: n["params"].get("id") == copied)
        app = await c.call("app.install", str(src))
        assert (app["slug"], app["version"]) == ("file-census", "1.0.0")
        assert "filesystem.stat" in app["allow"] and "filesystem.files" in app["allow"]
        assert "filesystem.put" not in app["allow"]
        (listed,) = await c.call("app.query", [["slug", "=", "file-census"]])
        assert listed == app
        trigger_id = app["services"]["onFilesCreated"]["trigger_id"]
        (trig,) = await c.call("trigger.query", [["id", "=", trigger_id]])
        assert trig["managed_by"] == "app" and trig["method"] == "app.run"
        assert (trig["type"], trig["arguments"]) == ("@event", "filesystem.files:CREATED")
        assert trig["debounce"] == "2s" and trig["params"] == ["file-census", "onFilesCreated"]
        # Its trigger is the app's: changed through app.update only.
        err = await c.error("trigger.update", trigger_id, {"debounce": "1m"})
        assert err["data"]["errname"] == "EPERM"
        # A burst of three files: one run, told of all three.
        for name, size in (("a.txt", 1), ("b.txt", 22), ("c.txt", 333)):
            await asyncio.to_thread((drop / name).write_text, "x" * size)
        (job,) = await service_jobs(c, trigger_id, 1)
        assert job["state"] == "SUCCESS", job["error"]
        slug, service, fields = job["arguments"]
        assert (slug, service, fields["trigger_id"]) == (
            "file-census",
            "onFilesCreated",
            trigger_id,
        )
        paths = {e["id"] for e in fields["events"]}
        assert {str(drop / n) for n in ("a.txt", "b.txt", "c.txt")} <= paths
        log = job_log(server, job["id"])
        for line in ("a.txt: 1 bytes", "b.txt: 22 bytes", "c.txt: 333 bytes"):
            assert f"stdout: {line}" in log, log
        assert "stdout: user.query refused: True" in log
        assert len(await c.call("trigger.jobs", trigger_id, {})) == 1
        await c.call("trigger.pause", trigger_id)
        (paused,) = await c.call("app.query", [["slug", "=", "file-census"]])
        assert paused["services"]["onFilesCreated"]["paused"] is True
        assert await c.call("app.uninstall", "file-census") is True


async def test_an_exec_service_gets_its_event_and_a_token_of_its_permissions(
    server: ServerProc,
) -> None:
    slug = unique("probe")
    src = write_app(
        source(server, "probe"), exec_app(slug), {"bin/probe.sh": EXEC_SCRIPT}, ("bin/probe.sh",)
    )
    async with raw(server.ws_url, "root", server.password) as c:
        app = await c.call("app.install", str(src))
        assert app["allow"] == ["test.echo_job"]
        assert app["path"].startswith(str(server.data_dir / "apps" / slug))
        await c.call("app.run", slug, "probe", {"n": 7})
        newest = {"order_by": ["-id"], "limit": 1, "get": True}
        job = await c.call("core.get_jobs", [["method", "=", "app.run"]], newest)
        assert job["state"] == "SUCCESS", job["error"]
        log = job_log(server, job["id"])
        assert f'stdout: fields={{"n":7}} app={slug} service=probe' in log, log
        assert "stdout: allowed: ok" in log and "stdout: outside: refused" in log
        # The source changed: the installed app did not.
        (src / "bin" / "probe.sh").write_text("#!/bin/sh\necho changed\n")
        launched = await c.call("trigger.launch", app["services"]["probe"]["trigger_id"])
        (job,) = await service_jobs(c, app["services"]["probe"]["trigger_id"], 1)
        assert job["id"] == launched and "stdout: allowed: ok" in job_log(server, launched)
        assert await c.call("app.uninstall", slug) is True


def _zip(path: Path, folder: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for file in sorted(folder.rglob("*")):
            info = zipfile.ZipInfo(
                f"app/{file.relative_to(folder)}" + ("/" if file.is_dir() else "")
            )
            info.external_attr = (file.stat().st_mode & 0xFFFF) << 16
            z.writestr(info, b"" if file.is_dir() else file.read_bytes())


async def test_zip_install_update_and_uninstall_keeping_the_jobs(server: ServerProc) -> None:
    slug = unique("zipped")
    work = source(server, "zip-work")
    folder = write_app(
        work / "tree", exec_app(slug), {"bin/probe.sh": EXEC_SCRIPT}, ("bin/probe.sh",)
    )
    archive = work / "app.zip"
    _zip(archive, folder)
    async with raw(server.ws_url, "root", server.password) as c:
        app = await c.call("app.install", str(archive))
        assert app["source"] == str(archive) and app["version"] == "1.0.0"
        probe_id = app["services"]["probe"]["trigger_id"]
        first = await c.call("trigger.launch", probe_id)
        await service_jobs(c, probe_id, 1)
        # Unchanged source: nothing happens.
        same = await c.call("app.update", slug)
        assert same["digest"] == app["digest"] and same["updated"] == app["updated"]
        # Version 2 adds a service and changes the script.
        manifest = exec_app(slug, "2.0.0")
        manifest["services"]["again"] = {
            "type": "python",
            "file": "again.py",
            "trigger": "@every 1h",
        }
        write_app(
            folder,
            manifest,
            {"bin/probe.sh": "#!/bin/sh\necho version-two\n", "again.py": "print(1)\n"},
            ("bin/probe.sh",),
        )
        _zip(archive, folder)
        updated = await c.call("app.update", slug)
        assert updated["version"] == "2.0.0" and updated["digest"] != app["digest"]
        assert updated["services"]["probe"]["trigger_id"] == probe_id
        again_id = updated["services"]["again"]["trigger_id"]
        assert again_id not in (None, probe_id)
        assert not _exists(app["path"]) and _exists(updated["path"])
        second = await c.call("trigger.launch", probe_id)
        jobs = await service_jobs(c, probe_id, 2)
        assert [j["id"] for j in jobs] == [second, first]
        assert "stdout: version-two" in job_log(server, second)
        # Uninstall: the triggers go, the jobs stay.
        assert await c.call("app.uninstall", slug) is True
        assert await c.call("app.query", [["slug", "=", slug]]) == []
        assert await c.call("trigger.query", [["id", "in", [probe_id, again_id]]]) == []
        kept = await c.call("core.get_jobs", [["id", "in", [first, second]]])
        assert sorted(j["id"] for j in kept) == [first, second]
        assert not (server.data_dir / "apps" / slug).exists()
        err = await c.error("app.uninstall", slug)
        assert err["data"]["errname"] == "ENOENT"


async def _refused(c: Raw, path: Path | str, *words: str) -> dict[str, Any]:
    err = await c.error("app.install", str(path))
    assert err["code"] == -32602, err
    reason = json.dumps(err["data"])
    for word in words:
        assert word in reason, reason
    return err


async def test_bad_apps_are_refused_with_their_reason(server: ServerProc, tmp_path: Path) -> None:
    base = source(server, "bad")
    ok = exec_app("bad-app")
    script = {"bin/probe.sh": EXEC_SCRIPT}
    x = ("bin/probe.sh",)

    def variant(name: str, **changes: Any) -> Path:
        return write_app(base / name, {**ok, **changes}, script, x)

    def service(**changes: Any) -> dict[str, Any]:
        return {"probe": {**ok["services"]["probe"], **changes}}

    async with raw(server.ws_url, "root", server.password) as c:
        await _refused(c, tmp_path, "outside the allowed roots")
        await _refused(c, base / "missing", "does not exist")
        (base / "empty").mkdir()
        await _refused(c, base / "empty", "no manifest.json")
        bad_json = variant("json")
        (bad_json / "manifest.json").write_text("{not json")
        await _refused(c, bad_json, "not JSON")
        await _refused(c, variant("slug", slug="Bad_Slug"), "manifest.slug")
        await _refused(c, variant("version", version=""), "manifest.version")
        await _refused(c, variant("type", services=service(type="ruby")), "services.probe.type")
        await _refused(c, variant("file", services=service(file="nope.sh")), "no file nope.sh")
        await _refused(c, variant("escape", services=service(file="../x.sh")), "not a path inside")
        await _refused(c, variant("field", services=service(debouce="5s")), "debouce")
        await _refused(
            c, variant("trigger", services=service(trigger="@sometimes")), "Unknown trigger"
        )
        await _refused(
            c,
            variant("cron", services=service(trigger="@cron 61 * * * *")),
            "services.probe.trigger",
        )
        await _refused(
            c,
            variant("debounce", services=service(trigger="@every 1h", debounce="5s")),
            "debounced",
        )
        not_exec = write_app(base / "noexec", ok, script)
        await _refused(c, not_exec, "not executable")
        perms = {"p": {"type": "filesystem", "verbs": ["FETCH"]}}
        await _refused(c, variant("verb", permissions=perms), "Unknown verb")
        perms = {"p": {"type": "nosuchthing", "verbs": ["GET"]}}
        await _refused(c, variant("ns", permissions=perms), "No namespace")
        perms = {"p": {"type": "filesystem", "verbs": ["GET"], "values": ["/x"]}}
        await _refused(c, variant("values", permissions=perms), "jobs permission only")
        perms = {"p": {**ECHO_JOB, "values": ["test.nope"]}}
        await _refused(c, variant("method", permissions=perms), "No method")
        listens = service(trigger="@event io.cozy.files:CREATED")
        await _refused(c, variant("listen", services=listens), "not let it read")
        linked = variant("link")
        (linked / "bin" / "other.sh").symlink_to("/etc/passwd")
        await _refused(c, linked, "symbolic link")
        slug = unique("twice")
        twice = write_app(base / "twice", exec_app(slug), script, x)
        await c.call("app.install", str(twice))
        await _refused(c, twice, "use app.update")
        await c.call("app.uninstall", slug)
        assert await c.call("app.query", [["slug", "^", "bad-"]]) == []


async def test_a_restricted_admin_key_installs_only_within_its_own_rights(
    server: ServerProc,
) -> None:
    base = source(server, "restricted")
    async with raw(server.ws_url, "root", server.password) as c:
        key = await c.call(
            "api_key.create",
            {"name": unique("apps"), "allowlist": ["app.*", "test.echo_job", "filesystem.stat"]},
        )
    slug = unique("narrow")
    within = write_app(
        base / "within", exec_app(slug), {"bin/probe.sh": EXEC_SCRIPT}, ("bin/probe.sh",)
    )
    beyond = {
        **exec_app(unique("wide")),
        "permissions": {"files": {"type": "filesystem", "verbs": ["GET"]}},
    }
    async with raw(server.ws_url) as k:
        assert await k.call("auth.login_with_api_key", key["key"]) is True
        err = await _refused(
            k,
            write_app(base / "beyond", beyond, {"bin/probe.sh": EXEC_SCRIPT}, ("bin/probe.sh",)),
            "may not use yourself",
        )
        assert "filesystem.listdir" in err["data"]["reason"]
        assert err["data"]["extra"][0][0] == "manifest.permissions"
        app = await k.call("app.install", str(within))
        assert app["owner"] == "root" and app["allow"] == ["test.echo_job"]
    # The key that installed it is deleted: its service pauses, saying why.
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("api_key.delete", key["id"])

        async def paused() -> dict[str, Any] | None:
            (found,) = await c.call("app.query", [["slug", "=", slug]])
            return found if found["services"]["probe"]["paused"] else None

        await until(paused, "the app's service to pause")
        trigger_id = app["services"]["probe"]["trigger_id"]
        (trig,) = await c.call("trigger.query", [["id", "=", trigger_id]])
        assert "API key revoked" in trig["current_state"]["last_error"]
        assert await c.call("app.uninstall", slug) is True


async def test_apps_are_for_administrators(server: ServerProc) -> None:
    name, password = "apps-user", "an-apps-user-password-long"
    async with raw(server.ws_url, "root", server.password) as c:
        if not await c.call("user.query", [["username", "=", name]]):
            await c.call(
                "user.create", {"username": name, "password": password, "allowlist": ["*"]}
            )
    async with raw(server.ws_url, name, password) as user:
        err = await user.error("app.install", "/x")
        assert "administrators" in err["data"]["reason"]
        err = await user.error("app.query")
        assert "administrators" in err["data"]["reason"]
        # A user's own dev token: within their rights only (not an admin's filesystem).
        granted = await user.call("app.service_token", [ECHO_JOB], 60)
        assert granted["allow"] == ["test.echo_job"]
        err = await user.error("app.service_token", [{"type": "user", "verbs": ["GET"]}])
        assert "may not use yourself" in err["data"]["reason"]


def test_midclt_service_run_runs_one_service_here(server: ServerProc, tmp_path: Path) -> None:
    folder = write_app(
        tmp_path / "dev",
        {
            "slug": "dev-app",
            "version": "0.1.0",
            "permissions": [ECHO_JOB],
            "services": {
                "probe": {"type": "exec", "file": "bin/probe.sh", "trigger": "@client"},
                "py": {"type": "python", "file": "py.py", "trigger": "@client"},
            },
        },
        {
            "bin/probe.sh": EXEC_SCRIPT,
            "py.py": "import os, sys\nprint(os.environ['MIDDLEWARED_FIELDS'])\nsys.exit(3)\n",
        },
        ("bin/probe.sh",),
    )
    scripts = str(Path(sys.executable).parent)
    env = {"PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    login = ["-u", server.ws_url, "-U", "root", "-P", server.password]
    manifest = str(folder / "manifest.json")
    done = midclt(*login, "service", "run", manifest, "probe", "--fields", '{"n": 1}', env=env)
    assert done.returncode == 0, done.stderr
    assert 'fields={"n":1} app=dev-app service=probe' in done.stdout
    assert "allowed: ok" in done.stdout and "outside: refused" in done.stdout
    done = midclt(*login, "service", "run", manifest, "py", env=env)
    assert done.returncode == 3 and done.stdout.strip() == "{}"
    done = midclt(*login, "service", "run", manifest, "nope", env=env)
    assert done.returncode == 1 and "no service 'nope'" in done.stderr


def _forget_trigger(proc: ServerProc, trigger_id: int) -> None:
    with contextlib.closing(sqlite3.connect(proc.data_dir / "middlewared.db")) as db, db:
        db.execute("DELETE FROM triggers WHERE id = ?", (trigger_id,))


async def test_an_app_survives_a_restart_and_a_crash_leaves_nothing_half_done(
    make_server: Any,
) -> None:
    proc = make_server()
    slug, gone = unique("kept"), unique("gone")
    files = proc.data_dir / "files"
    script, x = {"bin/probe.sh": EXEC_SCRIPT}, ("bin/probe.sh",)
    src = write_app(files / "kept", exec_app(slug), script, x)
    other = write_app(files / "gone", exec_app(gone), script, x)
    async with raw(proc.ws_url, "root", proc.password) as c:
        app = await c.call("app.install", str(src))
        doomed = await c.call("app.install", str(other))
        await c.call("app.install", str(write_app(files / "fine", exec_app("fine"), script, x)))
        (fine,) = await c.call("app.query", [["slug", "=", "fine"]])
    proc.stop()
    apps = proc.data_dir / "apps"
    # What a crash in the middle of an install, an update or an uninstall leaves: staging
    # and unrecorded folders, an old folder, an app without its trigger, a trigger without
    # its app.
    (apps / ".staging-0123456789ab").mkdir()
    (apps / "half-installed" / "1").mkdir(parents=True)
    (apps / slug / "7").mkdir()
    _forget_trigger(proc, app["services"]["probe"]["trigger_id"])
    shutil.rmtree(apps / gone)
    proc.start()
    assert sorted(p.name for p in apps.iterdir()) == ["fine", slug]
    assert sorted(p.name for p in (apps / slug).iterdir()) == ["1", "app.json"]
    async with raw(proc.ws_url, "root", proc.password) as c:
        (again,) = await c.call("app.query", [["slug", "=", slug]])
        trigger_id = again["services"]["probe"]["trigger_id"]
        assert trigger_id not in (None, app["services"]["probe"]["trigger_id"])
        assert {k: v for k, v in again.items() if k != "services"} == {
            k: v for k, v in app.items() if k != "services"
        }
        assert await c.call("app.query", [["slug", "=", "fine"]]) == [fine]
        orphan = doomed["services"]["probe"]["trigger_id"]
        assert await c.call("trigger.query", [["id", "=", orphan]]) == []
        job_id = await c.call("trigger.launch", trigger_id)
        (job,) = await service_jobs(c, trigger_id, 1)
        assert job["id"] == job_id and job["state"] == "SUCCESS", job["error"]


FAKE_NODE = """#!/bin/sh
echo "node ran $1 with $MIDDLEWARED_FIELDS"
"""


async def test_node_services_run_with_node_or_say_it_is_missing(tmp_path: Path) -> None:
    """The server's PATH holds a stand-in ``node`` (then none); cozy's unsigned webhook
    service is served with --allow-unsigned-webhooks."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    node = bin_dir / "node"
    node.write_text(FAKE_NODE)
    node.chmod(0o755)
    files = tmp_path / "data" / "files"
    files.mkdir(parents=True)
    proc = ServerProc(
        data_dir=tmp_path / "data",
        args=["--fs-root", str(files), "--plugins-dir", str(PLUGINS), "--allow-unsigned-webhooks"],
        env={"PATH": str(bin_dir)},
    )
    proc.start()
    try:
        manifest = {
            "slug": "hooked",
            "version": "1",
            "services": {"hook": {"type": "node", "file": "hook.js", "trigger": "@webhook"}},
        }
        src = write_app(files / "hooked", manifest, {"hook.js": "// cozy service\n"})
        async with raw(proc.ws_url, "root", proc.password) as c:
            app = await c.call("app.install", str(src))
            trigger_id = app["services"]["hook"]["trigger_id"]
            code, answer = await post(f"{proc.url}/hooks/apps/hooked/hook", b'{"ref": "main"}', {})
            assert code == 202, answer
            (job,) = await service_jobs(c, trigger_id, 1)
            assert job["state"] == "SUCCESS", job["error"]
            log = job_log(proc, job["id"])
            assert f"stdout: node ran {app['path']}/hook.js with " in log, log
            assert '"body":{"ref":"main"}' in log
            node.unlink()
            launched = await c.call("trigger.launch", trigger_id)
            jobs = await service_jobs(c, trigger_id, 2)
            failed = next(j for j in jobs if j["id"] == launched)
            assert failed["state"] == "FAILED"
            assert "node is not installed on the server" in failed["error"]
    finally:
        proc.stop()
