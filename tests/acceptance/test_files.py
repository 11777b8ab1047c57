"""Job file I/O with the real curl: /_upload, /_download, core.download, config round trip."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.multipart import upload_start
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")


def curl(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run([CURL, "-sS", *args], capture_output=True, check=check, timeout=300)


async def acurl(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """curl off the event loop, so the test's own WebSocket keeps being served."""
    return await asyncio.to_thread(curl, *args, check=check)


def status_and_body(*args: str) -> tuple[int, Any]:
    """HTTP status and JSON body of a request (curl -w appends the status)."""
    out = curl("-w", "\n%{http_code}", *args, check=False).stdout.decode()
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body) if body.strip() else None


def upload_args(
    server: ServerProc,
    method: str,
    params: list[Any],
    *files: Path,
    auth: tuple[str, ...] | None = None,
) -> list[str]:
    args = list(auth if auth is not None else ("-u", f"root:{server.password}"))
    args += ["-F", "data=" + json.dumps({"method": method, "params": params})]
    for f in files:
        args += ["-F", f"file=@{f}"]
    return [*args, f"{server.url}/_upload"]


async def wait_job(c: Raw, job_id: int) -> dict[str, Any]:
    """The job's record once it has ended (core.job_wait waits on the job's own future)."""
    try:
        await c.call("core.job_wait", job_id)
    except AssertionError:
        pass
    record: dict[str, Any] = await c.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
    return record


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, 8 * 1024 * 1024)
            f.write(os.urandom(n))
            remaining -= n
    return path


async def test_upload_then_download_byte_for_byte(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "blob.bin", 3_000_001)
    target = server.data_dir / "files" / "blob.bin"
    out = await acurl(*upload_args(server, "filesystem.put", [str(target)], src))
    job_id = json.loads(out.stdout)["job_id"]
    async with raw(server.ws_url, "root", server.password) as c:
        assert (await wait_job(c, job_id))["result"] == [str(target)]
        assert target.read_bytes() == src.read_bytes()
        job_id, url = await c.call("core.download", "filesystem.get", [str(target)], "blob.bin")
        assert url == f"/_download/{job_id}?auth_token=" + url.split("auth_token=")[1]
        dest = tmp_path / "back.bin"
        got = await acurl("-D", str(tmp_path / "headers"), "-o", str(dest), server.url + url)
        assert got.returncode == 0
        assert dest.read_bytes() == src.read_bytes()
        headers = (tmp_path / "headers").read_text().lower()
        assert "content-type: application/octet-stream" in headers
        assert 'content-disposition: attachment; filename="blob.bin"' in headers
        assert (await wait_job(c, job_id))["state"] == "SUCCESS"
        # The token was single-use.
        code, body = status_and_body(server.url + url)
        assert code in (401, 410) and body["error"]


async def test_several_files_in_one_upload(server: ServerProc, tmp_path: Path) -> None:
    folder = server.data_dir / "files" / "many"
    folder.mkdir()
    files = [random_file(tmp_path / f"f{i}.dat", 1000 * (i + 1)) for i in range(3)]
    out = await acurl(*upload_args(server, "filesystem.put", [str(folder)], *files))
    job_id = json.loads(out.stdout)["job_id"]
    async with raw(server.ws_url, "root", server.password) as c:
        record = await wait_job(c, job_id)
    assert record["state"] == "SUCCESS", record
    for f in files:
        assert (folder / f.name).read_bytes() == f.read_bytes()
    assert list((server.data_dir / "spool").glob("*.upload")) == []


async def test_large_file_both_ways(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "big.bin", 110 * 1024 * 1024)
    target = server.data_dir / "files" / "big.bin"
    out = await acurl(*upload_args(server, "filesystem.put", [str(target)], src))
    job_id = json.loads(out.stdout)["job_id"]
    async with raw(server.ws_url, "root", server.password) as c:
        assert (await wait_job(c, job_id))["state"] == "SUCCESS"
        _, url = await c.call("core.download", "filesystem.get", [str(target)], "big.bin")
        dest = tmp_path / "big.back"
        await acurl("-o", str(dest), server.url + url)
    same = await asyncio.to_thread(subprocess.run, ["cmp", str(src), str(dest)], check=False)
    assert same.returncode == 0
    target.unlink()


