"""An uploaded file read while it arrives: every byte in order, whatever the interleaving of
the client's chunks and the job's reads, with the memory tail bounded (real spool files)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from middlewared.jobs.pipes import TAIL_BYTES, PipeError, UploadedFile

KIB = 1024


async def _run(
    path: Path, sizes: list[int], pauses: list[int], read_size: int, tail_limit: int
) -> None:
    f = UploadedFile("x", path)
    rng = random.Random(len(sizes))
    sent = bytearray()
    received = bytearray()
    peak_tail = 0

    async def client() -> None:
        nonlocal peak_tail
        for i, size in enumerate(sizes):
            chunk = rng.randbytes(size)
            sent.extend(chunk)
            await f.append(chunk)
            peak_tail = max(peak_tail, f._tail_bytes)
            for _ in range(pauses[i % len(pauses)]):
                await asyncio.sleep(0)
        await f.finish()

    async def job() -> None:
        n = 0
        while chunk := await f.read(read_size):
            assert len(chunk) <= read_size
            received.extend(chunk)
            n += 1
            for _ in range(pauses[n % len(pauses)] // 2):
                await asyncio.sleep(0)

    await asyncio.gather(client(), job())
    assert bytes(received) == bytes(sent)
    assert f.size == len(sent)
    assert peak_tail <= tail_limit


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([1, 100, 64 * KIB, 256 * KIB, 1024 * KIB]), max_size=40),
    pauses=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    read_size=st.sampled_from([1000, 64 * KIB, 1024 * KIB]),
    tail_limit=st.sampled_from([100 * KIB, 300 * KIB, TAIL_BYTES]),
)
@example(sizes=[100, 1024 * KIB, 100], pauses=[0], read_size=1000, tail_limit=100 * KIB)
def test_every_byte_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    pauses: list[int],
    read_size: int,
    tail_limit: int,
) -> None:
    """With small tails too, so that spills happen between reads of the tail."""
    path = tmp_path_factory.mktemp("spool") / "f.upload"
    with patch("middlewared.jobs.pipes.TAIL_BYTES", tail_limit):
        asyncio.run(_run(path, sizes, pauses, read_size, tail_limit))


async def test_a_job_that_keeps_up_reads_from_memory(tmp_path: Path) -> None:
    f = UploadedFile("x", tmp_path / "f.upload")
    for i in range(64):
        await f.append(bytes([i]) * 256 * KIB)
        assert await f.read() == bytes([i]) * 256 * KIB
    await f.finish()
    assert await f.read() == b""
    assert f.size == 64 * 256 * KIB
    assert (tmp_path / "f.upload").stat().st_size == 0  # nothing went through the disk


async def test_a_job_that_lags_reads_the_spool_then_memory(tmp_path: Path) -> None:
    f = UploadedFile("x", tmp_path / "f.upload")
    total = 3 * TAIL_BYTES
    for i in range(total // (256 * KIB)):
        await f.append(bytes([i % 251]) * 256 * KIB)
    assert f._tail_bytes <= TAIL_BYTES
    spooled = (tmp_path / "f.upload").stat().st_size
    assert spooled >= total - TAIL_BYTES
    await f.finish()
    data = b"".join([chunk async for chunk in f.chunks()])
    assert data == b"".join(bytes([i % 251]) * 256 * KIB for i in range(total // (256 * KIB)))


async def test_an_interrupted_upload_raises_for_the_reader(tmp_path: Path) -> None:
    f = UploadedFile("x", tmp_path / "f.upload")
    await f.append(b"abc")
    reading = asyncio.create_task(f.read())
    assert await reading == b"abc"
    waiting = asyncio.create_task(f.read())
    await asyncio.sleep(0)
    await f.finish("Upload interrupted")
    with pytest.raises(PipeError, match="Upload interrupted"):
        await waiting
