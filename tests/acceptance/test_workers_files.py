"""log.print, image.thumbnail, archive.zip and archive.unzip over the wire (PROTOCOL.md §8)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Red, green, blue and white quadrants of the upright picture.
QUADRANTS = ((255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 255))
# EXIF orientation -> how to store the upright picture so a viewer shows it upright
# (each undoes what the tag tells a viewer to do).
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def work(server: ServerProc) -> Iterator[Path]:
    """A fresh directory under the server's root."""
    folder = server.data_dir / "files" / f"wf-{secrets.token_hex(4)}"
    folder.mkdir()
    yield folder


async def refused(c: Raw, method: str, *params: Any) -> str:
    err = await c.error(method, *params)
    reason: str = err["data"]["reason"]
    return reason


def close(pixel: Any, color: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, color, strict=False))


def upright(width: int = 300, height: int = 200) -> Image.Image:
    im = Image.new("RGB", (width, height))
    w, h = width // 2, height // 2
    for i, color in enumerate(QUADRANTS):
        x, y = (i % 2) * w, (i // 2) * h
        im.paste(color, (x, y, x + w, y + h))
    return im


def quadrants_of(path: str) -> list[tuple[int, ...]]:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        points = (
            (w // 4, h // 4),
            (3 * w // 4, h // 4),
            (w // 4, 3 * h // 4),
            (3 * w // 4, 3 * h // 4),
        )
        return [rgb.getpixel(p) for p in points]  # type: ignore[misc]


# --- log.print -------------------------------------------------------------------------------


async def test_log_print_writes_server_and_job_logs(server: ServerProc) -> None:
    marker = f"hello from log.print {secrets.token_hex(4)}"
    async with raw(server.ws_url, "root", server.password) as c:
        assert await c.call("log.print", marker, "WARNING") is None
        jobs = await c.call("core.get_jobs", [["method", "=", "log.print"]])
        record = next(j for j in jobs if j["arguments"][0] == marker)
        assert record["state"] == "SUCCESS"
        assert record["logs_excerpt"] == f"WARNING {marker}\n"
        reason = await refused(c, "log.print", "x", "LOUD")
        assert "level" in reason
    assert marker in server.log_text()
    line = next(li for li in server.log_text().splitlines() if marker in li)
    assert "WARNING" in line and f"job {record['id']}" in line
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("log.print", f"{marker} two\nCRITICAL forged line")
    assert f"{marker} two\\nCRITICAL forged line" in server.log_text()
    assert not any(li.startswith("CRITICAL forged") for li in server.log_text().splitlines())


# --- image.thumbnail -------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
async def test_thumbnail_applies_exif_orientation(
    server: ServerProc, work: Path, orientation: int
) -> None:
    picture = upright()
    turn = STORED[orientation]
    stored = picture if turn is None else picture.transpose(turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera maker"
    source = work / "photo.jpg"
    stored.save(source, "JPEG", quality=95, exif=exif.tobytes())
    async with raw(server.ws_url, "root", server.password) as c:
        result = await c.call("image.thumbnail", str(source))
    assert result == {
        size: str(work / ".thumbs" / f"photo.jpg.{size}.jpg")
        for size in ("tiny", "small", "medium", "large")
    }
    for size in ("small", "medium", "large"):
        with Image.open(result[size]) as im:
            assert im.format == "JPEG"
            assert im.size == (300, 200)  # fits already: never upscaled
            assert len(im.getexif()) == 0, "metadata stripped"
        for got, want in zip(quadrants_of(result[size]), QUADRANTS, strict=True):
            assert close(got, want), (orientation, size, got, want)
    with Image.open(result["tiny"]) as im:
        assert im.size == (96, 96)


async def test_thumbnail_sizes_of_a_large_jpeg(server: ServerProc, work: Path) -> None:
    source = work / "big.jpg"
    upright(4000, 3000).save(source, "JPEG")
    dest = work / "elsewhere" / "thumbs"
    (work / "elsewhere").mkdir()
    async with raw(server.ws_url, "root", server.password) as c:
        result = await c.call("image.thumbnail", str(source), {"dest": str(dest)})
    sizes = {}
    for name, path in result.items():
        assert path == str(dest / f"big.jpg.{name}.jpg")
        with Image.open(path) as im:
            sizes[name] = im.size
    assert sizes == {
        "large": (1440, 1080),
        "medium": (960, 720),
        "small": (640, 480),
        "tiny": (96, 96),
    }
    # The tiny one is a centred crop: the four quadrants meet in its middle.
    assert [close(p, q) for p, q in zip(quadrants_of(result["tiny"]), QUADRANTS, strict=True)] == [
        True
    ] * 4


async def test_thumbnail_of_modes(server: ServerProc, work: Path) -> None:
    cmyk = work / "cmyk.jpg"
    Image.new("CMYK", (200, 100), (255, 0, 0, 0)).save(cmyk, "JPEG")  # cyan
    sixteen = work / "gray16.png"
    im16 = Image.new("I;16", (200, 100), 0x8000)
    im16.save(sixteen)
    palette = work / "palette.png"
    pal = Image.new("P", (200, 100), 1)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(0, (0, 0, 100, 100))  # the left half: index 0, transparent
    pal.save(palette, transparency=0)
    gif = work / "anim.gif"
    frames = [Image.new("RGB", (120, 80), color) for color in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    async with raw(server.ws_url, "root", server.password) as c:
        out = await c.call("image.thumbnail", str(cmyk))
        with Image.open(out["small"]) as im:
            assert im.mode == "RGB"
            r, g, b = im.getpixel((100, 50))  # type: ignore[misc]
            assert r < 80 and g > 150 and b > 150, (r, g, b)
        out = await c.call("image.thumbnail", str(sixteen))
        with Image.open(out["small"]) as im:
            value = im.convert("L").getpixel((100, 50))
            assert isinstance(value, int) and 110 <= value <= 145, value  # scaled, not clipped
        out = await c.call("image.thumbnail", str(palette))
        with Image.open(out["small"]) as im:
            assert close(im.getpixel((50, 50)), (255, 255, 255))  # transparent: on white
            assert close(im.getpixel((150, 50)), (0, 0, 255))
        out = await c.call("image.thumbnail", str(palette), {"keep_alpha": True})
        assert out["small"].endswith("palette.png.small.png")
        with Image.open(out["small"]) as im:
            assert im.format == "PNG" and im.mode == "RGBA"
            assert im.getpixel((50, 50))[3] == 0
            assert close(im.getpixel((150, 50)), (0, 0, 255, 255))
        out = await c.call("image.thumbnail", str(gif))
        with Image.open(out["small"]) as im:
            assert close(im.getpixel((60, 40)), (255, 0, 0))  # the first frame


async def test_thumbnail_refusals(server: ServerProc, work: Path) -> None:
    text = work / "notes.txt"
    text.write_text("not an image")
    whole = io.BytesIO()
    upright(800, 600).save(whole, "JPEG")
    truncated = work / "cut.jpg"
    truncated.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    bomb = work / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # 400 megapixels in a few KiB
    small = work / "small.png"
    upright(100, 100).save(small)
    link = work / "link.png"
    link.symlink_to(small)
    async with raw(server.ws_url, "root", server.password) as c:
        assert "Not an image" in await refused(c, "image.thumbnail", str(text))
        assert "Cannot decode the image" in await refused(c, "image.thumbnail", str(truncated))
        assert "bomb" in (await refused(c, "image.thumbnail", str(bomb))).lower()
        reason = await refused(c, "image.thumbnail", str(small), {"max_pixels": 5000})
        assert "over the limit of 5000 pixels" in reason
        reason = await refused(c, "image.thumbnail", str(small), {"max_bytes": 10})
        assert "over the limit of 10" in reason
        assert "outside the allowed roots" in await refused(c, "image.thumbnail", "/etc/hostname")
        assert "symbolic link" in await refused(c, "image.thumbnail", str(link))
        reason = await refused(c, "image.thumbnail", str(small), {"dest": "/tmp/thumbs"})
        assert "outside the allowed roots" in reason
        # The server is still there, and still makes thumbnails.
        assert set(await c.call("image.thumbnail", str(small))) == {
            "tiny",
            "small",
            "medium",
            "large",
        }
    assert not (work / ".thumbs" / "bomb.png.tiny.jpg").exists()


async def test_thumbnail_keeps_rpc_latency_flat(server: ServerProc, work: Path) -> None:
    source = work / "twelve.png"  # PNG: no draft mode, the full decode
    upright(4000, 3000).save(source, compress_level=1)
    async with (
        raw(server.ws_url, "root", server.password) as c,
        raw(server.ws_url, "root", server.password) as other,
    ):
        call = await c.request("image.thumbnail", str(source))
        done = asyncio.ensure_future(c.reply(call, timeout=60))
        latencies: list[float] = []
        while not done.done():
            start = time.monotonic()
            assert await other.call("test.echo", 1) == 1
            latencies.append(time.monotonic() - start)
        assert "result" in done.result()
    worst = max(latencies)
    print(f"{len(latencies)} echoes during the thumbnail, the slowest {worst * 1000:.1f} ms")
    assert len(latencies) >= 5  # they ran while it did
    assert worst < 0.25, worst


# --- archive.zip -----------------------------------------------------------------------------


def tree(base: Path) -> dict[str, bytes]:
    contents = {
        "a.txt": b"alpha\n",
        "sub/b.bin": os.urandom(3_000_001),
        "sub/été.txt": "déjà vu".encode(),
        "sub/deeper/empty": b"",
    }
    for name, data in contents.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    (base / "sub" / "link").symlink_to("a.txt")
    return contents


async def test_zip_then_unzip_round_trip(server: ServerProc, work: Path) -> None:
    src = work / "src"
    contents = tree(src)
    single = work / "single.txt"
    single.write_bytes(b"one file")
    out = work / "out"
    out.mkdir()
    spec = {
        "files": {"tree": str(src), "docs/single.txt": str(single)},
        "dir": str(out),
        "filename": "bundle.zip",
    }
    async with raw(server.ws_url, "root", server.password) as c:
        first = await c.call("archive.zip", spec)
        second = await c.call("archive.zip", spec)
        assert first == str(out / "bundle.zip")
        assert second == str(out / "bundle (2).zip")
        with zipfile.ZipFile(first) as archive:
            names = archive.namelist()
            assert "tree/sub/link" not in names  # symlinks left out, never followed
            for name, data in contents.items():
                assert archive.read(f"tree/{name}") == data
            assert archive.read("docs/single.txt") == b"one file"
            assert archive.getinfo("tree/sub/été.txt").flag_bits & 0x800  # UTF-8 name
            assert archive.getinfo("tree/sub/deeper/").is_dir()
        dest = work / "dest"
        dest.mkdir()
        (dest / "docs").mkdir()  # taken: the archive's docs lands as "docs (2)"
        written = await c.call("archive.unzip", {"zip": first, "destination": str(dest)})
        jobs = await c.call(
            "core.get_jobs",
            [["method", "in", ["archive.zip", "archive.unzip"]]],
            {"order_by": ["-id"], "limit": 2},
        )
    total = sum(len(data) for data in contents.values()) + len(b"one file")
    unzipped, zipped = (j["progress"] for j in jobs)
    assert unzipped["percent"] == 100
    assert unzipped["description"] == f"Unzipped {total} of {total} bytes"
    assert zipped["percent"] == 100
    assert zipped["description"] == f"Zipped {total} bytes in 8 entries"
    assert str(dest / "tree" / "sub" / "b.bin") in written
    assert str(dest / "docs (2)" / "single.txt") in written
    for name, data in contents.items():
        assert (dest / "tree" / name).read_bytes() == data
    assert (dest / "docs (2)" / "single.txt").read_bytes() == b"one file"
    assert list((dest / "docs").iterdir()) == []
    assert sorted(os.listdir(dest)) == ["docs", "docs (2)", "tree"]  # no temporary folder left


async def test_zip_refusals(server: ServerProc, work: Path) -> None:
    (work / "f.txt").write_text("x")
    (work / "link").symlink_to("f.txt")
    good = {"files": {"f.txt": str(work / "f.txt")}, "dir": str(work), "filename": "z.zip"}
    async with raw(server.ws_url, "root", server.password) as c:
        bad = {**good, "files": {"f.txt": "/etc/passwd"}}
        assert "outside the allowed roots" in await refused(c, "archive.zip", bad)
        assert "outside the allowed roots" in await refused(
            c, "archive.zip", {**good, "dir": "/tmp"}
        )
        bad = {**good, "files": {"../up.txt": str(work / "f.txt")}}
        assert "escapes the destination" in await refused(c, "archive.zip", bad)
        bad = {**good, "files": {"l": str(work / "link")}}
        assert "Not a regular file nor a directory" in await refused(c, "archive.zip", bad)
        assert "filename" in await refused(c, "archive.zip", {**good, "filename": "a/b.zip"})
    assert sorted(os.listdir(work)) == ["f.txt", "link"]


async def test_unzip_reads_zip64_entries(server: ServerProc, work: Path) -> None:
    path = work / "z64.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("big.bin", "w", force_zip64=True) as f:
            f.write(b"0123456789" * 100_000)
    dest = work / "d"
    dest.mkdir()
    async with raw(server.ws_url, "root", server.password) as c:
        written = await c.call("archive.unzip", {"zip": str(path), "destination": str(dest)})
    assert written == [str(dest / "big.bin")]
    assert (dest / "big.bin").read_bytes() == b"0123456789" * 100_000


# --- archive.unzip refusals ------------------------------------------------------------------


def crafted(path: Path, *names: str, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fine.txt", b"fine")
        for name in names:
            archive.writestr(zipfile.ZipInfo(name), b"bad")
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def lying(path: Path, real: int, declared: int) -> Path:
    """A good entry, then one of ``real`` bytes whose headers say ``declared`` (with the CRC
    of the declared part)."""
    data = os.urandom(real)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.txt", b"written first")
        archive.writestr("liar.bin", data)
        local = archive.getinfo("liar.bin").header_offset
    blob = bytearray(path.read_bytes())
    crc = zlib.crc32(data[:declared])
    # Local header: crc at 14, uncompressed size at 22; central header: crc 16, size 24.
    central = blob.index(b"PK\x01\x02", blob.index(b"PK\x01\x02") + 4)
    for at, crc_at, size_at in ((local, 14, 22), (central, 16, 24)):
        struct.pack_into("<I", blob, at + crc_at, crc)
        struct.pack_into("<I", blob, at + size_at, declared)
    path.write_bytes(bytes(blob))
    return path


def ratio_bomb(path: Path) -> Path:
    """1 GiB of zeros compressed to about 1 MiB."""
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as f:
            for _ in range(1024):
                f.write(zeros)
    return path


def many(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            archive.writestr(f"e{i}", b"")
    return path


async def test_unzip_refusals_name_the_entry(server: ServerProc, work: Path) -> None:
    dest = work / "dest"
    dest.mkdir()
    big = work / "two.zip"
    with zipfile.ZipFile(big, "w") as archive:
        archive.writestr("one.bin", bytes(600_000))
        archive.writestr("two.bin", bytes(600_000))
    cases: list[tuple[Path, dict[str, Any], str]] = [
        (crafted(work / "up.zip", "../x"), {}, "Entry '../x' escapes the destination"),
        (crafted(work / "deep.zip", "a/../../x"), {}, "Entry 'a/../../x' escapes"),
        (crafted(work / "abs.zip", "/abs"), {}, "Entry '/abs' has an absolute path"),
        (crafted(work / "drive.zip", "C:\\x"), {}, "Entry 'C:\\\\x' has an absolute path"),
        (crafted(work / "back.zip", "a\\..\\..\\x"), {}, "escapes the destination"),
        (crafted(work / "link.zip", symlink="ln"), {}, "Entry 'ln' is a symbolic link"),
        (many(work / "many.zip", 100_000), {}, "Entry 'e10000' is past the limit of 10000"),
        (big, {"max_bytes": 1_000_000}, "Entry 'two.bin' takes the archive past 1000000"),
        (big, {"max_entries": 1}, "Entry 'two.bin' is past the limit of 1 entries"),
        (ratio_bomb(work / "bomb.zip"), {}, "Entry 'zeros.bin' has a compression ratio of"),
        (lying(work / "liar.zip", 2_000_000, 1000), {}, "Entry 'liar.bin' is larger than its"),
    ]
    async with raw(server.ws_url, "root", server.password) as c:
        for archive_path, limits, expected in cases:
            options = {"zip": str(archive_path), "destination": str(dest), **limits}
            reason = await refused(c, "archive.unzip", options)
            assert expected in reason, (archive_path.name, reason)
            assert os.listdir(dest) == [], f"{archive_path.name} left {os.listdir(dest)}"
        notzip = work / "plain.txt"
        notzip.write_text("hello")
        options = {"zip": str(notzip), "destination": str(dest)}
        assert "Not a zip archive" in await refused(c, "archive.unzip", options)
        options = {"zip": str(big), "destination": "/tmp"}
        assert "outside the allowed roots" in await refused(c, "archive.unzip", options)
        options = {"zip": str(big), "destination": str(dest), "max_ratio": 10_000}
        assert "max_ratio" in await refused(c, "archive.unzip", options)  # only lowered
        # Within the limits, the same archive is extracted.
        written = await c.call("archive.unzip", {"zip": str(big), "destination": str(dest)})
    assert written == [str(dest / "one.bin"), str(dest / "two.bin")]


async def test_unzip_numbers_taken_names(server: ServerProc, work: Path) -> None:
    path = work / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", b"new")
        archive.writestr("noext", b"new")
    dest = work / "dest"
    dest.mkdir()
    (dest / "a.txt").write_bytes(b"old")
    (dest / "a (2).txt").write_bytes(b"old 2")
    (dest / "noext").write_bytes(b"old")
    async with raw(server.ws_url, "root", server.password) as c:
        written = await c.call("archive.unzip", {"zip": str(path), "destination": str(dest)})
    assert written == [str(dest / "a (3).txt"), str(dest / "noext (2)")]
    assert (dest / "a.txt").read_bytes() == b"old"
    assert (dest / "a (3).txt").read_bytes() == b"new"
    assert (dest / "noext (2)").read_bytes() == b"new"


# --- the README's example --------------------------------------------------------------------


def test_workers_example(server: ServerProc, work: Path) -> None:
    image = work / "photo.jpg"
    upright(800, 600).save(image)
    out = work / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_")}
    env |= {"MIDDLEWARED_URL": server.ws_url, "MIDDLEWARED_PASSWORD": server.password}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "workers.py"), str(image), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        f"{size}: {work}/.thumbs/photo.jpg.{size}.jpg"
        for size in ("tiny", "small", "medium", "large")
    ]
    assert lines[4:] == [f"zip: {out}/thumbs.zip", "unzipped: 5 entries"]
    with Image.open(out / "thumbs" / "photo.jpg.small.jpg") as im:
        assert im.size == (640, 480)


async def test_written_files_are_announced_with_their_job(server: ServerProc, work: Path) -> None:
    path = work / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("d/one.txt", b"1")
        archive.writestr("two.txt", b"2")
    dest = work / "dest"
    dest.mkdir()
    image = work / "pic.png"
    upright(64, 48).save(image)

    def about(text: str) -> Any:
        return lambda n: (
            n["params"].get("collection") == "filesystem.files" and (n["params"].get("id") == text)
        )

    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "filesystem.files")
        written = await c.call("archive.unzip", {"zip": str(path), "destination": str(dest)})
        thumbs = await c.call("image.thumbnail", str(image))
        jobs = await c.call(
            "core.get_jobs",
            [["method", "in", ["archive.unzip", "image.thumbnail"]]],
            {"order_by": ["-id"], "limit": 2},
        )
        thumb_job, unzip_job = (j["id"] for j in jobs)
        for text in written:
            event = await c.notification(about(text))
            assert event["params"]["fields"]["cause"] == unzip_job, event
        for text in thumbs.values():
            event = await c.notification(about(text))
            assert event["params"]["fields"]["cause"] == thumb_job, event


async def test_thumbnails_of_every_image_that_lands_in_a_root_with_one_trigger(
    make_server: Any,
) -> None:
    """examples/thumbnails_on_upload.json (README "Workers"): a JPEG written by another
    program gets its thumbnails; the thumbnails the trigger's job writes fire nothing. A
    server of its own: the shared one still hears other tests' images."""
    server = make_server()
    work = server.data_dir / "files" / "drop"
    work.mkdir()
    example = json.loads((ROOT / "examples" / "thumbnails_on_upload.json").read_text())
    async with raw(server.ws_url, "root", server.password) as c:
        trig = await c.call("trigger.create", example)
        try:
            photo = work / "dropped.jpg"
            code = (
                "from PIL import Image; "
                f"Image.new('RGB', (800, 600), (200, 30, 30)).save({str(photo)!r})"
            )
            await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], check=True)
            deadline = time.monotonic() + 30
            while True:
                jobs = await c.call("trigger.jobs", trig["id"], {})
                done = [j for j in jobs if j["state"] in ("SUCCESS", "FAILED")]
                if done or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert [j["state"] for j in done] == ["SUCCESS"], done
            assert done[0]["result"]["tiny"] == str(work / ".thumbs" / "dropped.jpg.tiny.jpg")
            with Image.open(work / ".thumbs" / "dropped.jpg.small.jpg") as small:
                assert small.size == (640, 480)
            # The four thumbnails are JPEGs written into the root: none started a job.
            assert len(await c.call("trigger.jobs", trig["id"], {})) == 1
        finally:
            await c.call("trigger.delete", trig["id"])


async def test_zip_of_a_sparse_file_over_4_gib_is_zip64(server: ServerProc, work: Path) -> None:
    """A real file over 4 GiB (sparse: no disk for its zeros) zipped over the wire: its entry
    has its ZIP64 extra field, its true size and CRC (about half a minute of deflating)."""
    big = work / "big.bin"
    size = 4 * 2**30 + 1
    with big.open("wb") as f:
        f.seek(size - 1)
        f.write(b"!")
    out = work / "out"
    out.mkdir()
    spec = {"files": {"big.bin": str(big)}, "dir": str(out), "filename": "big.zip"}
    async with raw(server.ws_url, "root", server.password) as c:
        # Deflating 4 GiB takes half a minute alone, more on a busy machine.
        reply = await c.reply(await c.request("archive.zip", spec), timeout=300)
    assert "error" not in reply, reply
    path = reply["result"]
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("big.bin")
        assert info.file_size == size
        assert info.compress_size < 10 * 2**20
        assert info.CRC == crc_of_zeros_then(size - 1, b"!")
        # The ZIP64 extra field carries the sizes the 32-bit fields cannot.
        assert int.from_bytes(info.extra[:2], "little") == 1


def crc_of_zeros_then(zeros: int, last: bytes) -> int:
    chunk = bytes(16 * 2**20)
    crc = 0
    while zeros:
        n = min(zeros, len(chunk))
        crc = zlib.crc32(chunk[:n] if n < len(chunk) else chunk, crc)
        zeros -= n
    return zlib.crc32(last, crc)


async def test_thumbnail_of_a_heic_photo(server: ServerProc, work: Path) -> None:
    """HEIC, as phones take photos, with the `heif` extra (pillow-heif, in the dev extra)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    source = work / "phone.heic"
    upright(1200, 900).save(source, format="HEIF")
    async with raw(server.ws_url, "root", server.password) as c:
        result = await c.call("image.thumbnail", str(source), {})
    assert result["small"] == str(work / ".thumbs" / "phone.heic.small.jpg")
    with Image.open(result["small"]) as im:
        assert (im.format, im.size) == ("JPEG", (640, 480))
