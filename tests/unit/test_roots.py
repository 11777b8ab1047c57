"""middlewared.roots: paths placed under a root as text, then acted on through descriptors."""

from __future__ import annotations

import asyncio
import errno
import importlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from middlewared.errors import ValidationErrors
from middlewared.registry import Registry
from middlewared.roots import (
    _LIST,
    _READ,
    Dir,
    Roots,
    _walk,
    copy_metadata,
    escaped,
    in_thread,
    normalise,
    open_beneath,
)
from tests.fsracer import racing


@pytest.fixture
def root(tmp_path: Path) -> Path:
    top = tmp_path / "root"
    (top / "dir" / "sub").mkdir(parents=True)
    (top / "dir" / "a.txt").write_bytes(b"a")
    (top / "dir" / "sub" / "b.txt").write_bytes(b"b")
    os.symlink(tmp_path, top / "out")
    os.symlink("dir", top / "in")
    return top


@pytest.fixture
def root_fd(root: Path) -> Iterator[int]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def refused(call: Callable[[], object]) -> tuple[str, str, int]:
    with pytest.raises(ValidationErrors) as info:
        call()
    (error,) = info.value.errors
    return error


def test_locate_checks_the_text_and_places_it_under_the_deepest_root(root: Path) -> None:
    roots = Roots([root, root / "dir"])
    where = roots.locate("src", f"/{root}/dir/./sub//../a.txt/")
    assert (where.root, where.parts, where.path) == (root / "dir", ("a.txt",), f"{root}/dir/a.txt")
    assert roots.locate("src", str(root)).parts == ()
    assert refused(lambda: roots.locate("src", "dir/a.txt")) == (
        "src",
        "Path must be absolute",
        errno.EINVAL,
    )
    assert refused(lambda: roots.locate("src", f"{root}/a\x00"))[2] == errno.EINVAL
    assert refused(lambda: roots.locate("dst", f"{root}/" + "x" * 4096))[:2] == (
        "dst",
        "Path is too long",
    )
    for outside in (f"{root}/..", f"{root}-other/x", f"{root}/dir/../../x", "/"):
        assert refused(partial(roots.locate, "p", outside))[2] == errno.EACCES, outside


def test_surrogates_stand_for_bytes_or_are_refused(root: Path) -> None:
    roots = Roots([root])
    assert roots.locate("path", f"{root}/caf\udce9").parts == ("caf\udce9",)
    field, message, code = refused(lambda: roots.locate("path", f"{root}/\ud800"))
    assert (field, code) == ("path", errno.EILSEQ) and "\\ud800" in message
    assert escaped("caf\udce9") and not escaped("café") and not escaped("plain")


def test_normalise_is_lexical() -> None:
    assert normalise("//a/./b/../c/") == "/a/c"
    assert normalise("/a/link/..") == "/a"


@pytest.mark.parametrize("resolve", ["openat2", "walk"])
def test_no_symlink_is_followed_on_the_way_or_at_the_end(root_fd: int, resolve: str) -> None:
    def open_(parts: list[str], flags: int = _LIST) -> int:
        return (
            open_beneath(root_fd, parts, flags)
            if resolve == "openat2"
            else _walk(root_fd, parts, flags)
        )

    for parts in (["out"], ["in"], ["out", "root"], ["in", "sub"]):
        with pytest.raises(OSError) as info:
            open_(parts)
        assert info.value.errno == errno.ELOOP, parts
    with pytest.raises(OSError) as info:
        open_(["dir", "a.txt", "x"])
    assert info.value.errno == errno.ENOTDIR
    fd = open_(["dir", "sub", "b.txt"], _READ)
    assert os.read(fd, 10) == b"b"
    os.close(fd)
    with pytest.raises(OSError) as info:
        open_beneath(root_fd, ["dir", "..", "dir"])
    assert info.value.errno == errno.EINVAL


def test_location_refusals_name_the_field(root: Path) -> None:
    roots = Roots([root])
    assert refused(lambda: roots.locate("src", f"{root}/out/x").stat())[::2] == (
        "src",
        errno.ELOOP,
    )
    assert refused(lambda: roots.locate("src", f"{root}/nope/x").parent()) == (
        "src",
        "Parent directory does not exist",
        errno.ENOENT,
    )
    assert refused(lambda: roots.locate("p", f"{root}/dir").open_read())[1:] == (
        "Not a regular file",
        errno.EINVAL,
    )
    assert refused(lambda: roots.locate("p", f"{root}/in").open_dir())[2] == errno.ELOOP
    assert stat.S_ISLNK(roots.locate("p", f"{root}/out").stat().st_mode)