async def test_upload_refusals(make_server: Callable[..., ServerProc], tmp_path: Path) -> None:
    srv = make_server("--max-upload-size", "100000")
    small = random_file(tmp_path / "small", 10)
    big = random_file(tmp_path / "big", 200_000)
    dest = str(srv.data_dir / "files" / "x")
    cases = [
        (
            400,
            [
                "-u",
                f"root:{srv.password}",
                "-F",
                "data={not json",
                "-F",
                f"file=@{small}",
                f"{srv.url}/_upload",
            ],
        ),
        (
            400,
            [
                "-u",
                f"root:{srv.password}",
                "-H",
                "Content-Type: application/json",
                "-d",
                "{}",
                f"{srv.url}/_upload",
            ],
        ),
        (401, upload_args(srv, "filesystem.put", [dest], small, auth=())),
        (401, upload_args(srv, "filesystem.put", [dest], small, auth=("-u", "root:wrong"))),
        (
            405,
            [
                "-u",
                f"root:{srv.password}",
                "-F",
                f"file=@{small}",
                "-F",
                'data={"method": "filesystem.put", "params": []}',
                f"{srv.url}/_upload",
            ],
        ),
        (413, upload_args(srv, "filesystem.put", [dest], big)),
        (422, upload_args(srv, "no.such_method", [], small)),
        (422, upload_args(srv, "filesystem.copy", ["/a", "/b"], small)),
        (422, upload_args(srv, "filesystem.put", [123], small)),
    ]
    for status, args in cases:
        code, body = status_and_body(*args)
        assert code == status, (args, code, body)
        assert body["error"] and body["status"] == status
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call(
            "user.create",
            {"username": "eve", "password": "eve-password", "allowlist": ["filesystem.*"]},
        )
    code, body = status_and_body(
        *upload_args(srv, "config.upload", [], small, auth=("-u", "eve:eve-password"))
    )
    assert code == 403 and "administrators" in body["error"]
    async with raw(srv.ws_url, "root", srv.password) as c:
        assert await c.call("core.ping") == "pong"


async def test_upload_credentials_kinds(server: ServerProc, tmp_path: Path) -> None:
    small = random_file(tmp_path / "k.bin", 100)
    folder = server.data_dir / "files"
    async with raw(server.ws_url, "root", server.password) as c:
        key = (await c.call("api_key.create", {"name": "upload"}))["key"]
        token = await c.call("auth.generate_token", 600, False)
        for i, auth in enumerate(
            [("-H", f"Authorization: Bearer {key}"), ("-H", f"Authorization: Token {token}")]
        ):
            out = await acurl(
                *upload_args(server, "filesystem.put", [str(folder / f"k{i}")], small, auth=auth)
            )
            assert (await wait_job(c, json.loads(out.stdout)["job_id"]))["state"] == "SUCCESS"
        args = upload_args(server, "filesystem.put", [str(folder / "k3")], small, auth=())
        args[-1] += f"?auth_token={token}"
        out = await acurl(*args)
        assert (await wait_job(c, json.loads(out.stdout)["job_id"]))["state"] == "SUCCESS"
        # A download token is not a login token.
        (folder / "k0").write_bytes(b"x")
        _, url = await c.call("core.download", "filesystem.get", [str(folder / "k0")], "k0", True)
        dl_token = url.split("auth_token=")[1]
        args = upload_args(server, "filesystem.put", [str(folder / "k4")], small, auth=())
        args[-1] += f"?auth_token={dl_token}"
        code, _ = status_and_body(*args)
        assert code == 401


