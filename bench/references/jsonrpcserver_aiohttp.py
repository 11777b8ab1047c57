"""jsonrpcserver's dispatcher behind an aiohttp WebSocket: ``core.ping`` and ``bench.echo``."""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import WSMsgType, web

from bench.optional import load
from bench.references._serve import serve_aiohttp

jsonrpcserver: Any = load("jsonrpcserver")


def app() -> web.Application:
    if jsonrpcserver is None:
        raise SystemExit("jsonrpcserver is not installed")
    rpc = jsonrpcserver

    async def ping() -> Any:
        return rpc.Success("pong")

    async def echo(value: Any) -> Any:
        return rpc.Success(value)

    methods = {"core.ping": ping, "bench.echo": echo}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                response = await rpc.async_dispatch(msg.data, methods=methods)
                if response:
                    await ws.send_str(response)
        return ws

    application = web.Application()
    application.router.add_get("/api/current", handler)
    return application


if __name__ == "__main__":
    serve_aiohttp(app, sys.argv[1:])
