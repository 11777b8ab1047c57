"""Scenario 12, archives: ``archive.zip`` of a tree of mixed files (a few KiB to tens of
MiB, text and random bytes), then ``archive.unzip`` of the zip, against ``zipfile`` in a bare
loop (the server's method and level) and Info-ZIP's ``zip -r``/``unzip``."""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import AUTH, Context
from bench.loads.archives import UNZIP_CASE, ZIP_CASE
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all
from bench.scenarios._common import stand_in as common_stand_in

BARE = "bare zipfile loop"
INFOZIP = "Info-ZIP zip/unzip"
GIB = 1 << 30
MIB = 1 << 20
WORDS = (
    "the of and to in is was for on that with as by at from job file zip tree server "
    "worker archive mail thumbnail event token user root data byte chunk stream"
).split()


def _text_block(rng: random.Random) -> bytes:
    """1 MiB of words in random order, lines of ten: deflates about as prose does."""
    words = [rng.choice(WORDS) for _ in range(200_000)]
    lines = (" ".join(words[i : i + 10]) for i in range(0, len(words), 10))
    return ("\n".join(lines) + "\n").encode()[:MIB]


def make_tree(top: Path, total: int, largest: int) -> int:
    """Files of log-uniform sizes from 4 KiB to ``largest`` until ``total`` bytes, every other
    one text, the rest random bytes, in two levels of folders; returns the bytes written."""
    rng = random.Random(14)
    text = _text_block(rng)
    written, n = 0, 0
    while written < total:
        size = int(math.exp(rng.uniform(math.log(4096), math.log(largest))))
        size = min(size, total - written)
        folder = top / f"d{n % 8}" / f"s{n % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"f{n:04d}.{'txt' if n % 2 == 0 else 'bin'}").open("wb") as f:
            left = size
            while left > 0:
                step = min(left, MIB)
                if n % 2 == 0:
                    start = rng.randrange(MIB)
                    f.write((text[start:] + text[:start])[:step])
                else:
                    f.write(rng.randbytes(step))
                left -= step
        written += size
        n += 1
    return written


def run(ctx: Context) -> Result:
    total, largest = (4 * MIB, MIB) if ctx.smoke else (GIB, 48 * MIB)
    result = Result(
        "archives",
        f"Archives: archive.zip of a {total // MIB} MiB tree of mixed files, then archive.unzip",
        {"bytes": total, "largest": largest},
        columns=["mb_per_s", "seconds", "rss_growth_mib", "server_busy", "client_busy"],
    )
    data = ctx.data_dir("archives")
    tree = data / "files" / "tree"
    make_tree(tree, total, largest)
    files = sum(1 for p in tree.rglob("*") if p.is_file())
    result.params["files"] = files
    result.notes.append(
        f"{files} files, half text (deflates ~3x), half random bytes; MB/s counts the tree's "
        "bytes both ways; the zipfile loop and Info-ZIP run in the load process (Info-ZIP "
        "as child processes: no RSS reported, its CPU is client_busy); every zip is DEFLATE "
        "at zlib's default level 6 (archive.zip's and zip's default) and fsynced; nothing "
        "unzipped is fsynced; the server's job is one call, answered when it ends"
    )

    def go(mode: str) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            work = data / "files" / "work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            spec: dict[str, Any] = {"mode": mode, "tree": str(tree), "work": str(work)}
            if mode == "server":
                spec |= {"url": proc.url(), "auth": AUTH, "server_pid": proc.pid}
            try:
                cases: Cases = ctx.load("archives", spec, timeout=3600)["cases"]
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return cases

        return measure

    stand_in = common_stand_in(ctx)

    missing = [b for b in ("zip", "unzip") if shutil.which(b) is None]
    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, lambda: ctx.middlewared(data), go("server")),
            Contender(BARE, stand_in, go("zipfile")),
            Contender(
                INFOZIP,
                stand_in,
                go("infozip"),
                f"no {' nor '.join(missing)} on PATH (Debian: apt install zip unzip)"
                if missing
                else None,
            ),
        ],
    )
    for case, what in ((ZIP_CASE, "zip"), (UNZIP_CASE, "unzip")):
        result.target(
            f"archives: {what} MB/s vs bare zipfile",
            result.ratio(case, "mb_per_s", BARE),
            ">=",
            0.9,
            "x",
        )
    result.target(
        "archives: server RSS growth, zip",
        result.median(ZIP_CASE, PROJECT, "rss_growth_mib"),
        "<=",
        64.0,
        "MiB",
    )
    result.target(
        "archives: server RSS growth, unzip",
        result.median(UNZIP_CASE, PROJECT, "rss_growth_mib"),
        "<=",
        64.0,
        "MiB",
    )
    for case, what in ((ZIP_CASE, "zip"), (UNZIP_CASE, "unzip")):
        ratio = result.ratio(case, "mb_per_s", INFOZIP)
        if ratio is not None:
            result.notes.append(f"{what}: MB/s {ratio:.2f}x Info-ZIP's (report only)")
    return result
