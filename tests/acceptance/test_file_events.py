"""filesystem.files over the wire with the kernel's real inotify: other programs' files (one
event per path once its writes settle), the API's own writes (at once, with their job as
cause, never twice), floods (bounded), a root that disappears, who may subscribe."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PLUGINS
from tests.rpcsync import POLL
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

CURL = shutil.which("curl")
FILES = "filesystem.files"
# Wait this long for an event; a settle time is far shorter.
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def fs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A server of this module's own: its settings change here."""
    data = tmp_path_factory.mktemp("fsevents")
    files = data / "files"
    files.mkdir()
    proc = ServerProc(
        data_dir=data, args=["--fs-root", str(files), "--plugins-dir", str(PLUGINS)]
    ).start()
    yield proc
    proc.stop()


def root_of(server: ServerProc) -> Path:
    return server.data_dir / "files"


async def watched(c: Raw, root: Path, **settings: Any) -> None:
    """Settings applied, and the root's inotify watch in place (it starts beside serving)."""
    if settings:
        await c.call("settings.update", "filesystem", settings)
    deadline = time.monotonic() + TIMEOUT
    while str(root) not in (await c.call("filesystem.watch_status"))["watching"]:
        assert time.monotonic() < deadline, "the root is not watched"
        await c.call("core.ping")


def about(path: str | Path) -> Callable[[dict[str, Any]], bool]:
    text = os.fsdecode(path)
    return lambda n: n["params"].get("collection") == FILES and n["params"].get("id") == text


def under(folder: Path) -> Callable[[dict[str, Any]], bool]:
    prefix = str(folder) + "/"
    return lambda n: n["params"]["collection"] == FILES and n["params"]["id"].startswith(prefix)


async def event(c: Raw, path: str | Path) -> dict[str, Any]:
    params: dict[str, Any] = (await c.notification(about(path), timeout=TIMEOUT))["params"]
    return params


async def barrier(c: Raw, folder: Path) -> None:
    """Write a file and wait for its event: whatever an earlier change would publish has
    been published (events come out in the order their paths went quiet)."""
    mark = folder / f"barrier-{uuid.uuid4().hex[:6]}"
    mark.write_bytes(b"")
    assert (await event(c, mark))["msg"] == "added"


def left_over(c: Raw, path: str | Path) -> list[dict[str, Any]]:
    return [n["params"] for n in c.notifications if about(path)(n)]


def run_python(code: str, *args: str) -> None:
    """Another program: a separate process, as any program writing into a root."""
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=120)


CHUNKED_WRITER = """
import sys, time
with open(sys.argv[1], sys.argv[2]) as f:
    for _ in range(8):
        f.write(b"x" * 1000)
        f.flush()
        time.sleep(0.02)  # far shorter than the settle time
"""


async def test_a_file_another_program_writes_in_chunks_is_one_event_per_change(
    fs_server: ServerProc,
) -> None:
    folder = root_of(fs_server) / "chunks"
    folder.mkdir()
    target = folder / "data.bin"
    async with raw(fs_server.ws_url, "root", fs_server.password) as c:
        await watched(c, root_of(fs_server), settle=1.0)
        await c.call("core.subscribe", FILES)
        run_python(CHUNKED_WRITER, str(target), "wb")
        added = await event(c, target)
        assert added["msg"] == "added"
        fields = added["fields"]
        assert fields["size"] == 8000  # after the last chunk, not midway
        assert fields["path"] == str(target) and fields["type"] == "FILE"
        assert fields["mime"] == "application/octet-stream" and fields["cause"] is None
        assert fields["mtime"] == pytest.approx(target.stat().st_mtime)
        assert fields["escaped"] is False
        run_python(CHUNKED_WRITER, str(target), "ab")
        changed = await event(c, target)
        assert changed["msg"] == "changed" and changed["fields"]["size"] == 16000
        target.unlink()
        removed = await event(c, target)
        assert removed == {"msg": "removed", "collection": FILES, "id": str(target)}
        await barrier(c, folder)
        assert left_over(c, target) == []


async def test_a_directory_and_a_name_that_is_not_utf8(fs_server: ServerProc) -> None:
    folder = root_of(fs_server) / "names"
    async with raw(fs_server.ws_url, "root", fs_server.password) as c:
        await watched(c, root_of(fs_server), settle=0.2)
        await c.call("core.subscribe", FILES)
        folder.mkdir()
        made = await event(c, folder)
        assert made["msg"] == "added" and made["fields"]["type"] == "DIRECTORY"
        assert made["fields"]["mime"] is None
        raw_name = os.fsencode(folder) + b"/caf\xe9.txt"
        run_python(
            "import sys, os; open(os.fsencode(sys.argv[1]), 'wb').write(b'latin-1')",
            os.fsdecode(raw_name),
        )
        text = os.fsdecode(raw_name)
        assert text.endswith("caf\udce9.txt")
        added = await event(c, text)
        assert added["msg"] == "added" and added["fields"]["escaped"] is True
        assert added["fields"]["mime"] == "text/plain" and added["fields"]["size"] == 7
        # The escaped path reaches the same file.
        assert (await c.call("filesystem.stat", text))["size"] == 7
        os.unlink(raw_name)
        assert (await event(c, text))["msg"] == "removed"


