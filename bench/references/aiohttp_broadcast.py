"""Bare aiohttp event broadcast: each event is serialised once and written to every
subscriber; a subscriber whose socket buffer is full misses events instead of stalling the
others. It speaks just enough of middlewared's protocol for the same load to drive it:
``auth.*`` (any credentials), ``core.subscribe``, ``core.ping`` and ``bench.pulse`` (a
virtual job that publishes progress like ``bench/plugins/benchjobs.py``'s)."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bench.references._serve import serve_aiohttp

# Buffered bytes past which a subscriber misses an event (the write would have to wait).
BACKLOG = 16 * 1024
SUBSCRIBERS = web.AppKey("subscribers", dict[web.WebSocketResponse, asyncio.Transport])
_ids = itertools.count(1)


def _record(job_id: int, i: int, count: int) -> dict[str, Any]:
    """Shaped like a middlewared job record, so both sides encode as much per event."""
    now = int(time.time() * 1000)
    return {
        "id": job_id,
        "method": "bench.pulse",
        "arguments": [count, 0.25, 0.0],
        "message_ids": [job_id],
        "description": None,
        "abortable": False,
        "transient": False,
        "logs_path": None,
        "logs_excerpt": None,
        "progress": {
            "percent": 100.0 * i / count,
            "description": f"pulse {i} of {count}",
            "extra": {"t": time.time()},
        },
        "result": None,
        "error": None,
        "exception": None,
        "exc_info": None,
        "state": "RUNNING",
        "time_started": {"$date": now},
        "time_finished": None,
        "credentials": {"type": "LOGIN_PASSWORD", "data": {"username": "root"}},
    }


async def _publish(subs: dict[web.WebSocketResponse, asyncio.Transport], fields: Any) -> None:
    params = {"msg": "changed", "collection": "core.get_jobs", "id": fields["id"]}
    frame = orjson.dumps(
        {"jsonrpc": "2.0", "method": "collection_update", "params": {**params, "fields": fields}}
    ).decode()
    for ws, transport in list(subs.items()):
        if transport.is_closing() or ws.closed:
            subs.pop(ws, None)
        elif transport.get_write_buffer_size() <= BACKLOG:
            try:
                await ws.send_str(frame)
            except ConnectionError:
                subs.pop(ws, None)


async def _pulse(subs: dict[web.WebSocketResponse, asyncio.Transport], params: list[Any]) -> int:
    count, interval, offset = int(params[0]), float(params[1]), float(params[2])
    job_id = next(_ids)
    # Due at fixed times, as bench.pulse's: the sends' time does not thin the offer.
    clock = asyncio.get_running_loop().time
    start = clock() + offset
    for i in range(1, count + 1):
        await asyncio.sleep(max(0.0, start + (i - 1) * interval - clock()))
        await _publish(subs, _record(job_id, i, count))
    return count


async def _answer(ws: web.WebSocketResponse, call: dict[str, Any], result: Any) -> None:
    await ws.send_str(
        orjson.dumps({"jsonrpc": "2.0", "result": result, "id": call.get("id")}).decode()
    )


async def _pulse_then_answer(
    ws: web.WebSocketResponse,
    subs: dict[web.WebSocketResponse, asyncio.Transport],
    call: dict[str, Any],
) -> None:
    await _answer(ws, call, await _pulse(subs, call.get("params") or []))


async def handler(request: web.Request) -> web.WebSocketResponse:
    subs = request.app[SUBSCRIBERS]
    ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, compress=False)
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    tasks: set[asyncio.Task[None]] = set()
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            call = orjson.loads(msg.data)
            method = call.get("method")
            if method == "bench.pulse":
                task = asyncio.create_task(_pulse_then_answer(ws, subs, call))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif method == "core.subscribe":
                subs[ws] = transport
                await _answer(ws, call, "sub-1")
            elif method == "auth.generate_token":
                await _answer(ws, call, "bare-token")
            else:
                await _answer(ws, call, "pong" if method == "core.ping" else True)
    finally:
        subs.pop(ws, None)
    return ws


def app() -> web.Application:
    application = web.Application()
    application[SUBSCRIBERS] = {}
    application.router.add_get("/api/current", handler)
    return application


if __name__ == "__main__":
    serve_aiohttp(app, sys.argv[1:])
