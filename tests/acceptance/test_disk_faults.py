"""A data dir on a disk that fills up or turns read-only, at start and while running.

The data dir lives on a small ext4 file system of its own, in a loop device mounted with
``errors=remount-ro`` (this needs root; CI runs as root): filling it gives the real ENOSPC;
ext4's ``trigger_fs_error`` turns it read-only under the running server, as the kernel does
after a disk error, so that files already open for writing get the real EROFS (a plain
``mount -o remount,ro`` is refused while files are open for writing). What must hold:
the server says clearly why it cannot work (an exit with the reason at start, a JSON-RPC
error with the reason while running), keeps serving what needs no write, loses nothing it
acknowledged, and its store passes ``PRAGMA integrity_check`` afterwards.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rpcsync import Rpc, wait_ended, wait_for
from tests.serverproc import ROOT_PASSWORD, ServerProc

FS_SIZE = "32M"


@dataclass
class Disk:
    mnt: Path
    device: str  # /dev/loopN

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.mnt)], check=True)

    def fail(self) -> None:
        """A file system error: ext4 turns itself read-only at once (errors=remount-ro)."""
        name = Path(self.device).name
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("middlewared test\n")

    def repair(self, image: Path) -> None:
        """Unmount, fsck, mount again read-write."""
        subprocess.run(["umount", str(self.mnt)], check=True)
        subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, check=False)
        self.device = _mount(image, self.mnt)


def _mount(image: Path, mnt: Path) -> str:
    subprocess.run(
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mnt)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    image, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", FS_SIZE, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    try:
        device = _mount(image, mnt)
    except subprocess.CalledProcessError as e:
        pytest.skip(
            "these tests mount a small ext4 image to fill it and make it read-only, which "
            f"needs root and loop devices: {e.stderr.strip()}"
        )
    d = Disk(mnt, device)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d.mnt)], check=False)


def _fill(mnt: Path) -> Path:
    """Write until the disk is full; the file that filled it."""
    filler = mnt / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):  # then the last partial blocks
            with suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


def _integrity(db: Path) -> tuple[str, dict[int, str]]:
    with sqlite3.connect(db) as c:
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        states = dict(c.execute("SELECT id, state FROM jobs"))
    return ok, states


def _start_fails(data: Path) -> str:
    """Run the server on ``data``: it must exit 1 with one line saying why."""
    done = subprocess.run(
        [sys.executable, "-m", "middlewared", "--port", "0", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MIDDLEWARED_ROOT_PASSWORD": ROOT_PASSWORD, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


def _first_store(make_server: Callable[..., ServerProc], data: Path) -> list[int]:
    """Start a server on ``data``, run two jobs to their end, stop it; their ids."""
    srv = make_server(data_dir=data)
    rpc = Rpc(srv.ws_url, srv.password)
    ids = [rpc.start("test.progress", 2), rpc.start("test.fail", "before")]
    wait_ended(rpc, ids)
    rpc.close()
    assert srv.stop() == 0
    return ids


def test_read_only_data_dir_at_start(disk: Disk, make_server: Callable[..., ServerProc]) -> None:
    fresh, used = disk.mnt / "fresh", disk.mnt / "used"
    ids = _first_store(make_server, used)
    disk.remount("ro")
    for data in (fresh, used):
        stderr = _start_fails(data)
        assert "Read-only file system" in stderr and str(data) in stderr, stderr
    disk.remount("rw")
    ok, states = _integrity(used / "middlewared.db")
    assert ok == "ok" and set(states) == set(ids), (ok, states)


def test_disk_full_at_start(disk: Disk, make_server: Callable[..., ServerProc]) -> None:
    data = disk.mnt / "data"
    ids = _first_store(make_server, data)
    filler = _fill(disk.mnt)
    stderr = _start_fails(data)
    assert "ENOSPC" in stderr and f"the disk holding {data} is full" in stderr, stderr
    filler.unlink()
    ok, states = _integrity(data / "middlewared.db")
    assert ok == "ok" and set(states) == set(ids), (ok, states)
    # Room again: it starts, with every job.
    srv = make_server(data_dir=data)
    rpc = Rpc(srv.ws_url, srv.password)
    assert [j["id"] for j in rpc.result("core.get_jobs", [], {"order_by": ["id"]})] == ids
    rpc.close()


def _job_refused(rpc: Rpc, errname: str, words: str) -> None:
    reply = rpc.call("test.progress", 1)
    assert "error" in reply, reply
    data = reply["error"]["data"]
    assert data["errname"] == errname and words in data["reason"], reply
    assert "Traceback" not in str(reply)


def _running_and_done(rpc: Rpc) -> tuple[int, int]:
    done = rpc.start("test.progress", 2)
    running = rpc.start("test.wait", "disk-gate")
    wait_ended(rpc, [done])
    wait_for(lambda: rpc.job(running)["state"] == "RUNNING", "the job to run")
    return done, running


def _finish_unstored(rpc: Rpc, running: int, done: int) -> None:
    """The running job ends while nothing can be written: its true end is shown."""
    assert rpc.result("core.ping") == "pong"
    assert rpc.result("test.open_gate", "disk-gate") is True
    (record,) = wait_ended(rpc, [running])
    assert record["state"] == "SUCCESS", record
    assert {j["id"] for j in rpc.result("core.get_jobs")} == {done, running}


def test_disk_full_while_running(disk: Disk, make_server: Callable[..., ServerProc]) -> None:
    """New jobs are refused with the reason; a job that ends meanwhile keeps its final state
    (shown at once, stored once there is room); reads and pings go on."""
    data = disk.mnt / "data"
    srv = make_server(data_dir=data)
    rpc = Rpc(srv.ws_url, srv.password)
    done, running = _running_and_done(rpc)
    filler = _fill(disk.mnt)
    _job_refused(rpc, "ENOSPC", f"the disk holding {data / 'middlewared.db'} is full")
    _finish_unstored(rpc, running, done)
    filler.unlink()
    (again,) = wait_ended(rpc, [rpc.start("test.progress", 2)])
    assert again["state"] == "SUCCESS", again
    rpc.close()
    assert srv.stop() == 0
    ok, states = _integrity(data / "middlewared.db")
    assert ok == "ok", ok
    assert states == {done: "SUCCESS", running: "SUCCESS", again["id"]: "SUCCESS"}, states


def test_disk_turns_read_only_while_running(
    disk: Disk, make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    """As after a disk error: new jobs are refused with EROFS and the reason, the server keeps
    serving and stops cleanly; after fsck every acknowledged job is there."""
    data = disk.mnt / "data"
    srv = make_server(data_dir=data)
    rpc = Rpc(srv.ws_url, srv.password)
    done, running = _running_and_done(rpc)
    disk.fail()
    _job_refused(rpc, "EROFS", f"the file system holding {data / 'middlewared.db'} is read-only")
    _finish_unstored(rpc, running, done)
    rpc.close()
    assert srv.stop() == 0
    disk.repair(tmp_path / "disk.img")
    ok, states = _integrity(data / "middlewared.db")
    assert ok == "ok", ok
    assert set(states) == {done, running} and states[done] == "SUCCESS", states
    srv = make_server(data_dir=data)
    rpc = Rpc(srv.ws_url, srv.password)
    record = rpc.job(running)
    # Its end was never stored: after the restart it says so rather than pretend.
    assert record["state"] == "FAILED" and "Interrupted" in record["error"], record
    rpc.close()
