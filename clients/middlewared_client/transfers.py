"""HTTP file transfers beside the WebSocket: ``POST /_upload`` and ``GET /_download``."""

from __future__ import annotations

import asyncio
import base64
import errno as _errno
import os
import secrets
import stat as st
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from middlewared import jsonc
from middlewared_client.endpoints import Endpoint, tls_context
from middlewared_client.errors import ClientError, ConnectFailed, error_from_http
from middlewared_client.options import Credentials

CHUNK = 256 * 1024
WS_PATH = "/api/current"

TransferCallback = Callable[[int, int | None], object]
"""Called as ``callback(bytes_done, bytes_total)``; the total is ``None`` when unknown."""

FileSpec = str | os.PathLike[str] | tuple[str, str | os.PathLike[str]]


def http_base(ws_url: str) -> str:
    """``ws://host:port/api/current`` -> ``http://host:port`` (``wss`` -> ``https``); the
    local socket's requests go to ``http://localhost`` through it."""
    if Endpoint.parse(ws_url).unix_path is not None:
        return "http://localhost"
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    path = parts.path.removesuffix(WS_PATH) if parts.path.endswith(WS_PATH) else ""
    return urlunsplit((scheme, parts.netloc, path.rstrip("/"), "", ""))


def auth_header(creds: Credentials) -> dict[str, str] | None:
    """The ``Authorization`` header for a password or an API key; ``None`` otherwise (a token
    login, or none: the caller asks the server for a fresh token)."""
    if creds.api_key is not None:
        return {"Authorization": f"Bearer {creds.api_key}"}
    if creds.password is not None and creds.username:
        pair = f"{creds.username}:{creds.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return None


@dataclass(frozen=True)
class LocalFile:
    """One file to upload: the name the server sees, where it is, and its size."""

    name: str
    path: Path
    size: int


def local_files(files: Sequence[FileSpec]) -> list[LocalFile]:
    """Check every file before anything is sent; ``OSError`` when one cannot be read."""
    if isinstance(files, str | os.PathLike):
        files = [files]
    if not files:
        raise ValueError("no file to upload")
    return [_local_file(spec) for spec in files]


def _local_file(spec: FileSpec) -> LocalFile:
    name, where = spec if isinstance(spec, tuple) else (None, spec)
    path = Path(where)
    info = path.stat()
    if not st.S_ISREG(info.st_mode):
        raise IsADirectoryError(_errno.EISDIR, "Not a regular file", str(path))
    return LocalFile(name or path.name, path, info.st_size)


class Progress:
    """Counts the bytes of a transfer and tells a callback."""

    def __init__(self, total: int | None, callback: TransferCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback

    def add(self, count: int) -> None:
        self.done += count
        if self._callback is not None:
            self._callback(self.done, self.total)


class FilePayload(Payload):
    """A file read from disk in chunks as the request goes out, never whole in memory."""

    _autoclose = True  # the file is opened and closed by write()

    def __init__(self, source: LocalFile, progress: Progress) -> None:
        super().__init__(source.path, content_type="application/octet-stream")
        self._source = source
        self._progress = progress
        self._size = source.size
        self.set_content_disposition("form-data", name="file", filename=source.name)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file payload is streamed, not decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        remaining = self._source.size
        with await _open_reading(self._source.path) as f:
            while remaining > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, remaining))
                if not chunk:
                    raise ClientError(f"{self._source.path} shrank during the upload", _errno.EIO)
                await writer.write(chunk)
                remaining -= len(chunk)
                self._progress.add(len(chunk))


async def _open_reading(path: Path) -> BinaryIO:
    """Open ``path`` off the event loop; a file opened for a cancelled caller (the server
    answered before the body was sent) is closed, not leaked."""
    opening: asyncio.Future[BinaryIO] = asyncio.ensure_future(asyncio.to_thread(_open, path))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


def _open(path: Path) -> BinaryIO:
    return path.open("rb")


def _close_opened(opening: asyncio.Future[BinaryIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def multipart(
    method: str, params: Any, sources: Sequence[LocalFile], progress: Progress
) -> aiohttp.MultipartWriter:
    """The ``data`` part (method and params as JSON), then one ``file`` part per file."""
    writer = aiohttp.MultipartWriter("form-data")
    data = writer.append(jsonc.dumps({"method": method, "params": params}))
    data.set_content_disposition("form-data", name="data")
    for source in sources:
        writer.append_payload(FilePayload(source, progress))
    return writer


def session(connect_timeout: float, ws_url: str, cafile: str | None) -> aiohttp.ClientSession:
    """HTTP to the server ``ws_url`` names: over its local socket, or TCP (TLS verified
    against ``cafile`` when given)."""
    # No overall deadline: a transfer takes as long as its size needs.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
    endpoint = Endpoint.parse(ws_url)
    connector: aiohttp.BaseConnector | None = None
    if endpoint.unix_path is not None:
        connector = aiohttp.UnixConnector(endpoint.unix_path)
    elif cafile is not None:
        connector = aiohttp.TCPConnector(ssl=tls_context(cafile))
    return aiohttp.ClientSession(timeout=timeout, connector=connector)


def _transport_error(url: str, exc: Exception) -> ClientError:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectFailed(f"Cannot connect to {url}: {exc.strerror or exc}", exc.errno)
    return ClientError(f"Transfer with {url} failed: {type(exc).__name__}: {exc}", _errno.EIO)


async def upload(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    request: tuple[str, Any],
    sources: Sequence[LocalFile],
    on_progress: TransferCallback | None = None,
) -> int:
    """POST the files; the id of the job that receives them."""
    method, params = request
    progress = Progress(sum(s.size for s in sources), on_progress)
    try:
        body = multipart(method, params, sources, progress)
        async with http.post(url, data=body, headers=headers) as response:
            reply = await response.read()
            status = response.status
    except aiohttp.ClientError as exc:
        raise _transport_error(url, exc) from exc
    if status != 200:
        raise error_from_http(status, reply, method)
    job_id = _http_json(reply).get("job_id")
    if not isinstance(job_id, int):
        raise ClientError(f"Unexpected reply to the upload: {reply[:200]!r}", _errno.EPROTO)
    return job_id


def _http_json(body: bytes) -> dict[str, Any]:
    try:
        data = jsonc.loads(body)
    except jsonc.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


class PartFile:
    """A download in progress: a new file beside its target, renamed to it once whole."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
        self.file: BinaryIO = self.path.open("xb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.path, self.target)

    def discard(self) -> None:
        """Close and remove it, unless committed (then there is nothing left to remove)."""
        self.file.close()
        self.path.unlink(missing_ok=True)


async def download(
    http: aiohttp.ClientSession,
    url: str,
    out: BinaryIO,
    on_progress: TransferCallback | None = None,
) -> int:
    """GET ``url`` into ``out``; the number of bytes received. Local write errors are raised
    as they are (``OSError``), the server's refusals and broken transfers as errors."""
    try:
        async with http.get(url) as response:
            if response.status != 200:
                raise error_from_http(response.status, await response.read())
            progress = Progress(response.content_length, on_progress)
            async for chunk in response.content.iter_chunked(CHUNK):
                await asyncio.to_thread(out.write, chunk)
                progress.add(len(chunk))
    except aiohttp.ClientError as exc:
        raise _transport_error(url, exc) from exc
    if progress.total is not None and progress.done != progress.total:
        raise ClientError(
            f"Download cut short: {progress.done} of {progress.total} bytes", _errno.EIO
        )
    return progress.done
