"""The filesystem methods under attack: a process racing symlinks into a root, a destination
that appears mid-copy, setuid modes, one lock per path, and names that are not UTF-8."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from middlewared_client import AsyncClient, CallError, MiddlewareError, ValidationErrors
from tests.fsracer import racing
from tests.multipart import upload_start
from tests.serverproc import ServerProc
from tests.wsraw import raw

T = TypeVar("T")
WAIT = 30.0
INSIDE = b"inside"
OUTSIDE = b"OUTSIDE-CANARY " * 100
METADATA_ROUNDS = 300
DATA_ROUNDS = 40


def connect(server: ServerProc) -> Any:
    return AsyncClient.connect(server.ws_url, username="root", password=server.password)


@dataclass
class Arena:
    """Inside the root, ``dir`` (a directory) and ``link`` (a symlink to ``outside``), which
    the racer swaps; ``outside`` holds files of the same names as inside, and a canary."""

    base: Path
    dir: Path
    link: Path
    outside: Path

    def outside_state(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.outside.iterdir()}


@pytest.fixture
def arena(server: ServerProc, tmp_path: Path) -> Arena:
    base = server.data_dir / "files" / f"race-{uuid.uuid4().hex[:8]}"
    (base / "dir").mkdir(parents=True)
    (base / "dir" / "inside.txt").write_bytes(INSIDE)
    (base / "seed.txt").write_bytes(INSIDE)
    (base / "copies").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "inside.txt").write_bytes(OUTSIDE)
    (outside / "canary.txt").write_bytes(OUTSIDE)
    os.symlink(outside, base / "link")
    return Arena(base, base / "dir", base / "link", outside)


class Outcomes:
    """What each call came to: served, or refused with which errno (all must be allowed)."""

    def __init__(self) -> None:
        self.counts = Counter[str]()

    async def attempt(self, what: str, call: Awaitable[T]) -> T | None:
        try:
            result = await call
        except MiddlewareError as e:
            code = e.errors[0][2] if isinstance(e, ValidationErrors) and e.errors else e.errno
            self.counts[f"{what} refused {errno.errorcode.get(code, code)}"] += 1
            return None
        self.counts[f"{what} served"] += 1
        return result

    def check(self, *whats: str) -> None:
        """Each call was served at times, and refused only for the symlink in its way."""
        print(dict(self.counts))
        for what in whats:
            assert self.counts[f"{what} served"], self.counts
        refused = {k.rpartition(" ")[2] for k in self.counts if " refused " in k}
        assert refused <= {"ELOOP"}, self.counts


async def test_listdir_and_stat_never_reach_outside_a_racing_symlink(
    server: ServerProc, arena: Arena
) -> None:
    before = arena.outside_state()
    outcomes = Outcomes()
    async with connect(server) as c:
        with racing(arena.dir, arena.link) as swaps:
            for _ in range(METADATA_ROUNDS):
                listed = await outcomes.attempt(
                    "listdir", c.call("filesystem.listdir", str(arena.dir))
                )
                if listed is not None:
                    assert [(e["name"], e["size"]) for e in listed] == [("inside.txt", 6)], listed
                entry = await outcomes.attempt(
                    "stat", c.call("filesystem.stat", str(arena.dir / "inside.txt"))
                )
                if entry is not None:
                    assert entry["size"] == len(INSIDE), entry
    print(f"{swaps[0]} swaps")
    assert swaps[0] > 0
    assert arena.outside_state() == before
    outcomes.check("listdir", "stat")


async def test_put_get_copy_never_reach_outside_a_racing_symlink(
    server: ServerProc, arena: Arena, tmp_path: Path
) -> None:
    before = arena.outside_state()
    local = tmp_path / "up.bin"
    local.write_bytes(INSIDE)
    outcomes = Outcomes()

    async def one_round(c: Any, i: int) -> None:
        back = tmp_path / f"back-{i}"
        await outcomes.attempt(
            "get", c.download("filesystem.get", [str(arena.dir / "inside.txt")], "x", back)
        )
        if back.exists():
            assert back.read_bytes() == INSIDE
        upload = await c.upload("filesystem.put", [str(arena.dir / f"up-{i}")], [local])
        await outcomes.attempt("put", upload.result(WAIT))
        copy_out = arena.base / "copies" / f"c-{i}"
        await outcomes.attempt(
            "copy from", c.call("filesystem.copy", str(arena.dir / "inside.txt"), str(copy_out))
        )
        if copy_out.exists():
            assert copy_out.read_bytes() == INSIDE
        await outcomes.attempt(
            "copy into",
            c.call("filesystem.copy", str(arena.base / "seed.txt"), str(arena.dir / f"cp-{i}")),
        )

    async with connect(server) as c:
        with racing(arena.dir, arena.link) as swaps:
            for i in range(DATA_ROUNDS):
                await one_round(c, i)
    print(f"{swaps[0]} swaps")
    assert swaps[0] > 0
    # Nothing written outside, nothing changed there.
    assert arena.outside_state() == before
    real = arena.dir if not arena.dir.is_symlink() else arena.link
    written = {p.name for p in real.iterdir()}
    assert outcomes.counts["put served"] == sum(n.startswith("up-") for n in written)
    assert outcomes.counts["copy into served"] == sum(n.startswith("cp-") for n in written)
    outcomes.check("get", "put", "copy from", "copy into")


# --- a destination that appears mid-copy --------------------------------------------------------


def plant_when_created(folder: Path, name: str, stop: threading.Event, planted: list[bool]) -> None:
    """As soon as ``folder`` exists, create ``name`` in it (what another client does)."""
    while not stop.is_set():
        if folder.is_dir():
            try:
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except (FileExistsError, FileNotFoundError):
                planted.append(False)  # the copy made it first, or was already undone
                return
            os.write(fd, b"theirs")
            os.close(fd)
            planted.append(True)
            return


async def test_copy_removes_only_what_it_created(server: ServerProc) -> None:
    base = server.data_dir / "files" / f"appear-{uuid.uuid4().hex[:8]}"
    src = base / "src"
    src.mkdir(parents=True)
    # A large first file gives the other client time to plant the last name.
    (src / "a.bin").write_bytes(os.urandom(64 * 1024 * 1024))
    (src / "z.txt").write_bytes(b"ours")
    async with connect(server) as c:
        for attempt in range(3):
            dst = base / f"dst{attempt}"
            stop, planted = threading.Event(), list[bool]()
            other = threading.Thread(target=plant_when_created, args=(dst, "z.txt", stop, planted))
            other.start()
            try:
                await c.call("filesystem.copy", str(src), str(dst))
                failed: MiddlewareError | None = None
            except MiddlewareError as e:
                failed = e
            finally:
                stop.set()
                await asyncio.to_thread(other.join)
            if planted == [True]:
                break
        else:
            pytest.fail("the other client never won the race to create dst/z.txt")
    # The other client's file, and so the directory, stay; the copy's own a.bin is gone.
    assert (dst / "z.txt").read_bytes() == b"theirs"
    assert sorted(os.listdir(dst)) == ["z.txt"]
    assert isinstance(failed, CallError) and failed.errno == errno.EEXIST, repr(failed)
    assert "z.txt already exists" in failed.reason


# --- one lock per path, however spelled ---------------------------------------------------------

BOUNDARY_END = b"\r\n--XyZdisconnect--\r\n"


async def wait_running(c: Any, path: Path) -> dict[str, Any]:
    """The upload job into ``path`` once it runs (it holds its lock from then on)."""
    deadline = time.monotonic() + WAIT
    while True:
        jobs = await c.call("core.get_jobs", [["arguments.0", "=", str(path)]])
        if jobs and jobs[0]["state"] == "RUNNING":
            return dict(jobs[0])
        assert time.monotonic() < deadline, jobs
        await asyncio.sleep(0.05)


async def test_put_takes_one_lock_per_path_however_spelled(
    server: ServerProc, tmp_path: Path
) -> None:
    folder = server.data_dir / "files" / f"lock-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    small = tmp_path / "small"
    small.write_bytes(b"later")
    declared = 1_000_000
    holder = socket.create_connection((server.host, server.port), timeout=WAIT)
    try:
        holder.sendall(upload_start(server, str(folder / "x"), [b"f" * 100_000], declared))
        async with connect(server) as c:
            first = await wait_running(c, folder / "x")
            # The same path, spelled otherwise: each must wait for the first upload's lock.
            spellings = [f"{folder}//x", f"{folder}/./x", f"{folder}/y/../x"]
            waiting = [
                await c.upload("filesystem.put", [s, {"overwrite": True}], [small])
                for s in spellings
            ]
            # Another path goes through meanwhile; by then the others would have run too.
            other = await c.upload("filesystem.put", [str(folder / "other")], [small])
            assert await other.result(WAIT) == [str(folder / "other")]
            for handle in waiting:
                job = await c.call("core.get_jobs", [["id", "=", handle.id]], {"get": True})
                assert job["state"] == "WAITING", job
            holder.sendall(b"f" * (declared - len(BOUNDARY_END)) + BOUNDARY_END)
            for handle in waiting:
                assert await handle.result(WAIT) == [str(folder / "x")]
            first = await c.call("core.get_jobs", [["id", "=", first["id"]]], {"get": True})
            assert first["state"] == "SUCCESS", first
    finally:
        holder.close()
    assert (folder / "x").read_bytes() == b"later"


# --- modes --------------------------------------------------------------------------------------


async def test_put_refuses_setuid_setgid_and_sticky_modes(
    server: ServerProc, tmp_path: Path
) -> None:
    folder = server.data_dir / "files" / f"mode-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    local = tmp_path / "m"
    local.write_bytes(b"#!/bin/sh\n")
    async with raw(server.ws_url, "root", server.password) as r:
        for mode in (0o4755, 0o2755, 0o1777, 0o7777):
            err = await r.error("filesystem.put", str(folder / "s"), {"mode": mode})
            assert err["code"] == -32602, err
            assert [e[0] for e in err["data"]["extra"]] == ["options.mode"], err
    async with connect(server) as c:
        with pytest.raises(ValidationErrors) as refused:
            await c.upload("filesystem.put", [str(folder / "s"), {"mode": 0o4755}], [local])
        assert refused.value.errors[0][0] == "options.mode"
        handle = await c.upload("filesystem.put", [str(folder / "s"), {"mode": 0o755}], [local])
        await handle.result(WAIT)
    assert not (folder / "s").exists() or stat.S_IMODE((folder / "s").stat().st_mode) == 0o755


async def test_copy_drops_setuid_setgid_and_sticky_bits(server: ServerProc) -> None:
    folder = server.data_dir / "files" / f"suid-{uuid.uuid4().hex[:8]}"
    (folder / "tree").mkdir(parents=True)
    for name, mode in (("suid", 0o4755), ("sgid", 0o2750), ("all", 0o7777)):
        (folder / "tree" / name).write_bytes(b"x")
        os.chmod(folder / "tree" / name, mode)
    async with connect(server) as c:
        assert await c.call("filesystem.copy", str(folder / "tree"), str(folder / "copy")) is True
        await c.call("filesystem.copy", str(folder / "tree" / "suid"), str(folder / "one"))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (folder / "copy").iterdir()}
    assert modes == {"suid": 0o755, "sgid": 0o750, "all": 0o777}
    assert stat.S_IMODE((folder / "one").stat().st_mode) == 0o755


# --- names that are not UTF-8 -------------------------------------------------------------------


async def test_a_name_that_is_not_utf8_round_trips_escaped(server: ServerProc) -> None:
    folder = server.data_dir / "files" / f"bytes-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    fd = os.open(os.fsencode(folder) + b"/caf\xe9.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"latin-1")
    os.close(fd)
    (folder / "plain.txt").write_bytes(b"p")
    async with raw(server.ws_url, "root", server.password) as r:
        listed = await r.call("filesystem.listdir", str(folder))
        by_name = {e["name"]: e for e in listed}
        assert set(by_name) == {"caf\udce9.txt", "plain.txt"}, listed
        odd = by_name["caf\udce9.txt"]
        assert odd["escaped"] is True and by_name["plain.txt"]["escaped"] is False
        # The string sent back reaches the same file.
        again = await r.call("filesystem.stat", odd["path"])
        assert again == odd
        # A surrogate that escapes no byte cannot name a file: refused, naming the field.
        err = await r.error("filesystem.stat", f"{folder}/\ud800.txt")
        assert err["code"] == -32602, err
        assert err["data"]["extra"][0][:1] == ["path"], err
