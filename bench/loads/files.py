"""Upload then download one file, timing each and the server's peak RSS growth. The same
client for every contender: a streamed multipart body, a streamed download."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.loads.common import CpuWindow, ws_url
from bench.loads.fastws import Conn, close_all, open_many
from bench.procstat import peak_rss_bytes, reset_peak, rss_bytes

BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"
READ = 1024 * 1024
MIB = 1024 * 1024


def multipart(src: str, size: int, data: dict[str, Any]) -> tuple[int, AsyncIterator[bytes]]:
    """A ``data`` part then a ``file`` part read from ``src``: its length, and its bytes."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="data"\r\n\r\n'.encode()
        + orjson.dumps(data)
        + f"\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; "
        'name="file"; filename="blob.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    f = Path(src).open("rb")

    async def body() -> AsyncIterator[bytes]:
        with f:
            yield head
            # Reads come from the page cache: not worth a thread hop per MiB.
            while chunk := f.read(READ):
                yield chunk
            yield tail

    return len(head) + size + len(tail), body()


class Transfer:
    """Wall time, server CPU and server peak RSS growth of one transfer."""

    def __init__(self, pid: int, size: int) -> None:
        self.pid = pid
        self.size = size
        self.cpu = CpuWindow(pid)
        self.base = 0

    def __enter__(self) -> Transfer:
        reset_peak(self.pid)
        self.base = rss_bytes(self.pid)
        self.cpu.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu.stop()

    def metrics(self) -> dict[str, float]:
        growth = (peak_rss_bytes(self.pid) - self.base) / MIB
        return {
            "mib_per_s": self.size / MIB / self.cpu.wall,
            "seconds": self.cpu.wall,
            "rss_growth_mib": growth,
            "rss_growth_mib_per_gib": growth / (self.size / 1024**3),
            "server_busy": self.cpu.server / self.cpu.wall,
            "client_busy": self.cpu.client / self.cpu.wall,
            "server_cpu_s_per_gib": self.cpu.server / (self.size / 1024**3),
        }


async def _upload(
    http: aiohttp.ClientSession, spec: dict[str, Any], conn: Conn | None
) -> dict[str, float]:
    data = {"method": "filesystem.put", "params": [spec["target"], {"overwrite": True}]}
    length, body = multipart(spec["src"], spec["size"], data)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(length),
    }
    a = spec.get("auth")
    basic = aiohttp.BasicAuth(a["user"], a["password"]) if a else None
    t0 = time.perf_counter()
    async with http.post(spec["url"] + "/_upload", data=body, headers=headers, auth=basic) as r:
        reply = await r.json()
        if r.status != 200:
            raise RuntimeError(f"upload refused: {r.status} {reply}")
    accepted = time.perf_counter() - t0
    if conn is not None:
        # Done when the job has written the file where it belongs (fsynced, renamed).
        await conn.call("core.job_wait", reply["job_id"], timeout=600)
    return {"accepted_s": accepted}


async def _download(
    http: aiohttp.ClientSession, spec: dict[str, Any], conn: Conn | None
) -> dict[str, float]:
    if conn is not None:
        _job, path = await conn.call("core.download", "filesystem.get", [spec["target"]], "b")
    else:
        path = "/files/" + spec["target"]
    got = 0
    async with http.get(spec["url"] + path) as r:
        async for chunk in r.content.iter_chunked(READ):
            got += len(chunk)
    if got != spec["size"]:
        raise RuntimeError(f"downloaded {got} bytes of {spec['size']}")
    return {}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth (None: the bare server), src, size, target, server_pid."""
    pid, size = spec["server_pid"], spec["size"]
    cases: dict[str, dict[str, float]] = {}
    conns = await open_many(ws_url(spec), 1, spec["auth"]) if spec.get("auth") else []
    conn = conns[0] if conns else None
    async with aiohttp.ClientSession() as http:
        for name, step in (("upload", _upload), ("download", _download)):
            with Transfer(pid, size) as t:
                extra = await step(http, spec, conn)
            cases[name] = {**t.metrics(), **extra}
    await close_all(conns)
    return {"cases": cases}
