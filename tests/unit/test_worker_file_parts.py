"""The pure parts of the file workers: unzip's checks, names numbered, thumbnail sizes."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import struct
import threading
import zipfile
from pathlib import Path
from typing import cast

import pytest
from PIL import Image

from middlewared.jobs.job import Job
from middlewared.roots import Roots
from middlewared_plugins.blocking import Progress, Stopped, run_blocking
from middlewared_plugins.thumbnails import Unusable, _cover, _fit, render
from middlewared_plugins.unzipping import Extraction
from middlewared_plugins.zipcheck import RATIO_FLOOR, Limits, Refused, check, numbered, split_name
from middlewared_plugins.zipping import Source, write


def info(name: str, size: int = 0, compressed: int | None = None) -> zipfile.ZipInfo:
    i = zipfile.ZipInfo(name)
    i.file_size = size
    i.compress_size = size if compressed is None else compressed
    return i


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("a.txt", ("a.txt",)),
        ("./a//b/", ("a", "b")),
        ("dir\\file", ("dir", "file")),
        ("été/ß.txt", ("été", "ß.txt")),
        ("a..b", ("a..b",)),
    ],
)
def test_split_name_accepts(name: str, parts: tuple[str, ...]) -> None:
    assert split_name(name) == parts


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "escapes"),
        ("a/../../x", "escapes"),
        ("a/..", "escapes"),
        ("/abs", "absolute"),
        ("\\abs", "absolute"),
        ("C:\\x", "absolute"),
        ("c:x", "absolute"),
        ("./", "no name"),
        ("a\x00b", "NUL"),
        ("x" * 256, "over 255 bytes"),
    ],
)
def test_split_name_refuses(name: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        split_name(name)


def test_check_clashes_and_duplicated_directories() -> None:
    assert len(check([info("a/b"), info("a/"), info("a/c")], Limits())) == 3
    with pytest.raises(Refused, match="'a' clashes"):
        check([info("a/b"), info("a")], Limits())
    with pytest.raises(Refused, match="'a/b' clashes"):
        check([info("a"), info("a/b")], Limits())
    with pytest.raises(Refused, match="'x' clashes"):
        check([info("x"), info("x")], Limits())


def test_check_ratio_spares_small_entries() -> None:
    check([info("zeros", RATIO_FLOOR - 1, 10)], Limits(max_ratio=2))
    with pytest.raises(Refused, match="'zeros' has a compression ratio of 104858"):
        check([info("zeros", RATIO_FLOOR, 10)], Limits(max_ratio=2))


def test_check_symlink_only_from_unix() -> None:
    link = info("ln")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    link.create_system = 0  # MS-DOS: the high bits mean nothing
    check([link], Limits())
    link.create_system = 3
    with pytest.raises(Refused, match="symbolic link"):
        check([link], Limits())


def test_numbered() -> None:
    assert numbered("a.txt", 1) == "a.txt"
    assert numbered("a.txt", 2) == "a (2).txt"
    assert numbered("a.tar.gz", 3) == "a.tar (3).gz"
    assert numbered("noext", 2) == "noext (2)"
    assert numbered(".hidden", 2) == ".hidden (2)"


def test_sizes() -> None:
    assert _fit(4000, 3000, 1920, 1080) == (1440, 1080)
    assert _fit(3000, 4000, 640, 480) == (360, 480)
    assert _fit(100, 50, 640, 480) == (100, 50)  # never upscaled
    assert _fit(100_000, 10, 640, 480) == (640, 1)
    assert _cover(400, 200, 96) == (192, 96)
    assert _cover(50, 20, 96) == (240, 96)


def test_render_sixteen_bit_and_tall() -> None:
    buf = io.BytesIO()
    Image.new("I;16", (100, 2000), 0xFFFF).save(buf, "PNG")
    buf.seek(0)
    thumbs = {t.size: t for t in render(buf)}
    assert list(thumbs) == ["large", "medium", "small", "tiny"]
    with Image.open(io.BytesIO(thumbs["small"].data)) as im:
        assert im.size == (24, 480)
        assert im.convert("L").getpixel((12, 240)) == 255
    with Image.open(io.BytesIO(thumbs["tiny"].data)) as im:
        assert im.size == (96, 96)


def test_render_refuses_what_is_no_image() -> None:
    with pytest.raises(Unusable, match="Not an image"):
        render(io.BytesIO(b""))
    with pytest.raises(Unusable, match="over the limit of 99 pixels"):
        buf = io.BytesIO()
        Image.new("RGB", (10, 10)).save(buf, "PNG")
        buf.seek(0)
        render(buf, max_pixels=99)


def test_zip_writes_zip64_records_for_large_files(tmp_path: Path) -> None:
    """A file stat'ed over 2 GiB gets ZIP64 records (writing 4 GiB takes half a minute:
    here the size is the stat's, the bytes are few)."""
    (tmp_path / "f.bin").write_bytes(b"0123456789")
    roots = Roots([tmp_path])
    top = roots.locate("f", str(tmp_path / "f.bin"))
    real = top.stat()
    big = os.stat_result((*real[:6], 5 * 1024**3, *real[7:10]))
    sources = [Source("f.bin", top, (), big), Source("small.bin", top, (), real)]
    with roots.locate("dir", str(tmp_path)).open_dir() as folder:
        write(folder, "out.zip", sources, lambda done: None, threading.Event())
    blob = (tmp_path / "out.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert archive.read("f.bin") == b"0123456789"
        offsets = [archive.getinfo(n).header_offset for n in ("f.bin", "small.bin")]

    def first_extra(offset: int) -> bytes:
        name_len, extra_len = struct.unpack_from("<HH", blob, offset + 26)
        return blob[offset + 30 + name_len : offset + 30 + name_len + extra_len][:2]

    assert first_extra(offsets[0]) == b"\x01\x00"  # the ZIP64 extra field's tag
    assert first_extra(offsets[1]) != b"\x01\x00"


class _Job:
    """What run_blocking uses of a job."""

    def __init__(self) -> None:
        self.progress: list[tuple[float | None, str | None]] = []

    def set_progress(self, percent: float | None = None, description: str | None = None) -> None:
        self.progress.append((percent, description))


async def test_run_blocking_stops_the_work_and_waits_for_it_when_cancelled() -> None:
    started, ended = threading.Event(), threading.Event()

    def work(progress: Progress, stop: threading.Event) -> None:
        started.set()
        done = 0
        while not stop.wait(0.01):
            done += 1
            progress(done)
        ended.set()
        raise Stopped()

    job = _Job()
    task = asyncio.ensure_future(run_blocking(cast(Job, job), 1000, "Did", work))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()  # the work had returned before the cancellation was raised
    assert job.progress[0] == (0.0, "Did 0 of 1000 bytes")


def test_extraction_stopped_midway_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("one.txt", "sub/two.txt", "three.txt"):
            archive.writestr(name, b"x" * 1000)
    dest_path = tmp_path / "dest"
    dest_path.mkdir()
    with (
        zipfile.ZipFile(path) as archive,
        Roots([tmp_path]).locate("destination", str(dest_path)).open_dir() as dest,
    ):
        entries = check(archive.infolist(), Limits())
        extraction = Extraction(archive, dest, ".unzip.0123456789ab.part")
        stop = threading.Event()
        try:
            # The first bytes written ask it to stop: the next entry is never begun.
            with pytest.raises(Stopped):
                extraction.extract(entries, lambda done: stop.set(), stop)
            assert (dest_path / ".unzip.0123456789ab.part" / "one.txt").exists()
        finally:
            extraction.remove()
            extraction.close()
    assert os.listdir(dest_path) == []
