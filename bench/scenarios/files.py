"""Scenario 4, files in and out of jobs: ``POST /_upload`` into ``filesystem.put`` and
``core.download`` of ``filesystem.get``, against the bare aiohttp handlers a competent user
writes (disk calls in a thread, FileResponse), with the same client; MiB/s and the server's
peak RSS growth."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all

BARE = "aiohttp handlers"
GIB = 1024**3


def make_source(path: Path, size: int) -> Path:
    """``size`` random-looking bytes (a 4 MiB random block repeated: nothing compresses)."""
    block = os.urandom(4 * 1024 * 1024)
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    return path


def run(ctx: Context) -> Result:
    size = 8 * 1024 * 1024 if ctx.smoke else GIB
    result = Result(
        "files",
        "Upload and download",
        {"bytes": size},
        columns=[
            "mib_per_s",
            "seconds",
            "accepted_s",
            "rss_growth_mib",
            "server_cpu_s_per_gib",
            "client_busy",
        ],
    )
    result.notes += (
        "upload: until the file is fsynced and renamed into place (the job's end for "
        "middlewared, the response for the bare handler; accepted_s is when middlewared "
        "answered, the upload spooled); download: until the last byte",
        "the bare upload handler does every disk call in a thread (1 MiB writes, one in "
        "flight while the next is read) and never blocks its loop; the bare download is "
        "aiohttp's FileResponse (sendfile)",
    )
    src = make_source(ctx.scratch / "source.bin", size)
    where: dict[str, str] = {}

    def start_ours() -> Proc:
        data = ctx.data_dir("files")
        where["target"] = str(data / "files" / "blob.bin")
        return ctx.middlewared(data)

    def start_bare() -> Proc:
        root = ctx.data_dir("bare-files") / "files"
        where["target"] = "blob.bin"
        return ctx.reference("aiohttp_files", ["--root", str(root)])

    def go(with_auth: bool) -> Callable[[Proc], Cases]:
        def transfer(proc: Proc) -> Cases:
            spec = {
                "url": proc.url(),
                "auth": AUTH if with_auth else None,
                "src": str(src),
                "size": size,
                "target": where["target"],
                "server_pid": proc.pid,
            }
            cases: Cases = ctx.load("files", spec, timeout=900)["cases"]
            return cases

        return transfer

    run_all(
        ctx,
        result,
        [Contender(PROJECT, start_ours, go(True)), Contender(BARE, start_bare, go(False))],
    )
    src.unlink()
    per_gib = size / GIB
    for step in ("upload", "download"):
        result.target(
            f"files {step}: MiB/s vs bare aiohttp",
            result.ratio(step, "mib_per_s", BARE),
            ">=",
            1.0,
            "x",
        )
        growth = result.median(step, PROJECT, "rss_growth_mib")
        result.target(
            f"files {step}: server RSS growth per GiB",
            None if growth is None else growth / per_gib,
            "<=",
            32,
            "MiB",
        )
    return result
