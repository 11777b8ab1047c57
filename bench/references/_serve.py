"""Run a reference: parse ``--host/--port``, serve, print the address, stop on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from bench import loop
from bench.procstat import raise_nofile

# Starts serving on (host, port); returns the bound port and an async stop function.
Starter = Callable[[str, int], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]]


def parser(description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    return p


def announce(host: str, port: int) -> None:
    print(f"bench reference listening on http://{host}:{port}", flush=True)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    await stop.wait()


def serve(start: Starter, host: str, port: int) -> None:
    """Run ``start`` on the bench's event loop until SIGTERM."""

    async def main() -> None:
        bound, stop = await start(host, port)
        announce(host, bound)
        await _until_signalled()
        await stop()

    raise_nofile()
    loop.run(main())


def serve_aiohttp(app_factory: Callable[[], web.Application], argv: Sequence[str] | None) -> None:
    args, _ = parser(None).parse_known_args(argv)

    async def start(host: str, port: int) -> tuple[int, Callable[[], Awaitable[None]]]:
        runner = web.AppRunner(app_factory(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp has no public accessor for the bound socket
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]), runner.cleanup

    serve(start, args.host, args.port)
