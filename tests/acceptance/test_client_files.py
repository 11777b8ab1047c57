"""The Python clients and midclt moving files through jobs: upload, download, follow by id."""

from __future__ import annotations

import asyncio
import errno
import filecmp
import json
import os
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest

from middlewared.errors import ENOMETHOD, ENOTAUTHENTICATED
from middlewared_client import (
    AsyncClient,
    Client,
    JobProgress,
    MethodNotFound,
    MiddlewareError,
    NotAuthenticated,
    NotFound,
    ValidationErrors,
)
from middlewared_client.transfers import http_base
from tests.serverproc import ServerProc

WAIT = 30.0
MIB = 1024 * 1024


def connect(server: ServerProc, **kwargs: Any) -> Any:
    return AsyncClient.connect(server.ws_url, username="root", password=server.password, **kwargs)


def remote(server: ServerProc, name: str) -> Path:
    """A fresh path under the server's files root (the server is shared between tests)."""
    return server.data_dir / "files" / f"{uuid.uuid4().hex[:8]}-{name}"


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for start in range(0, size, 4 * MIB):
            f.write(os.urandom(min(4 * MIB, size - start)))
    return path


def leftovers(folder: Path) -> list[Path]:
    """Partial downloads left behind (the client writes to ``.NAME.*.part`` first)."""
    return sorted(folder.glob(".*.part"))


