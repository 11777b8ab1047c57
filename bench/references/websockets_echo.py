"""Bare ``websockets`` server that answers each JSON-RPC call at once (``echo.reply``)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve

from bench.references._serve import parser
from bench.references._serve import serve as run
from bench.references.echo import reply


async def handler(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(reply(message))


async def start(host: str, port: int) -> tuple[int, Callable[[], Awaitable[None]]]:
    server = await serve(handler, host, port, max_size=None, compression=None)
    bound = int(next(iter(server.sockets)).getsockname()[1])

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return bound, stop


if __name__ == "__main__":
    args = parser(__doc__).parse_args(sys.argv[1:])
    run(start, args.host, args.port)