def test_walk_lists_parents_first_and_reports_links(root: Path) -> None:
    with Roots([root]).locate("p", str(root)).open_dir() as top:
        seen = [("/".join(names), stat.S_ISLNK(s.st_mode)) for names, s in top.walk()]
    assert seen == [
        ("dir", False),
        ("dir/a.txt", False),
        ("dir/sub", False),
        ("dir/sub/b.txt", False),
        ("in", True),
        ("out", True),
    ]


def test_rename_without_replace_keeps_what_is_there(root: Path) -> None:
    with Roots([root]).locate("p", f"{root}/dir/a.txt").parent() as folder:
        with folder.create("new") as f:
            f.write(b"new")
        with pytest.raises(FileExistsError):
            folder.rename("new", "a.txt", replace=False)
        assert (root / "dir" / "a.txt").read_bytes() == b"a"
        folder.rename("new", "a.txt")
        with pytest.raises(FileExistsError):
            folder.create("a.txt")
        with pytest.raises(OSError) as info:
            folder.unlink("../a.txt")
        assert info.value.errno == errno.EINVAL
    assert (root / "dir" / "a.txt").read_bytes() == b"new"


def test_copied_metadata_has_no_setuid_setgid_or_sticky(root: Path) -> None:
    src, dst = root / "dir" / "a.txt", root / "dir" / "copy"
    os.chmod(src, 0o7755)
    os.utime(src, ns=(1_000_000_000, 2_000_000_000))
    dst.write_bytes(b"")
    with src.open("rb") as fin, dst.open("r+b") as fout:
        copy_metadata(fin.fileno(), fout.fileno())
    s = dst.stat()
    assert stat.S_IMODE(s.st_mode) == 0o755 and s.st_mtime_ns == 2_000_000_000


@pytest.mark.parametrize("resolve", ["openat2", "walk"])
def test_a_racing_symlink_never_leads_outside(tmp_path: Path, resolve: str) -> None:
    """The attacker swaps a directory inside the root with a symlink to one outside."""
    top = tmp_path / "root"
    (top / "dir").mkdir(parents=True)
    (top / "dir" / "f").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"OUTSIDE")
    os.symlink(tmp_path / "outside", top / "link")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    opened = refused_count = 0
    try:
        with racing(top / "dir", top / "link") as swaps:
            # Until both outcomes were seen often (the racer may be scheduled late), bounded.
            deadline = time.monotonic() + 30
            while min(opened, refused_count) < 300 and time.monotonic() < deadline:
                try:
                    f = (open_beneath if resolve == "openat2" else _walk)(fd, ["dir", "f"], _READ)
                except OSError as e:
                    assert e.errno in (errno.ELOOP, errno.ENOTDIR), e
                    refused_count += 1
                    continue
                assert os.read(f, 100) == b"inside"
                os.close(f)
                opened += 1
    finally:
        os.close(fd)
    assert swaps[0] > 0 and opened and refused_count, (swaps, opened, refused_count)


async def test_in_thread_runs_to_its_end_when_the_caller_is_cancelled() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def work() -> int:
        started.set()
        release.wait(30)
        finished.append(True)
        return 1

    task = asyncio.create_task(in_thread(work))
    await asyncio.to_thread(started.wait, 30)
    task.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [True]


def test_put_and_copy_lock_one_path_however_spelled() -> None:
    registry: Registry = importlib.import_module("middlewared_plugins.filesystem").registry
    put = registry.methods["filesystem.put"].job
    copy = registry.methods["filesystem.copy"].job
    assert put is not None and copy is not None
    assert callable(put.lock) and callable(copy.lock)
    for spelling in ("/r/x", "/r//x", "/r/./x", "/r/y/../x", "//r/x/"):
        assert put.lock([spelling, {}]) == "filesystem.put:/r/x"
        assert copy.lock(["/src", spelling]) == "filesystem.copy:/r/x"


def test_a_dir_closes_once(root: Path) -> None:
    folder = Roots([root]).locate("p", f"{root}/dir/a.txt").parent()
    assert isinstance(folder, Dir) and folder.join("x") == f"{root}/dir/x"
    folder.close()
    folder.close()
    assert folder.fd == -1
