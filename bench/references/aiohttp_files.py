"""Bare aiohttp file handlers, as a competent aiohttp user writes them: ``POST /_upload``
streams the multipart ``file`` part to a temporary file with every disk call in a thread
(the loop only reads the socket; a 1 MiB write is in flight while the next is read), fsyncs
and renames it (the guarantee ``filesystem.put`` gives), and ``GET /files/{name}`` is a
plain ``FileResponse`` (sendfile)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import BinaryIO

import orjson
from aiohttp import BodyPartReader, web

from bench.references._serve import parser, serve_aiohttp

ROOT = web.AppKey("root", Path)
PIECE = 256 * 1024  # as middlewared reads an upload
WRITE = 1024 * 1024  # bytes handed to the writing thread at once


def _finish(f: BinaryIO, tail: bytes) -> None:
    f.write(tail)
    f.flush()
    os.fsync(f.fileno())


async def upload(request: web.Request) -> web.Response:
    reader = await request.multipart()
    data = await reader.next()
    if not isinstance(data, BodyPartReader) or data.name != "data":
        raise web.HTTPBadRequest(text="the first part must be 'data'")
    target = request.app[ROOT] / Path(orjson.loads(await data.read())["params"][0]).name
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != "file":
        raise web.HTTPBadRequest(text="expected a 'file' part")
    tmp = target.with_suffix(".part")
    f = await asyncio.to_thread(tmp.open, "wb")
    try:
        writing: asyncio.Future[int] | None = None
        buf = bytearray()
        while chunk := await part.read_chunk(PIECE):
            buf += chunk
            if len(buf) >= WRITE:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(f.write, buf))
                buf = bytearray()
        if writing is not None:
            await writing
        await asyncio.to_thread(_finish, f, bytes(buf))
    finally:
        await asyncio.to_thread(f.close)
    await asyncio.to_thread(os.replace, tmp, target)
    return web.json_response({"job_id": 0})


async def download(request: web.Request) -> web.FileResponse:
    path = request.app[ROOT] / Path(request.match_info["name"]).name
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def make_app(root: Path) -> web.Application:
    application = web.Application(client_max_size=1024**2)
    application[ROOT] = root
    application.router.add_post("/_upload", upload)
    application.router.add_get("/files/{name}", download)
    return application


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--root", type=Path, required=True)
    args, _ = p.parse_known_args(sys.argv[1:])
    serve_aiohttp(lambda: make_app(args.root), sys.argv[1:])