async def test_download_refusals_and_deadline(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    srv = make_server("--download-start-timeout", "0.5")
    f = srv.data_dir / "files" / "d.bin"
    # Larger than what an unbuffered pipe holds in memory: the job waits for a reader.
    f.write_bytes(b"d" * (12 * 1024 * 1024))
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        job_id, url = await c.call("core.download", "filesystem.get", [str(f)], "d.bin")
        # Nobody fetches it: after the deadline the job is aborted and the URL is gone.
        aborted = await c.notification(
            lambda n: n["params"]["id"] == job_id and n["params"]["fields"]["state"] == "ABORTED"
        )
        assert "did not start within 0.5 s" in aborted["params"]["fields"]["error"]
        code, body = status_and_body(srv.url + url)
        assert code == 410 and "expired" in body["error"]
        job_id, url = await c.call("core.download", "filesystem.get", [str(f)], "d.bin", True)
        code, body = status_and_body(f"{srv.url}/_download/{job_id}?auth_token=wrong")
        assert code == 401 and body["error"]
        code, body = status_and_body(f"{srv.url}/_download/{job_id}")
        assert code == 401
        code, body = status_and_body(f"{srv.url}/_download/999999?auth_token=x")
        assert code == 404 and body["error"]
        code, body = status_and_body(f"{srv.url}/_download/notanumber?auth_token=x")
        assert code == 404
        # A token bound to one job does not open another.
        other_id, other_url = await c.call("core.download", "filesystem.get", [str(f)], "d", True)
        token = url.split("auth_token=")[1]
        code, _ = status_and_body(f"{srv.url}/_download/{other_id}?auth_token={token}")
        assert code == 401
        ok = await acurl("-o", str(tmp_path / "ok"), srv.url + other_url)
        assert ok.returncode == 0 and (tmp_path / "ok").read_bytes() == f.read_bytes()


async def test_buffered_resume_with_range(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(server.data_dir / "files" / "résumé ☃.bin", 5_000_000)
    async with raw(server.ws_url, "root", server.password) as c:
        job_id, url = await c.call(
            "core.download", "filesystem.get", [str(src)], "résumé ☃.bin", True
        )
        # Buffered: the job runs to the end without a reader and its output waits.
        assert (await wait_job(c, job_id))["state"] == "SUCCESS"
    part = tmp_path / "part"
    head = await acurl("-I", server.url + url)
    text = head.stdout.decode().lower()
    assert "accept-ranges: bytes" in text and "content-length: 5000000" in text
    assert "filename*=utf-8''r%c3%a9sum%c3%a9%20%e2%98%83.bin" in text
    # An interrupted transfer: only the first MiB arrived.
    await acurl("-r", "0-1048575", "-o", str(part), server.url + url)
    assert part.stat().st_size == 1048576
    await acurl("-C", "-", "-o", str(part), server.url + url)
    assert part.read_bytes() == src.read_bytes()
    code, body = status_and_body(server.url + url)
    assert code == 401 and "used" in body["error"]


def _partial_upload(server: ServerProc, dest: str) -> bytes:
    """The start of a multipart upload: the data part and a part of the file."""
    return upload_start(server, dest, [b"z" * 300_000], 5_000_000)


async def test_disconnect_mid_upload(server: ServerProc) -> None:
    dest = server.data_dir / "files" / "partial.bin"
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(_partial_upload(server, str(dest)))
        await writer.drain()
        started = await c.notification(
            lambda n: (
                n["params"]["fields"]["method"] == "filesystem.put"
                and n["params"]["msg"] == "added"
            )
        )
        job_id = started["params"]["id"]
        # The job receives what has come so far, then the client vanishes.
        await c.notification(
            lambda n: (
                n["params"]["id"] == job_id
                and (n["params"]["fields"]["progress"]["description"] or "").startswith("Received")
            )
        )
        writer.close()
        await writer.wait_closed()
        failed = await c.notification(
            lambda n: n["params"]["id"] == job_id and n["params"]["fields"]["state"] == "FAILED"
        )
        assert failed["params"]["fields"]["error"] == "Upload interrupted"
        assert await c.call("core.ping") == "pong"
        del reader
    assert not dest.exists()
    assert list(dest.parent.glob(".partial.bin.*")) == []
    assert list((server.data_dir / "spool").glob("*.upload")) == []


async def test_config_save_and_restore(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    srv = make_server()
    backup = tmp_path / "middlewared-backup.db"
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("user.create", {"username": "kept", "password": "kept-password"})
        job_id, url = await c.call("core.download", "config.save", [{}], "middlewared-backup.db")
        await acurl("-o", str(backup), srv.url + url)
        assert (await wait_job(c, job_id))["state"] == "SUCCESS"
        assert backup.read_bytes()[:16] == b"SQLite format 3\x00"
        await c.call("user.create", {"username": "later", "password": "later-password"})
        await c.call("core.set_options", {"legacy_jobs": True})
        after = await c.call("test.progress", 2)
        await c.call("core.set_options", {"legacy_jobs": False})
        # A bad file is refused with a reason and changes nothing.
        junk = random_file(tmp_path / "junk.db", 5000)
        out = await acurl(*upload_args(srv, "config.upload", [], junk))
        bad = await wait_job(c, json.loads(out.stdout)["job_id"])
        assert bad["state"] == "FAILED" and bad["error"] == "file: Not a SQLite database"
        assert await c.call("user.query", [["username", "=", "later"]])
        out = await acurl(*upload_args(srv, "config.upload", [], backup))
        good = await wait_job(c, json.loads(out.stdout)["job_id"])
        assert good["state"] == "SUCCESS", good
        users = {u["username"] for u in await c.call("user.query")}
        assert users == {"root", "kept"}
        # Jobs started after the snapshot are still there.
        assert await c.call("core.get_jobs", [["id", "=", after]], {"count": True}) == 1
        new = await c.call("core.set_options", {"legacy_jobs": True}) and await c.call(
            "test.progress", 1
        )
        assert new > good["id"]
    async with raw(srv.ws_url) as c:
        assert await c.call("auth.login", "later", "later-password") is False
        assert await c.call("auth.login", "kept", "kept-password") is True


async def test_job_download_logs(server: ServerProc, tmp_path: Path) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        job_id = await c.call("test.logs", 3)
        await c.call("core.set_options", {"legacy_jobs": False})
        await wait_job(c, job_id)
        url = await c.call("core.job_download_logs", job_id, "job.log")
    out = await acurl(server.url + url)
    assert out.stdout == b"line 0\nline 1\nline 2\n"


async def test_pipe_not_opened_fails_at_once(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        err = await c.error("filesystem.get", "/x")
        assert "needs its output pipe" in err["data"]["reason"]
        assert err["data"]["errname"] == "EPIPE"


@pytest.mark.parametrize("chunks", [0, 2])
async def test_download_of_a_job_failing_while_read(
    server: ServerProc, tmp_path: Path, chunks: int
) -> None:
    """A job that fails while its download is being read: before any byte the downloader gets
    409 with the reason; after some bytes the connection is cut, so curl fails rather than
    keep a short file. Never a hang (a 200 with a body that never ends was one, in CI)."""
    out = tmp_path / "out.bin"
    async with raw(server.ws_url, "root", server.password) as c:
        for _ in range(5):
            job_id, url = await c.call("core.download", "test.broken_output", [chunks], "b.bin")
            done = await acurl(
                "-w", "\n%{http_code}", "-o", str(out), server.url + url, check=False
            )
            record = await wait_job(c, job_id)
            assert record["state"] == "FAILED"
            if chunks == 0:
                assert done.returncode == 0 and done.stdout.decode().strip() == "409"
                body = json.loads(out.read_bytes())
                assert f"broken after {chunks} chunks" in body["error"]
            else:
                # curl: 18 (partial file) or 56 (failure receiving data), never success.
                assert done.returncode in (18, 56), done
                assert out.stat().st_size <= chunks * 65536


def test_an_upload_from_another_sites_page_is_refused(server: ServerProc, tmp_path: Path) -> None:
    """A form on another site can POST here without a preflight, and a browser adds the
    Basic credentials it cached for this server: such a request is refused, whatever it
    carries; the same upload from this origin (or from no browser) goes through."""
    src = random_file(tmp_path / "x.bin", 100)
    dest = str(server.data_dir / "files" / "cross-site.bin")
    args = upload_args(server, "filesystem.put", [dest], src)
    status, body = status_and_body("-H", "Origin: https://evil.example", *args)
    assert (status, body["error"]) == (403, "Cross-origin request refused")
    assert not Path(dest).exists()
    host = server.url.split("://", 1)[1]
    status, body = status_and_body("-H", f"Origin: http://{host}", *args)
    assert status == 200 and isinstance(body["job_id"], int), body
