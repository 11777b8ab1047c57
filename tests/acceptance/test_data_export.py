"""data.export over the wire: parts that each open as a zip, their sha256 against the bytes
the real curl downloads, a big file in a part of its own, without_files, with_collections,
links that expire, the mail with the links (aiosmtpd), the secrets rule, a non-admin's
export and refusals with reasons."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import sqlite3
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_files import CURL, acurl, random_file
from tests.conftest import PLUGINS
from tests.serverproc import ServerProc
from tests.sinks import smtp_server
from tests.wsraw import Raw, raw

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")

PARTS_SIZE = 128 * 1024
BIG = 300_000
DATA = ["commands.json", "jobs.json", "manifest.json", "settings.json", "triggers.json"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A server of this module's own, with a known tree under its root."""
    data = tmp_path_factory.mktemp("export")
    files = data / "files"
    (files / "notes").mkdir(parents=True)
    (files / "notes" / "a.txt").write_text("première note\n")
    (files / "notes" / "b.txt").write_text("second\n" * 100)
    (files / "media").mkdir()
    for i in range(5):
        random_file(files / "media" / f"m{i}.bin", 40_000)
    random_file(files / "big.bin", BIG)
    (files / "empty").mkdir()
    (files / "passwd-link").symlink_to("/etc/passwd")
    (files / "notes" / "dir-link").symlink_to(files / "media")
    proc = ServerProc(data_dir=data, args=["--fs-root", str(files), "--plugins-dir", str(PLUGINS)])
    proc.start()
    yield proc
    proc.stop()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def fetch(srv: ServerProc, url: str) -> tuple[int, bytes]:
    """The status and body curl gets for a part's URL."""
    out = await acurl("-w", "\n%{http_code}", srv.url + url, check=False)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code), body


async def parts_of(srv: ServerProc, result: dict[str, Any]) -> list[zipfile.ZipFile]:
    """Each part downloaded, checked against the result, opened as a zip of its own."""
    zips = []
    for part in result["parts"]:
        status, body = await fetch(srv, part["url"])
        assert status == 200, body[:200]
        assert len(body) == part["size"]
        assert hashlib.sha256(body).hexdigest() == part["sha256"]
        z = zipfile.ZipFile(io.BytesIO(body))
        assert z.testzip() is None
        zips.append(z)
    return zips


