"""Build the aiohttp application around a Middleware and run it."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from middlewared.app import Middleware
from middlewared.http import rest, tls, unixsock
from middlewared.http.admission import Admission
from middlewared.http.download import download_handler
from middlewared.http.fds import throttle_accept_errors
from middlewared.http.keys import ADMISSION, MIDDLEWARE
from middlewared.http.routes import mount_route
from middlewared.http.upload import upload_handler
from middlewared.http.websocket import legacy_handler, websocket_handler
from middlewared.ws.session import Session

log = logging.getLogger(__name__)

GOING_AWAY = 1001
# Connections the kernel holds for us before we accept them (aiohttp's TCPSite default).
LISTEN_BACKLOG = 128


# The collector's youngest generation runs after this many new container objects (Python's
# default: 700, a few jobs' worth).
YOUNG_GC_THRESHOLD = 5000


def settle_collector() -> None:
    """Once started: what start-up built (modules, schemas, plugins, the directory) lives
    as long as the server, so it is moved out of the collector's sight, and the youngest
    generation is collected every 5,000 allocations instead of 700. Full collections over
    the start-up heap and young ones every few jobs were a tenth of a job's CPU
    (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


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


def admission_middleware(admission: Admission) -> Any:
    @web.middleware
    async def request_started(request: web.Request, handler: Any) -> web.StreamResponse:
        """The request's headers are in: the connection leaves the header deadline."""
        admission.request_started(request.transport)
        response: web.StreamResponse = await handler(request)
        return response

    return request_started


def build_app(app: Middleware, admission: Admission) -> web.Application:
    """The API's own routes, then those the plugins declared (routes as data)."""
    web_app = web.Application(
        middlewares=[admission_middleware(admission), json_errors], client_max_size=1024**2
    )
    web_app[MIDDLEWARE] = app
    web_app[ADMISSION] = admission
    web_app.router.add_get("/api/current", websocket_handler)
    web_app.router.add_get("/websocket", legacy_handler)
    web_app.router.add_post("/_upload", upload_handler)
    web_app.router.add_post("/_upload/", upload_handler)
    web_app.router.add_get("/_download/{job_id}", download_handler)
    rest.mount(web_app, app)
    for route in app.routes:
        mount_route(web_app, route)
    return web_app


async def serve(app: Middleware) -> None:
    """Start, print where we listen, run until SIGTERM/SIGINT, then stop gracefully."""
    loop = asyncio.get_running_loop()
    # A SIGHUP while starting (a reload sent too early) must not end the process: start
    # reads the configuration file anyway.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP while starting: ignored"))
    await app.start()
    config = app.config
    limits = config.connections
    runner: web.AppRunner | None = None

    def handlers() -> asyncio.Protocol:
        assert runner is not None and runner.server is not None
        return runner.server()

    admission = Admission(limits, handlers)
    web_app = build_app(app, admission)
    # Past its first request, a connection's next headers must come within the header
    # timeout too: aiohttp's keep-alive timeout is that deadline.
    runner = web.AppRunner(
        web_app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=5.0,
        keepalive_timeout=limits.header_timeout_seconds,
    )
    await runner.setup()
    throttle_accept_errors(loop, admission.recurring)
    # Our own listener rather than aiohttp's site: each accepted socket goes through admission
    # before aiohttp's protocol (web.Server is a protocol factory) sees it.
    transports = config.transports
    certificate = tls.files(transports, config.data_dir)
    ssl_context = tls.context(*certificate) if certificate is not None else None
    listener = await loop.create_server(
        admission.protocol,
        config.host,
        config.port,
        reuse_address=True,
        backlog=LISTEN_BACKLOG,
        ssl=ssl_context,
    )
    local = (
        await unixsock.listen(loop, admission.protocol, transports)
        if transports.unix_socket is not None
        else None
    )
    port = int(listener.sockets[0].getsockname()[1])
    app.port = port
    if transports.tls_self_signed and certificate is not None:
        app.cafile = certificate[0]
    if certificate is not None:
        app.tls_end_point = tls.end_point(certificate[0])
    settle_collector()
    app.hooks.launched(port)
    scheme = "https" if ssl_context is not None else "http"
    if certificate is not None:
        print(f"middlewared TLS certificate {certificate[0]}", flush=True)
        print(f"middlewared TLS SHA-256 fingerprint {tls.fingerprint(certificate[0])}", flush=True)
    if transports.unix_socket is not None:
        print(f"middlewared listening on unix:{transports.unix_socket}", flush=True)
    print(f"middlewared listening on {scheme}://{config.host}:{port}", flush=True)
    log.info("listening on %s:%d, data dir %s", config.host, port, config.data_dir)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = asyncio.create_task(app.reload_config(), name="reload-config")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        loop.remove_signal_handler(signal.SIGHUP)
        for task in reloads:
            task.cancel()
        await asyncio.gather(*reloads, return_exceptions=True)
        # Jobs end (or are aborted) while their callers are still connected to hear it.
        await app.stop()
        listener.close()
        if local is not None:
            local.close()
            unixsock.unlink(transports.unix_socket)  # type: ignore[arg-type]
        sessions: set[Session] = set(app.sessions)
        await asyncio.gather(
            *(s.transport.close(GOING_AWAY, "Server shutting down") for s in list(sessions)),
            return_exceptions=True,
        )
        await runner.cleanup()
