"""Build the aiohttp application around a Middleware and run it."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from middlewared.app import Middleware
from middlewared.http.download import download_handler
from middlewared.http.keys import MIDDLEWARE
from middlewared.http.routes import mount_route
from middlewared.http.upload import upload_handler
from middlewared.http.websocket import websocket_handler
from middlewared.ws.session import Session

log = logging.getLogger(__name__)

GOING_AWAY = 1001


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every HTTP refusal carries a JSON body that says why."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        return web.json_response(
            {"error": e.reason, "status": e.status},
            status=e.status,
            headers={
                k: v
                for k, v in e.headers.items()
                if k.lower() not in ("content-type", "content-length")
            },
        )
    except HttpProcessingError as e:
        # A malformed request (multipart headers, chunking): the client's fault.
        return web.json_response(
            {"error": f"Malformed request: {e.message}", "status": 400}, status=400
        )
    except asyncio.CancelledError:
        raise
    except ConnectionError as e:
        # The client went away: nobody to answer, nothing to log loudly.
        log.info("HTTP %s %s: client gone (%s)", request.method, request.path, e)
        return web.json_response({"error": "Connection lost", "status": 400}, status=400)
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return web.json_response({"error": "Internal error", "status": 500}, status=500)


def build_app(middleware: Middleware) -> web.Application:
    """The API's own routes, then those the plugins declared (routes as data)."""
    app = web.Application(middlewares=[json_errors], client_max_size=1024**2)
    app[MIDDLEWARE] = middleware
    app.router.add_get("/api/current", websocket_handler)
    app.router.add_post("/_upload", upload_handler)
    app.router.add_post("/_upload/", upload_handler)
    app.router.add_get("/_download/{job_id}", download_handler)
    for route in middleware.routes:
        mount_route(app, route)
    return app


async def serve(middleware: Middleware) -> None:
    """Start, print where we listen, run until SIGTERM/SIGINT, then stop gracefully."""
    await middleware.start()
    app = build_app(middleware)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    config = middleware.config
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    port = _bound_port(site) or config.port
    print(f"middlewared listening on http://{config.host}:{port}", flush=True)
    log.info("listening on %s:%d, data dir %s", config.host, port, config.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        # Jobs end (or are aborted) while their callers are still connected to hear it.
        await middleware.stop()
        await site.stop()
        sessions: set[Session] = set(middleware.sessions)
        await asyncio.gather(
            *(s.transport.close(GOING_AWAY, "Server shutting down") for s in list(sessions)),
            return_exceptions=True,
        )
        await runner.cleanup()


def _bound_port(site: web.TCPSite) -> int | None:
    server = site._server  # aiohttp exposes no public accessor for the bound socket
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return None
