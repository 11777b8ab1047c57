"""Scenario 11, thumbnails: ``image.thumbnail`` of a 12-megapixel JPEG (the four sizes,
written under the root) against a bare Pillow loop making the four sizes naively, and the
same loop with the JPEG decoder's draft mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from bench.context import AUTH, Context
from bench.loads.thumbnails import CASE
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all
from bench.scenarios._common import stand_in as common_stand_in

NAIVE = "bare Pillow, each size from the full image"
DRAFT = "bare Pillow, same with draft mode"


def photo(path: Path) -> Path:
    """A 4000x3000 JPEG with detail everywhere (noise over gradients), as a camera's."""
    size = (4000, 3000)
    noise = Image.effect_noise(size, 40)
    down = Image.linear_gradient("L").resize(size)
    across = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)
    Image.merge("RGB", (noise, across, down)).save(path, "JPEG", quality=90)
    return path


def run(ctx: Context) -> Result:
    warmup, seconds = (0.1, 0.5) if ctx.smoke else (1.0, 5.0)
    result = Result(
        "thumbnails",
        "Thumbnails: image.thumbnail of a 12 MP JPEG (four sizes), one after another",
        {"warmup_s": warmup, "seconds": seconds},
        columns=["images_per_s", "p50_ms", "p99_ms", "server_us_per_op"],
    )
    result.notes.append(
        "the bare loops run in the load process and keep their output in memory; "
        "middlewared's runs are persisted jobs that write four files under the root"
    )
    data = ctx.data_dir("thumbnails")
    image = photo(data / "files" / "photo.jpg")

    def go(bare: bool, draft: bool = False) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            spec: dict[str, Any] = {"bare": bare, "draft": draft, "path": str(image)}
            spec |= {"warmup": warmup, "seconds": seconds}
            if not bare:
                spec |= {"url": proc.url(), "auth": AUTH, "server_pid": proc.pid}
            cases: Cases = ctx.load("thumbnails", spec, timeout=300)["cases"]
            return cases

        return measure

    stand_in = common_stand_in(ctx)

    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, lambda: ctx.middlewared(data), go(False)),
            Contender(NAIVE, stand_in, go(True)),
            Contender(DRAFT, stand_in, go(True, True)),
        ],
    )
    result.target(
        "thumbnails: images per second vs the naive loop",
        result.ratio(CASE, "images_per_s", NAIVE),
        ">=",
        1.0,
        "x",
    )
    result.target(
        "thumbnails: images per second vs the draft-mode loop",
        result.ratio(CASE, "images_per_s", DRAFT),
        ">=",
        0.8,
        "x",
    )
    return result