def upload(server: ServerProc, dest: Path, source: Path, *extra: str) -> int:
    assert CURL is not None
    data = json.dumps({"method": "filesystem.put", "params": [str(dest), *map(json.loads, extra)]})
    auth, url = f"root:{server.password}", f"{server.url}/_upload"
    out = subprocess.run(
        [CURL, "-sS", "-u", auth, "-F", f"data={data}", "-F", f"file=@{source}", url],
        capture_output=True,
        check=True,
        timeout=120,
    )
    job_id: int = json.loads(out.stdout)["job_id"]
    return job_id


@pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")
async def test_a_put_is_one_event_with_its_job_as_cause_and_no_inotify_echo(
    fs_server: ServerProc, tmp_path: Path
) -> None:
    folder = root_of(fs_server) / "uploads"
    folder.mkdir()
    target = folder / "report.csv"
    source = tmp_path / "report.csv"
    source.write_bytes(b"a,b\n" * 50_000)
    async with raw(fs_server.ws_url, "root", fs_server.password) as c:
        await watched(c, root_of(fs_server), settle=0.2)
        await c.call("core.subscribe", FILES)
        before = (await c.call("filesystem.watch_status"))["suppressed"]
        job_id = upload(fs_server, target, source)
        added = await event(c, target)
        assert added["msg"] == "added"
        assert added["fields"]["cause"] == job_id
        assert added["fields"]["size"] == 200_000 and added["fields"]["mime"] == "text/csv"
        await c.call("core.job_wait", job_id)
        # Overwritten by the API: changed, again the job's.
        again = upload(fs_server, target, source, '{"overwrite": true}')
        changed = await event(c, target)
        assert changed["msg"] == "changed" and changed["fields"]["cause"] == again
        await c.call("core.job_wait", again)
        await barrier(c, folder)
        # The watcher saw both renames and published neither, nor the temporary files.
        assert left_over(c, target) == []
        assert not [n for n in c.notifications if under(folder)(n)]
        # (Both renames may fall in one burst: its final state is the second's.)
        assert (await c.call("filesystem.watch_status"))["suppressed"] > before


async def test_a_copy_announces_each_entry_with_its_job_once(
    fs_server: ServerProc,
) -> None:
    src = root_of(fs_server) / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text("{}")
    (src / "sub" / "b.png").write_bytes(b"\x89PNG" * 10)
    dst = root_of(fs_server) / "tree-copy"
    async with raw(fs_server.ws_url, "root", fs_server.password) as c:
        await watched(c, root_of(fs_server), settle=0.2)
        await c.call("core.subscribe", FILES)
        await c.call("core.set_options", {"legacy_jobs": True})
        job_id = await c.call("filesystem.copy", str(src), str(dst))
        await c.call("core.job_wait", job_id)
        expected = {
            str(dst): ("DIRECTORY", None),
            str(dst / "a.json"): ("FILE", "application/json"),
            str(dst / "sub"): ("DIRECTORY", None),
            str(dst / "sub" / "b.png"): ("FILE", "image/png"),
        }
        for path, (kind, mime) in expected.items():
            got = await event(c, path)
            assert got["msg"] == "added" and got["fields"]["cause"] == job_id
            assert (got["fields"]["type"], got["fields"]["mime"]) == (kind, mime)
        await barrier(c, root_of(fs_server))
        assert not [n for n in c.notifications if about(dst)(n) or under(dst)(n)]


MANY_FILES = """
import sys
for i in range(int(sys.argv[2])):
    with open(f"{sys.argv[1]}/f{i:05d}", "wb") as f:
        f.write(b"x")
"""


async def collect(c: Raw, folder: Path, enough: Callable[[int], bool]) -> set[str]:
    """The ids of the events under ``folder`` until ``enough(count)``."""
    ids: set[str] = set()
    match = under(folder)
    while not enough(len(ids)):
        ids.add((await c.notification(match, timeout=TIMEOUT))["params"]["id"])
    return ids


async def test_ten_thousand_files_all_come_out_and_memory_stays_flat(
    fs_server: ServerProc,
) -> None:
    folder = root_of(fs_server) / "flood"
    folder.mkdir()
    async with raw(fs_server.ws_url, "root", fs_server.password) as c:
        await watched(c, root_of(fs_server), settle=0.3)
        await c.call("core.subscribe", FILES)
        rss = (await c.call("core.stats"))["rss_bytes"]
        run_python(MANY_FILES, str(folder), "10000")
        ids = await collect(c, folder, lambda n: n >= 10_000)
        assert len(ids) == 10_000
        status = await c.call("filesystem.watch_status")
        assert status["pending"] == 0
        grown = (await c.call("core.stats"))["rss_bytes"] - rss
        assert grown < 64 * 1024 * 1024, grown


