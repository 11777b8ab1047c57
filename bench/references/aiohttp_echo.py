"""Bare aiohttp WebSocket server that answers each JSON-RPC call at once (``echo.reply``)."""

from __future__ import annotations

import sys

from aiohttp import WSMsgType, web

from bench.references._serve import serve_aiohttp
from bench.references.echo import reply


async def handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(reply(msg.data))
    return ws


def app() -> web.Application:
    application = web.Application()
    application.router.add_get("/api/current", handler)
    return application


if __name__ == "__main__":
    serve_aiohttp(app, sys.argv[1:])