class Bytes:
    """Records a transfer's ``on_progress(done, total)`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


@pytest.mark.parametrize(
    ("ws_url", "base"),
    [
        ("ws://127.0.0.1:6000/api/current", "http://127.0.0.1:6000"),
        ("wss://nas.example:443/api/current", "https://nas.example:443"),
        ("wss://example.org/mw/api/current", "https://example.org/mw"),
        ("ws://[::1]:6000/websocket", "http://[::1]:6000"),
    ],
)
def test_http_base_from_the_websocket_url(ws_url: str, base: str) -> None:
    assert http_base(ws_url) == base


# Upload.


async def test_upload_one_file_to_a_path(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "one.bin", 1_500_001)
    target = remote(server, "one.bin")
    sent = Bytes()
    async with connect(server) as c:
        handle = await c.upload("filesystem.put", [str(target)], [src], on_progress=sent)
        assert isinstance(handle.id, int) and handle.method == "filesystem.put"
        assert await handle.result(WAIT) == [str(target)]
        assert handle.state == "SUCCESS" and handle.progress.percent == 100
        assert c.jobs_in_flight == 0
    assert target.read_bytes() == src.read_bytes()
    assert sent.calls[-1] == (1_500_001, 1_500_001)
    assert [done for done, _ in sent.calls] == sorted(done for done, _ in sent.calls)


async def test_upload_several_files_into_a_directory(server: ServerProc, tmp_path: Path) -> None:
    folder = remote(server, "many")
    folder.mkdir()
    files = [random_file(tmp_path / f"f{i}.dat", 10_000 * (i + 1)) for i in range(3)]
    renamed = random_file(tmp_path / "local-name", 777)
    async with connect(server) as c:
        handle = await c.upload("filesystem.put", [str(folder)], [*files, ("remote-name", renamed)])
        written = await handle.result(WAIT)
    names = [f.name for f in files] + ["remote-name"]
    assert written == [str(folder / n) for n in names]
    for f in files:
        assert (folder / f.name).read_bytes() == f.read_bytes()
    assert (folder / "remote-name").read_bytes() == renamed.read_bytes()


async def test_upload_follows_the_jobs_progress(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "p.bin", 3 * MIB)
    seen: list[JobProgress] = []
    async with connect(server) as c:
        handle = await c.upload("filesystem.put", [str(remote(server, "p.bin"))], [src])
        handle.add_progress_callback(seen.append)
        await handle.result(WAIT)
        record = handle.record
    assert record["id"] == handle.id and record["state"] == "SUCCESS"
    assert handle.progress.description == f"Received {3 * MIB} bytes"


async def test_upload_to_an_unknown_method_is_method_not_found(
    server: ServerProc, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "x", 10)
    async with connect(server) as c:
        with pytest.raises(MethodNotFound) as info:
            await c.upload("no.such_method", [], [src])
        assert info.value.reason == "Method 'no.such_method' does not exist"
        assert info.value.errno == ENOMETHOD
        # A method that takes no upload, and params that do not bind: the server's reasons.
        with pytest.raises(MiddlewareError, match="does not take an upload"):
            await c.upload("filesystem.copy", ["/a", "/b"], [src])
        with pytest.raises(ValidationErrors) as bad:
            await c.upload("filesystem.put", [123], [src])
        assert bad.value.errors and bad.value.errors[0][0].startswith("path")
        assert await c.call("core.ping") == "pong"


async def test_a_failed_upload_job_raises_its_error(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "dup", 100)
    target = remote(server, "dup")
    target.write_bytes(b"already here")
    async with connect(server) as c:
        handle = await c.upload("filesystem.put", [str(target)], [src])
        with pytest.raises(ValidationErrors) as info:
            await handle.result(WAIT)
    assert info.value.errors == [("path", f"{target} already exists", errno.EEXIST)]
    assert handle.state == "FAILED"
    assert target.read_bytes() == b"already here"


async def test_upload_of_a_missing_local_file_sends_nothing(
    server: ServerProc, tmp_path: Path
) -> None:
    async with connect(server) as c:
        before = await c.call("core.get_jobs", [], {"count": True})
        with pytest.raises(FileNotFoundError):
            await c.upload("filesystem.put", [str(remote(server, "m"))], [tmp_path / "nope"])
        with pytest.raises(IsADirectoryError):
            await c.upload("filesystem.put", [str(remote(server, "m"))], [tmp_path])
        assert await c.call("core.get_jobs", [], {"count": True}) == before


async def test_upload_streams_from_disk(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "stream.bin", 16 * MIB)
    async with connect(server) as c:
        tracemalloc.start()
        try:
            handle = await c.upload("filesystem.put", [str(remote(server, "s.bin"))], [src])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await handle.result(WAIT)
    assert peak < 4 * MIB, f"peak {peak} bytes: the file was not streamed"


# Download.


@pytest.mark.parametrize("buffered", [False, True])
async def test_download_byte_for_byte(server: ServerProc, tmp_path: Path, buffered: bool) -> None:
    src = random_file(remote(server, "get.bin"), 2_345_678)
    dest = tmp_path / "back.bin"
    got = Bytes()
    async with connect(server) as c:
        result = await c.download(
            "filesystem.get", [str(src)], "get.bin", dest, buffered=buffered, on_progress=got
        )
        assert c.jobs_in_flight == 0
    assert result is None
    assert dest.read_bytes() == src.read_bytes()
    assert got.calls[-1][0] == 2_345_678
    if buffered:  # a spooled file has a Content-Length
        assert got.calls[-1] == (2_345_678, 2_345_678)
    assert leftovers(tmp_path) == []


async def test_download_into_a_directory_uses_the_filename(
    server: ServerProc, tmp_path: Path
) -> None:
    src = random_file(remote(server, "named.bin"), 4096)
    async with connect(server) as c:
        await c.download("filesystem.get", [str(src)], "../named.bin", tmp_path)
    assert (tmp_path / "named.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("buffered", [False, True])
async def test_download_of_a_missing_path_is_a_validation_error(
    server: ServerProc, tmp_path: Path, buffered: bool
) -> None:
    missing = remote(server, "missing")
    dest = tmp_path / "never"
    async with connect(server) as c:
        with pytest.raises(ValidationErrors) as info:
            await c.download("filesystem.get", [str(missing)], "m", dest, buffered=buffered)
        assert await c.call("core.ping") == "pong"
    assert info.value.errors[0][0] == "path"
    assert "does not exist" in info.value.reason
    assert not dest.exists() and leftovers(tmp_path) == []


async def test_download_to_an_unwritable_place_starts_no_job(
    server: ServerProc, tmp_path: Path
) -> None:
    src = random_file(remote(server, "nowhere.bin"), 100)
    async with connect(server) as c:
        before = await c.call("core.get_jobs", [], {"count": True})
        with pytest.raises(FileNotFoundError):
            await c.download("filesystem.get", [str(src)], "n", tmp_path / "no" / "dir")
        assert await c.call("core.get_jobs", [], {"count": True}) == before


async def test_download_of_a_method_without_output(server: ServerProc, tmp_path: Path) -> None:
    async with connect(server) as c:
        with pytest.raises(ValidationErrors, match="produces no download"):
            await c.download("filesystem.copy", ["/a", "/b"], "x", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_twenty_mib_both_ways_with_the_sync_client(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "big.bin", 20 * MIB)
    target = remote(server, "big.bin")
    back = tmp_path / "big.back"
    with Client(server.ws_url, username="root", password=server.password) as c:
        handle = c.upload("filesystem.put", [str(target)], [src])
        assert handle.result(WAIT) == [str(target)]
        assert c.download("filesystem.get", [str(target)], "big.bin", back) is None
        buffered_back = tmp_path / "big.buffered"
        c.download("filesystem.get", [str(target)], "big.bin", buffered_back, buffered=True)
    assert filecmp.cmp(src, back, shallow=False)
    assert filecmp.cmp(src, buffered_back, shallow=False)
    target.unlink()


def test_sync_errors_are_raised(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "e", 10)
    with Client(server.ws_url, username="root", password=server.password) as c:
        with pytest.raises(MethodNotFound):
            c.upload("no.such_method", [], [src])
        with pytest.raises(ValidationErrors):
            c.download("filesystem.get", [str(remote(server, "gone"))], "g", tmp_path / "g")


# Credentials.


async def test_api_key_and_token_credentials(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "cred.bin", 5000)
    async with connect(server) as root:
        key = await root.call("api_key.create", {"name": f"files-{uuid.uuid4().hex[:6]}"})
        token = await root.call("auth.generate_token", 600, False)
    clients = [
        AsyncClient.connect(server.ws_url, api_key=key["key"]),
        AsyncClient.connect(server.ws_url, token=token),
    ]
    for kind, connecting in zip(("key", "token"), clients, strict=True):
        async with connecting as c:
            # Twice: a token login needs a fresh single-use token for each transfer.
            for i in range(2):
                target = remote(server, f"{kind}{i}")
                handle = await c.upload("filesystem.put", [str(target)], [src])
                assert await handle.result(WAIT) == [str(target)]
                back = tmp_path / f"{kind}{i}.back"
                await c.download("filesystem.get", [str(target)], "b", back)
                assert back.read_bytes() == src.read_bytes()
            assert (await handle.wait_id()) == handle.id
    async with connect(server) as root:
        record = await root.call("core.get_jobs", [["id", "=", handle.id]], {"get": True})
    assert record["credentials"]["type"] == "TOKEN"


async def test_a_revoked_api_key_is_refused_over_http(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "r", 10)
    async with connect(server) as root:
        key = await root.call("api_key.create", {"name": f"revoked-{uuid.uuid4().hex[:6]}"})
        async with AsyncClient.connect(server.ws_url, api_key=key["key"]) as c:
            await root.call("api_key.delete", key["id"])
            with pytest.raises(NotAuthenticated) as info:
                await c.upload("filesystem.put", [str(remote(server, "r"))], [src])
    assert info.value.errno == ENOTAUTHENTICATED
    assert info.value.reason == "Invalid credentials"


# Following a job by id.


async def test_follow_a_job_started_elsewhere(server: ServerProc) -> None:
    gate = f"files-{uuid.uuid4().hex}"
    seen: list[JobProgress] = []
    async with connect(server) as starter, connect(server) as follower:
        started = await starter.call("test.progress", 4, gate, job=True)
        job_id = await started.wait_id(WAIT)
        handle = await follower.follow_job(job_id, on_progress=seen.append)
        assert handle.id == job_id and handle.method == "test.progress"
        await starter.call("test.open_gate", gate)
        assert await handle.result(WAIT) == 4
        assert await started.result(WAIT) == 4
    assert seen and seen[-1].percent == 100


async def test_follow_and_abort(server: ServerProc) -> None:
    gate = f"files-{uuid.uuid4().hex}"
    async with connect(server) as starter, connect(server) as follower:
        started = await starter.call("test.wait", gate, job=True)
        handle = await follower.follow_job(await started.wait_id(WAIT))
        await handle.abort()
        with pytest.raises(MiddlewareError) as info:
            await handle.result(WAIT)
    assert info.value.errno == errno.ECANCELED
    assert handle.state == "ABORTED"


async def test_follow_an_ended_job_keeps_its_error(server: ServerProc, tmp_path: Path) -> None:
    async with connect(server) as c:
        job_id, _ = await c.call(
            "core.download", "filesystem.get", [str(remote(server, "no"))], "no", True
        )
        with pytest.raises(MiddlewareError):
            await c.call("core.job_wait", job_id)
        # Ended already: still the validation error, not a bare CallError.
        with pytest.raises(ValidationErrors) as info:
            await (await c.follow_job(job_id)).result(WAIT)
        assert info.value.errors[0][0] == "path"
        with pytest.raises(NotFound):
            await c.follow_job(2**40)


# midclt.


def midclt(server: ServerProc, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "middlewared_client.midclt", "-u", server.ws_url]
    cmd += ["-U", "root", "-P", server.password, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDCLT_")}
    done = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_midclt_upload_and_download(server: ServerProc, tmp_path: Path) -> None:
    folder = remote(server, "cli")
    folder.mkdir()
    files = [random_file(tmp_path / f"c{i}.bin", 3 * MIB + i) for i in range(2)]
    done = midclt(server, "upload", "filesystem.put", json.dumps([str(folder)]), *map(str, files))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [str(folder / f.name) for f in files]
    for buffered in ([], ["--buffered"]):
        back = tmp_path / f"back{len(buffered)}"
        args = [json.dumps([str(folder / "c1.bin")]), "c1.bin", str(back), *buffered]
        done = midclt(server, "download", "filesystem.get", *args)
        assert (done.returncode, done.stdout, done.stderr) == (0, "null\n", "")
        assert back.read_bytes() == files[1].read_bytes()


def test_midclt_progress_with_j(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "j.bin", 2 * MIB)
    target = remote(server, "j.bin")
    done = midclt(server, "upload", "-j", "filesystem.put", json.dumps([str(target)]), str(src))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [str(target)]
    assert f"Sent {2 * MIB} of {2 * MIB} bytes" in done.stderr
    assert done.stderr.endswith("\n")
    back = tmp_path / "j.back"
    done = midclt(
        server, "download", "-j", "filesystem.get", json.dumps([str(target)]), "j", str(back)
    )
    assert done.returncode == 0, done.stderr
    assert f"Received {2 * MIB} bytes" in done.stderr
    assert back.read_bytes() == src.read_bytes()


def test_midclt_errors_exit_1_with_the_reason(server: ServerProc, tmp_path: Path) -> None:
    src = random_file(tmp_path / "e.bin", 10)
    done = midclt(server, "upload", "no.such_method", "[]", str(src))
    assert done.returncode == 1 and done.stdout == ""
    assert "midclt: [ENOMETHOD] Method 'no.such_method' does not exist" in done.stderr
    missing = remote(server, "missing")
    dest = tmp_path / "never"
    done = midclt(server, "download", "filesystem.get", json.dumps([str(missing)]), "m", str(dest))
    assert done.returncode == 1 and done.stdout == ""
    assert "midclt: [EINVAL] path: Path does not exist" in done.stderr
    assert not dest.exists()
    done = midclt(server, "upload", "filesystem.put", "[]", str(tmp_path / "absent"))
    assert done.returncode == 1
    assert f"midclt: No such file or directory: {tmp_path / 'absent'}" in done.stderr
    nowhere = tmp_path / "no" / "such"
    done = midclt(
        server, "download", "filesystem.get", json.dumps([str(missing)]), "m", str(nowhere)
    )
    assert done.returncode == 1
    assert "midclt: No such file or directory: " in done.stderr
    done = midclt(server, "download", "filesystem.get", "{}", "x", str(dest))
    assert done.returncode == 2 and "not a JSON array" in done.stderr


@pytest.mark.parametrize("chunks", [0, 2])
async def test_client_download_of_a_job_failing_while_read(
    server: ServerProc, tmp_path: Path, chunks: int
) -> None:
    """The Python client raises (never hangs, never keeps a short file) when the job fails
    while it downloads."""
    dest = tmp_path / "b.bin"
    async with await connect(server) as c:
        for _ in range(5):
            with pytest.raises(MiddlewareError) as raised:
                await asyncio.wait_for(
                    c.download("test.broken_output", [chunks], "b.bin", dest), timeout=WAIT
                )
            assert not dest.exists() and leftovers(tmp_path) == []
            if chunks == 0:
                assert f"broken after {chunks} chunks" in str(raised.value)
