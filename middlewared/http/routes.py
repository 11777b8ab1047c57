"""Plugin routes (``middlewared.routes``) mounted on the aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from middlewared import jsonc
from middlewared.http.auth import authenticate
from middlewared.http.errors import PayloadTooLarge, http_error
from middlewared.http.keys import MIDDLEWARE
from middlewared.http.websocket import client_address
from middlewared.routes import HttpRequest, HttpResponse, Route


def mount_route(app: web.Application, route: Route) -> None:
    if route.static_dir is not None:
        # aiohttp's static resource refuses paths that leave the folder and, with
        # follow_symlinks off, symlinks inside it.
        app.router.add_static(route.path, route.static_dir, follow_symlinks=False)
        return
    app.router.add_route(route.method, route.path, _handler(route))


def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app[MIDDLEWARE]
        credentials = await authenticate(request, app) if route.authenticated else None
        if request.content_length is not None and request.content_length > route.max_body:
            raise http_error(PayloadTooLarge, f"Body larger than {route.max_body} bytes")
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > route.max_body:
                raise http_error(PayloadTooLarge, f"Body larger than {route.max_body} bytes")
        assert route.handler is not None
        answer = await route.handler(
            HttpRequest(
                method=request.method,
                path=request.path,
                match=dict(request.match_info),
                query=dict(request.query),
                headers=dict(request.headers),
                body=bytes(body),
                remote=client_address(request),
                credentials=credentials,
            )
        )
        return _response(answer)

    return handle


def _response(answer: HttpResponse) -> web.StreamResponse:
    if answer.file is not None and answer.json is None:
        headers = {"Content-Type": answer.content_type, **answer.headers}
        return web.FileResponse(answer.file, status=answer.status, headers=headers)
    if answer.json is not None:
        return web.Response(
            status=answer.status,
            text=jsonc.dumps(answer.json),
            content_type="application/json",
            headers=dict(answer.headers),
        )
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=answer.content_type,
        headers=dict(answer.headers),
    )
