"""Thumbnails of a 12-megapixel JPEG, one after another: ``image.thumbnail`` over the
WebSocket; or (``bare``) Pillow in a plain loop in this process, each size resized from the
full image (``draft``: with the JPEG decoder's draft mode as well)."""

from __future__ import annotations

import io
import time
from typing import Any

from PIL import Image, ImageOps

from bench.loads.common import CpuWindow, auth, level_metrics, ws_url
from bench.loads.fastws import close_all, open_many

CASE = "12 MP JPEG, four sizes, 1 at a time"
BOXES = ((1920, 1080), (1280, 720), (640, 480))


def naive(path: str, draft: bool) -> None:
    """What a competent user writes first: decode once, each size from the full image."""
    with Image.open(path) as im:
        if draft:
            im.draft("RGB", BOXES[0])
        full = ImageOps.exif_transpose(im).convert("RGB")
    for box in BOXES:
        small = full.copy()
        small.thumbnail(box, Image.Resampling.LANCZOS)
        small.save(io.BytesIO(), "JPEG", quality=85)
    ImageOps.fit(full, (96, 96), Image.Resampling.LANCZOS).save(io.BytesIO(), "JPEG", quality=85)


async def bare(path: str, draft: bool, seconds: float) -> list[float]:
    lat: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    while (t0 := clock()) < deadline:
        naive(path, draft)
        lat.append(clock() - t0)
    return lat


async def calls(spec: dict[str, Any], seconds: float) -> list[float]:
    (conn,) = await open_many(ws_url(spec), 1, auth(spec))
    try:
        lat: list[float] = []
        clock = time.perf_counter
        deadline = clock() + seconds
        while (t0 := clock()) < deadline:
            await conn.call("image.thumbnail", spec["path"])
            lat.append(clock() - t0)
        return lat
    finally:
        await close_all([conn])


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: path (the image), bare and draft (bool), url and auth (not bare), warmup and
    seconds, server_pid."""

    async def measure(seconds: float) -> list[float]:
        if spec.get("bare"):
            return await bare(spec["path"], bool(spec.get("draft")), seconds)
        return await calls(spec, seconds)

    await measure(spec["warmup"])
    cpu = CpuWindow(spec.get("server_pid"))
    cpu.start()
    lat = await measure(spec["seconds"])
    cpu.stop()
    metrics = level_metrics(lat, cpu)
    return {"cases": {CASE: {"images_per_s": metrics.pop("jobs_per_s"), **metrics}}}