async def test_a_flood_past_max_pending_drops_the_oldest_and_counts_them(
    fs_server: ServerProc,
) -> None:
    folder = root_of(fs_server) / "overflow"
    async with raw(fs_server.ws_url, "root", fs_server.password) as c:
        await watched(c, root_of(fs_server), settle=0.2)
        await c.call("core.subscribe", FILES)
        folder.mkdir()
        await event(c, folder)
        try:
            # Every file of the flood waits at once: 1,000 kept, the others dropped.
            await watched(c, root_of(fs_server), settle=3.0, max_pending=1000)
            before = await c.call("filesystem.watch_status")
            rss = (await c.call("core.stats"))["rss_bytes"]
            run_python(MANY_FILES, str(folder), "10000")
            match = under(folder)
            ids: set[str] = set()
            deadline = time.monotonic() + TIMEOUT
            while True:
                status = await c.call("filesystem.watch_status")
                ids |= {n["params"]["id"] for n in c.notifications if match(n)}
                c.notifications = [n for n in c.notifications if not match(n)]
                dropped = status["dropped"] - before["dropped"]
                if status["pending"] == 0 and len(ids) + dropped >= 10_000:
                    break
                assert time.monotonic() < deadline, (len(ids), status)
                await asyncio.sleep(POLL)
            assert dropped > 0 and len(ids) <= 1000
            assert len(ids) + dropped == 10_000
            grown = (await c.call("core.stats"))["rss_bytes"] - rss
            assert grown < 64 * 1024 * 1024, grown
        finally:
            await c.call("settings.update", "filesystem", {"max_pending": 100_000})
    assert "paths waiting to settle" in fs_server.log_text()


async def test_only_identities_granted_the_collection_may_subscribe(
    fs_server: ServerProc,
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with raw(fs_server.ws_url, "root", fs_server.password) as admin:
        for name, allowlist in (
            (f"ls{tag}", ["filesystem.listdir"]),
            (f"fs{tag}", ["filesystem.*"]),
        ):
            await admin.call(
                "user.create", {"username": name, "password": "pw-" + name, "allowlist": allowlist}
            )
    (root_of(fs_server) / f"listed-{tag}").write_text("x")  # the root is not empty alone
    async with raw(fs_server.ws_url, f"ls{tag}", f"pw-ls{tag}") as lister:
        assert await lister.call("filesystem.listdir", str(root_of(fs_server)))
        err = await lister.error("core.subscribe", FILES)
        assert err["data"]["errname"] == "EACCES"
        err = await lister.error("filesystem.watch_status")
        assert err["data"]["errname"] == "EACCES"
    async with raw(fs_server.ws_url, f"fs{tag}", f"pw-fs{tag}") as granted:
        assert await granted.call("core.subscribe", FILES)


async def test_a_granted_user_hears_files_until_the_grant_is_taken_back(
    fs_server: ServerProc,
) -> None:
    # Files in a root are no one's: their events reach whoever is granted the collection (not
    # only full administrators), decided at each event from the rights as they are then.
    tag = uuid.uuid4().hex[:6]
    root = root_of(fs_server)
    folder = root / f"granted-{tag}"
    folder.mkdir()
    async with raw(fs_server.ws_url, "root", fs_server.password) as admin:
        await watched(admin, root)
        uid = (
            await admin.call(
                "user.create",
                {"username": f"g{tag}", "password": f"pw-g{tag}", "allowlist": ["filesystem.*"]},
            )
        )["id"]
        await admin.call("core.subscribe", FILES)
        async with raw(fs_server.ws_url, f"g{tag}", f"pw-g{tag}") as user:
            await user.call("core.subscribe", FILES)
            first = folder / "first.txt"
            run_python("import sys; open(sys.argv[1], 'w').write('one')", str(first))
            assert (await event(user, first))["msg"] == "added"
            await admin.call("user.update", uid, {"allowlist": ["filesystem.listdir"]})
            second = folder / "second.txt"
            run_python("import sys; open(sys.argv[1], 'w').write('two')", str(second))
            assert (await event(admin, second))["msg"] == "added"
            # Whatever was published before this reply is in the user's socket before it.
            await user.call("core.ping")
            assert left_over(user, second) == []


async def test_a_root_that_disappears_is_logged_once_and_the_others_are_still_watched(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    doomed = tmp_path / "doomed"
    (doomed / "inside").mkdir(parents=True)
    proc = make_server("--fs-root", str(doomed))
    kept = proc.data_dir / "files"
    async with raw(proc.ws_url, "root", proc.password) as c:
        await watched(c, kept, settle=0.2)
        await watched(c, doomed)
        await c.call("core.subscribe", FILES)
        shutil.rmtree(doomed)
        deadline = time.monotonic() + TIMEOUT
        while str(doomed) not in (status := await c.call("filesystem.watch_status"))["failed"]:
            assert time.monotonic() < deadline, status
        assert status["failed"][str(doomed)] == "the root disappeared"
        assert status["watching"] == [str(kept)]
        (kept / "still.txt").write_text("here")
        assert (await event(c, kept / "still.txt"))["msg"] == "added"
    lines = [x for x in proc.log_text().splitlines() if "is not watched" in x]
    assert len(lines) == 1 and str(doomed) in lines[0], lines
