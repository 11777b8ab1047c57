"""Zip a tree, then unzip the zip: ``archive.zip`` and ``archive.unzip`` over the WebSocket
(``server``); ``zipfile`` in a bare loop in this process, streaming 1 MiB chunks with the
server's method and level (``zipfile``); Info-ZIP's ``zip -r`` and ``unzip`` as child
processes (``infozip``). Each step's wall time, MB/s of the tree's bytes, and the peak RSS
growth of whoever did the work (the server, this process, or none for Info-ZIP)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.loads.common import auth, ws_url
from bench.loads.fastws import close_all, open_many
from bench.procstat import cpu_seconds, own_seconds, peak_rss_bytes, reset_peak, rss_bytes

ZIP_CASE = "zip the tree"
UNZIP_CASE = "unzip it"
CHUNK = 1024 * 1024
MIB = 2**20


def tree_bytes(top: Path) -> int:
    return sum(p.stat().st_size for p in top.rglob("*") if p.is_file())


def bare_zip(top: Path, out: Path) -> None:
    """What archive.zip writes, done plainly: DEFLATE at zlib's default level, ZIP64 where
    needed, 1 MiB chunks, fsync at the end."""
    with out.open("wb") as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for folder, dirs, files in os.walk(top):
                dirs.sort()
                here = Path(folder)
                rel = here.relative_to(top.parent).as_posix()
                archive.writestr(zipfile.ZipInfo(rel + "/"), b"")
                for name in sorted(files):
                    path = here / name
                    info = zipfile.ZipInfo.from_file(path, f"{rel}/{name}")
                    info.compress_type = zipfile.ZIP_DEFLATED
                    big = info.file_size > zipfile.ZIP64_LIMIT // 2
                    with path.open("rb") as fin, archive.open(info, "w", force_zip64=big) as fo:
                        while chunk := fin.read(CHUNK):
                            fo.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def bare_unzip(source: Path, dest: Path) -> None:
    """Every entry streamed out in 1 MiB chunks (zipfile checks each CRC)."""
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as fin, target.open("wb") as fo:
                while chunk := fin.read(CHUNK):
                    fo.write(chunk)


async def _infozip(argv: list[str], cwd: Path) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd)
    if await proc.wait() != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}")


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


class Window:
    """Wall time, CPU (server, this process with its children) and peak RSS growth."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid or os.getpid()
        self.server = pid

    def __enter__(self) -> Window:
        self.base = rss_bytes(self.pid)
        self.exact = reset_peak(self.pid)
        self.cpu = (cpu_seconds(self.server) if self.server else 0.0, own_seconds())
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        peak = peak_rss_bytes(self.pid) if self.exact else rss_bytes(self.pid)
        self.growth = max(peak - self.base, 0) / MIB
        self.server_cpu = (cpu_seconds(self.server) if self.server else 0.0) - self.cpu[0]
        self.client_cpu = own_seconds() - self.cpu[1]

    def metrics(self, size: int, rss: bool) -> dict[str, float]:
        out = {
            "mb_per_s": size / 1e6 / self.wall,
            "seconds": self.wall,
            "server_busy": self.server_cpu / self.wall,
            "client_busy": self.client_cpu / self.wall,
        }
        if rss:
            out["rss_growth_mib"] = self.growth
        return out


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: mode (server, zipfile or infozip), tree (the folder to zip), work (an empty
    folder for the zip and the extraction); url, auth and server_pid for the server."""
    mode: str = spec["mode"]
    tree, work = Path(spec["tree"]), Path(spec["work"])
    size = tree_bytes(tree)
    zipped, dest = work / "tree.zip", work / "out"
    dest.mkdir()
    pid = spec.get("server_pid") if mode == "server" else None
    cases: dict[str, dict[str, float]] = {}
    conns = await open_many(ws_url(spec), 1, auth(spec)) if mode == "server" else []
    try:
        with Window(pid) as w:
            if mode == "server":
                options = {"files": {tree.name: str(tree)}, "dir": str(work)}
                made = await conns[0].call(
                    "archive.zip", options | {"filename": "tree.zip"}, timeout=3600
                )
                zipped = Path(made)
            elif mode == "zipfile":
                await asyncio.to_thread(bare_zip, tree, zipped)
            else:
                await _infozip(["zip", "-r", "-q", str(zipped), tree.name], tree.parent)
                _fsync(zipped)
        cases[ZIP_CASE] = w.metrics(size, mode != "infozip")
        cases[ZIP_CASE]["zip_mib"] = zipped.stat().st_size / MIB
        with Window(pid) as w:
            if mode == "server":
                options = {"zip": str(zipped), "destination": str(dest)}
                await conns[0].call("archive.unzip", options, timeout=3600)
            elif mode == "zipfile":
                await asyncio.to_thread(bare_unzip, zipped, dest)
            else:
                await _infozip(["unzip", "-q", str(zipped), "-d", str(dest)], work)
        cases[UNZIP_CASE] = w.metrics(size, mode != "infozip")
        if tree_bytes(dest) != size:
            raise RuntimeError(f"unzipped {tree_bytes(dest)} bytes of {size}")
    finally:
        await close_all(conns)
        zipped.unlink(missing_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
    return {"cases": cases}