def contents(zips: list[zipfile.ZipFile]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for z in zips:
        for name in z.namelist():
            assert name not in found, f"{name} in two parts"
            found[name] = z.read(name)
    return found


async def removed(folder: Path) -> bool:
    """Whether ``folder`` is removed within 10 s (the server removes it off its loop; no
    event tells a client when)."""
    for _ in range(100):
        if not await asyncio.to_thread(folder.exists):
            return True
        await asyncio.sleep(0.1)
    return False


async def make_user(conn: Raw, **fields: Any) -> tuple[str, str]:
    name = unique("exp")
    password = "pw-" + name
    await conn.call("user.create", {"username": name, "password": password, **fields})
    return name, password


async def test_parts_are_zips_within_parts_size_with_the_big_file_alone(srv: ServerProc) -> None:
    async with raw(srv.ws_url, "root", srv.password) as admin:
        result = await admin.call("data.export", {"parts_size": PARTS_SIZE, "max_age": 600})
    assert 2 <= len(result["parts"])
    assert result["expires"]["$date"] > (time.time() + 500) * 1000
    zips = await parts_of(srv, result)
    for z, part in zip(zips, result["parts"], strict=True):
        if part["size"] > PARTS_SIZE:
            assert z.namelist() == ["files/files/big.bin"]
    found = contents(zips)
    files = srv.data_dir / "files"
    assert set(DATA) | {"users.json"} <= set(found)
    assert found["files/files/big.bin"] == (files / "big.bin").read_bytes()
    assert found["files/files/notes/a.txt"] == "première note\n".encode()
    for i in range(5):
        assert found[f"files/files/media/m{i}.bin"] == (files / "media" / f"m{i}.bin").read_bytes()
    assert "files/files/empty/" in found
    # Symlinks are left out, whatever they point at.
    assert not [n for n in found if "link" in n]
    assert b"root:" not in b"".join(found.values())
    manifest = json.loads(found["manifest.json"])
    assert manifest["files"] is True and manifest["by"] == "root"
    # A link serves until max_age, more than once.
    status, again = await fetch(srv, result["parts"][0]["url"])
    assert status == 200 and hashlib.sha256(again).hexdigest() == result["parts"][0]["sha256"]
    # Range requests, as for any download.
    out = await acurl("-r", "0-99", "-w", "\n%{http_code}", srv.url + result["parts"][0]["url"])
    first, _, code = out.stdout.rpartition(b"\n")
    assert (int(code), first) == (206, again[:100])
    # Each part has its own token: one part's token does not open another.
    token = result["parts"][0]["url"].partition("auth_token=")[2]
    other = result["parts"][1]["url"].partition("?")[0]
    status, body = await fetch(srv, f"{other}?auth_token={token}")
    assert status == 401 and "token" in json.loads(body)["error"]


async def test_without_files_and_with_collections(srv: ServerProc) -> None:
    async with raw(srv.ws_url, "root", srv.password) as admin:
        only = await admin.call(
            "data.export", {"with_collections": ["users", "settings"], "without_files": True}
        )
        data = await admin.call("data.export", {"without_files": True})
    found = contents(await parts_of(srv, only))
    assert sorted(found) == ["manifest.json", "settings.json", "users.json"]
    assert "mail" in json.loads(found["settings.json"])
    assert "root" in [u["username"] for u in json.loads(found["users.json"])]
    found = contents(await parts_of(srv, data))
    assert sorted(found) == sorted([*DATA, "users.json"])
    methods = {j["method"] for j in json.loads(found["jobs.json"])}
    assert "data.export" in methods


async def test_links_stop_working_after_max_age(srv: ServerProc) -> None:
    async with raw(srv.ws_url, "root", srv.password) as admin:
        result = await admin.call(
            "data.export", {"max_age": 2, "without_files": True, "with_collections": ["users"]}
        )
    url = result["parts"][0]["url"]
    folder = srv.data_dir / "exports" / result["export_id"]
    assert folder.is_dir()
    deadline = time.monotonic() + 15
    while True:
        status, body = await fetch(srv, url)
        if status != 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 410, body
    reason = json.loads(body)
    assert reason["status"] == 410 and "expired" in reason["error"], reason
    # Removed from disk too (by the timer at max_age).
    assert await removed(folder)
    status, body = await fetch(srv, "/_download/export/nosuchexport/1?auth_token=x")
    assert status == 404 and "No export" in json.loads(body)["error"]


async def test_the_links_are_mailed_to_the_caller(srv: ServerProc) -> None:
    async with smtp_server() as sink, raw(srv.ws_url, "root", srv.password) as admin:
        settings = {"host": "127.0.0.1", "port": sink.port, "from_email": "mw@example.com"}
        await admin.call("mail.update", {**settings, "noreply_email": "noreply@example.com"})
        try:
            name, password = await make_user(admin, admin=True, email="ada@example.org")
            bare, bare_password = await make_user(admin, admin=True)
            async with raw(srv.ws_url, name, password) as c:
                result = await c.call("data.export", {"without_files": True})
            mail = await sink.next_mail()
            async with raw(srv.ws_url, bare, bare_password) as c:
                await c.call("data.export", {"without_files": True})
                job = (
                    await c.call(
                        "core.get_jobs", [["method", "=", "data.export"]], {"order_by": ["-id"]}
                    )
                )[0]
        finally:
            await admin.call("mail.update", {"host": ""})
    assert [a.addr_spec for a in mail["To"].addresses] == ["ada@example.org"]
    assert mail["From"].addresses[0].addr_spec == "noreply@example.com"
    body = mail.get_content()
    links = [line.rpartition(": ")[2] for line in body.splitlines() if line.startswith("Part ")]
    assert links == [srv.url + p["url"] for p in result["parts"]]
    out = await acurl(links[0])
    assert hashlib.sha256(out.stdout).hexdigest() == result["parts"][0]["sha256"]
    # No email: no mail, a line in the job's log says why.
    assert "has no email" in (job["logs_excerpt"] or ""), job
    assert sink.inbox.empty()


def stored_secrets(db: Path) -> list[str]:
    """Password hashes, key hashes, SCRAM and two-factor material as the store has them."""
    found: list[str] = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT password_hash, twofactor FROM users").fetchall()
        rows += conn.execute("SELECT key_hash, scram FROM api_keys").fetchall()
    finally:
        conn.close()
    for row in rows:
        for value in row:
            if not value:
                continue
            try:
                parsed = json.loads(value)
            except ValueError:
                found.append(value)
                continue
            found += [v for v in _strings(parsed) if len(v) >= 16]
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


async def test_no_secret_is_exported(srv: ServerProc) -> None:
    smtp_password = unique("smtp-secret-")
    env_secret = unique("env-secret-")
    hook_secret = unique("hook-secret-0123456789")
    async with raw(srv.ws_url, "root", srv.password) as admin:
        await admin.call("mail.update", {"password": smtp_password})
        name, user_password = await make_user(admin, admin=True)
        await admin.call("user.renew_2fa_secret", name, {})
        uri = await admin.call("user.provisioning_uri", name)
        otp_secret = uri.partition("secret=")[2].partition("&")[0]
        key = await admin.call("api_key.create", {"name": unique("k"), "allowlist": ["x.y"]})
        await admin.call(
            "command.create",
            {
                "name": unique("c"),
                "commands": ["true"],
                "env": {"PLAIN": "shown", "TOKEN": {"value": env_secret, "secret": True}},
            },
        )
        await admin.call(
            "trigger.create",
            {
                "type": "@webhook",
                "method": "log.print",
                "params": ["hi"],
                "auth": {"kind": "hmac-sha256", "secret": hook_secret},
            },
        )
        earlier = await admin.call("data.export", {"without_files": True})
        result = await admin.call("data.export", {})
        await admin.call("mail.update", {"password": ""})
    found = contents(await parts_of(srv, result))
    exported = b"\n".join(found.values())
    assert b"shown" in exported and name.encode() in exported
    secrets = [smtp_password, env_secret, hook_secret, user_password, otp_secret, key["key"]]
    secrets += [p["url"].partition("auth_token=")[2] for p in earlier["parts"]]
    secrets += stored_secrets(srv.data_dir / "middlewared.db")
    vapid = srv.data_dir / "push" / "vapid_private.pem"
    if vapid.exists():
        lines = vapid.read_text().splitlines()
        secrets += [line for line in lines if not line.startswith("-----")]
    assert len(secrets) > 8
    for secret in secrets:
        assert secret.encode() not in exported, f"a secret ({secret[:6]}...) was exported"
    assert b"scrypt$" not in exported


async def test_a_user_exports_what_they_may_see(srv: ServerProc) -> None:
    async with raw(srv.ws_url, "root", srv.password) as admin:
        name, password = await make_user(admin, allowlist=["data.export", "log.print"])
    async with raw(srv.ws_url, name, password) as c:
        await c.call("log.print", "mine")
        result = await c.call("data.export", {})
        for options, field in (
            ({"with_collections": ["commands"]}, "with_collections"),
            ({"with_collections": ["settings", "jobs"]}, "with_collections"),
            ({"without_files": False}, "without_files"),
        ):
            err = await c.error("data.export", options)
            where, reason, code = err["data"]["extra"][0]
            assert where.endswith(field) and "Only administrators" in reason, err
            assert code == errno.EPERM, err
    found = contents(await parts_of(srv, result))
    assert sorted(found) == ["jobs.json", "manifest.json", "users.json"]
    assert [u["username"] for u in json.loads(found["users.json"])] == [name]
    jobs = json.loads(found["jobs.json"])
    assert {j["method"] for j in jobs} >= {"log.print"}
    assert {j["credentials"]["data"]["username"] for j in jobs} == {name}
    manifest = json.loads(found["manifest.json"])
    assert manifest["files"] is False and "triggers" in manifest["notes"]


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"parts_size": 1000}, "parts_size"),
        ({"parts_size": 5 * 1024**3}, "parts_size"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": 365 * 86400}, "max_age"),
        ({"with_collections": ["nope"]}, "with_collections"),
        ({"with_collections": ["jobs", "jobs"]}, "with_collections"),
        ({"bogus": True}, "bogus"),
    ],
)
async def test_refusals_say_why(srv: ServerProc, options: dict[str, Any], where: str) -> None:
    async with raw(srv.ws_url, "root", srv.password) as admin:
        err = await admin.error("data.export", options)
    assert where in json.dumps(err), err


async def test_a_user_keeps_at_most_five_exports(srv: ServerProc) -> None:
    async with raw(srv.ws_url, "root", srv.password) as admin:
        name, password = await make_user(admin, admin=True)
    small = {"without_files": True, "with_collections": ["users"]}
    async with raw(srv.ws_url, name, password) as c:
        results = [await c.call("data.export", small) for _ in range(6)]
    status, body = await fetch(srv, results[0]["parts"][0]["url"])
    assert status == 410 and "replaced by a newer export" in json.loads(body)["error"]
    folder = srv.data_dir / "exports" / results[0]["export_id"]
    assert await removed(folder)
    for r in results[1:]:
        assert (await fetch(srv, r["parts"][0]["url"]))[0] == 200
