"""Bare aiohttp webhook handler, the reference of the triggers scenario's webhook part:
``POST /hooks/{key}`` reads the body, checks its hex HMAC-SHA256 in ``X-Middlewared-Sign``
with ``hmac.compare_digest`` (403 otherwise) and answers 202 ``{"job_id": n}``, a counter."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import sys

from aiohttp import web

from bench.references._serve import serve_aiohttp

HEADER = "X-Middlewared-Sign"
# The secret the load signs with (the same as the middlewared trigger's).
SECRET = b"bench-webhook-secret-0123456789"


def app() -> web.Application:
    counter = itertools.count(1)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get(HEADER, "").strip().lower()
        expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.encode()):
            return web.json_response({"error": "Bad signature", "status": 403}, status=403)
        return web.json_response({"job_id": next(counter)}, status=202)

    application = web.Application()
    application.router.add_post("/hooks/{key}", hook)
    return application


if __name__ == "__main__":
    serve_aiohttp(app, sys.argv[1:])
