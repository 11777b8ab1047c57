"""The asyncio client: calls, job handles and subscriptions over a reconnecting link."""

from __future__ import annotations

import asyncio
import contextlib
import errno as _errno
import logging
import os
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

from middlewared.errors import MiddlewareError
from middlewared_client import transfers
from middlewared_client.connection import Connection
from middlewared_client.errors import (
    CallTimeout,
    ClientClosed,
    ClientError,
    ConnectionLost,
    error_from_record,
    error_from_rpc,
)
from middlewared_client.jobs import JobHandle, JobTracker, ProgressCallback
from middlewared_client.link import Link, login
from middlewared_client.options import DEFAULT_MAX_SIZE, DEFAULT_URL, ClientOptions, Credentials
from middlewared_client.paging import DEFAULT_PAGE_SIZE, query_pages
from middlewared_client.subscriptions import EndCallback, EventCallback, Listener, Subscriptions
from middlewared_client.transfers import FileSpec, TransferCallback

log = logging.getLogger(__name__)

JOBS_COLLECTION = "core.get_jobs"
# A token for one HTTP transfer of a client logged in with a token: single-use, short-lived.
HTTP_TOKEN_TTL = 300
# How long a failed download waits for its aborted job to report how it ended.
ABANDON_TIMEOUT = 10.0


class AsyncClient:
    """A middlewared connection; ``await AsyncClient.connect(url, ...)`` opens and logs in."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        credentials: Credentials | None = None,
        options: ClientOptions | None = None,
    ) -> None:
        self._subs = Subscriptions()
        self._jobs = JobTracker()
        self._link = Link(
            url,
            options or ClientOptions(),
            credentials or Credentials(),
            on_notification=self._on_notification,
            on_open=self._on_open,
            on_lost=self._on_lost,
            on_give_up=lambda error: self._subs.end(None, error),
        )

    @classmethod
    def connect(
        cls,
        url: str = DEFAULT_URL,
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        reconnect: bool = True,
        call_timeout: float | None = None,
        max_size: int | None = DEFAULT_MAX_SIZE,
        options: ClientOptions | None = None,
    ) -> Connecting:
        """Open a client: ``await`` it, or use it as ``async with``."""
        creds = Credentials(username, password, api_key, token)
        if options is None:
            options = ClientOptions(
                reconnect=reconnect, call_timeout=call_timeout, max_size=max_size
            )
        return Connecting(cls(url, credentials=creds, options=options))

    async def __aenter__(self) -> AsyncClient:
        if not self._link.connected:
            await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return self._link.url

    @property
    def options(self) -> ClientOptions:
        return self._link.options

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def closed(self) -> bool:
        return self._link.closed

    @property
    def jobs_in_flight(self) -> int:
        """Job calls still waiting for their reply (ended ones are forgotten)."""
        return len(self._jobs)

    async def open(self) -> AsyncClient:
        """Connect, and log in with the credentials given at construction (if any)."""
        await self._link.open()
        return self

    async def login(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
    ) -> None:
        """Log in; raises ``LoginFailed`` when refused. Reconnections reuse these credentials."""
        creds = Credentials(username, password, api_key, token)
        await login(await self._link.current(), creds, self.options.call_timeout)
        self._link.credentials = creds

    @overload
    async def call(
        self,
        method: str,
        *params: Any,
        job: Literal[False] = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Any: ...

    @overload
    async def call(
        self,
        method: str,
        *params: Any,
        job: Literal[True],
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> JobHandle: ...

    async def call(
        self,
        method: str,
        *params: Any,
        job: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method``; ``job=True`` returns a ``JobHandle`` as soon as the call is sent.

        With ``on_progress`` (and no ``job``) the call tracks the job and returns its result.
        ``timeout`` bounds the wait for the reply (default ``options.call_timeout``); a job
        handle's wait is bounded by ``handle.result(timeout)`` instead.
        """
        timeout = self.options.call_timeout if timeout is None else timeout
        if job:
            return await self._start_job(method, list(params), on_progress, timeout)
        if on_progress is not None:
            handle = await self._start_job(method, list(params), on_progress, timeout)
            return await handle.result(timeout)
        conn = await self._link.current()
        return await conn.call(method, list(params), timeout)

    def query_pages(
        self,
        method: str,
        filters: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[list[Any]]:
        """``method``'s results page by page (``async for page in ...``), by cursor."""
        return query_pages(self.call, method, filters, options, page_size=page_size)

    async def iter_jobs(
        self,
        filters: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every job ``core.get_jobs(filters, options)`` matches, fetched a page at a time."""
        pages = self.query_pages("core.get_jobs", filters, options, page_size=page_size)
        async for page in pages:
            for job in page:
                yield job

    async def subscribe(
        self, name: str, callback: EventCallback, *, on_end: EndCallback | None = None
    ) -> str:
        """Call ``callback(params)`` for each event of ``name``; returns an id for unsubscribe.

        The subscription survives reconnections; ``on_end(error)`` is called when it ends
        for good (the server ended it, reconnection gave up, or the client closed: ``None``).
        """
        local_id = self._subs.add(Listener(name, callback, on_end))
        try:
            conn = await self._link.current()
            await self._subs.ensure_server(name, lambda n: self._subscribe_on(conn, n))
        except BaseException:
            self._subs.remove(local_id)
            raise
        return local_id

    async def unsubscribe(self, sub_id: str) -> None:
        listener = self._subs.remove(sub_id)
        if listener is None or self._subs.has_listeners(listener.name):
            return
        task = self._subs.pop_server(listener.name)
        conn = self._link.current_nowait()
        if task is None or conn is None:
            return
        server_id = await task
        await conn.call("core.unsubscribe", [server_id], self.options.call_timeout)

    async def abort_job(self, job_id: int) -> None:
        """Ask the server to abort job ``job_id``."""
        await self.call("core.job_abort", job_id)

    async def job_id_for_call(self, call_id: str) -> int | None:
        """The job that serves the call ``call_id`` (for a reply that came before its event)."""
        jobs = await self.call(
            "core.get_jobs", [["message_ids", "rin", call_id]], {"order_by": ["-id"], "limit": 1}
        )
        if isinstance(jobs, list) and jobs and isinstance(jobs[0], dict):
            job_id = jobs[0].get("id")
            return job_id if isinstance(job_id, int) else None
        return None

    async def follow_job(
        self, job_id: int, *, on_progress: ProgressCallback | None = None
    ) -> JobHandle:
        """A handle on job ``job_id``, which this client did not start by a call (an upload,
        another client's job): progress from ``core.get_jobs`` events, the outcome from
        ``core.job_wait``. Raises ``NotFound`` when there is no such job to be seen."""
        timeout = self.options.call_timeout
        conn = await self._link.current()
        await self._job_events(conn, "core.job_wait", timeout)
        handle = JobHandle(conn.next_id(), "", self)
        if on_progress is not None:
            handle.add_progress_callback(on_progress)
        self._jobs.follow(handle, job_id)
        try:
            await self._seed(conn, handle, job_id, timeout)
            future = await conn.send_call(handle.call_id, "core.job_wait", [job_id])
        except BaseException as exc:
            error = exc if isinstance(exc, MiddlewareError) else ClientError(str(exc))
            self._jobs.finish(handle, error=error)
            raise
        future.add_done_callback(lambda f: self._settle_followed(handle, f))
        return handle

    async def upload(
        self,
        method: str,
        params: Sequence[Any] | dict[str, Any],
        files: Sequence[FileSpec],
        *,
        on_progress: TransferCallback | None = None,
    ) -> JobHandle:
        """Start ``method`` with ``files`` as its input (``POST /_upload``); a handle on its job.

        ``files`` are paths, or ``(filename, path)`` pairs to name them otherwise; each is
        streamed from disk. ``on_progress(sent, total)`` follows the bytes sent. The handle
        follows the job: ``await handle.result()`` is its outcome.
        """
        sources = await asyncio.to_thread(transfers.local_files, files)
        headers = await self._http_headers()
        request = (method, params if isinstance(params, dict) else list(params))
        async with transfers.session(
            self.options.connect_timeout, self.url, self.options.cafile
        ) as http:
            job_id = await transfers.upload(
                http, self._http_url("/_upload"), headers, request, sources, on_progress
            )
        return await self.follow_job(job_id)

    async def download(
        self,
        method: str,
        args: Sequence[Any],
        filename: str,
        dest: str | os.PathLike[str],
        *,
        buffered: bool = False,
        on_progress: TransferCallback | None = None,
    ) -> Any:
        """Run ``method`` with its output saved to ``dest``; the job's result.

        ``core.download`` starts the job, then its output is fetched over HTTP into a
        temporary name beside ``dest`` (into ``dest/filename`` when ``dest`` is a directory),
        renamed once both the transfer and the job succeeded. Raises the job's error if it
        failed, else the transfer's. ``on_progress(received, total)`` follows the bytes.
        """
        target = await asyncio.to_thread(_download_target, Path(dest), filename)
        # Created first: a destination that cannot be written fails before any job starts.
        part = await asyncio.to_thread(transfers.PartFile, target)
        try:
            job_id, url = await self.call("core.download", method, list(args), filename, buffered)
            handle = await self._follow_or_abort(job_id)
            await self._fetch(url, part, handle, on_progress)
            result = await handle.result()
            await asyncio.to_thread(part.commit)
        finally:
            await asyncio.shield(asyncio.to_thread(part.discard))
        return result

    async def close(self) -> None:
        """Close the connection; calls and jobs in flight fail with ``ClientClosed``."""
        if self._link.closed:
            return
        await self._link.close()
        self._jobs.fail_all(ClientClosed())
        self._subs.end(None, None)

    # Hooks of the link.

    async def _on_open(self, conn: Connection) -> None:
        """A new connection: its subscriptions are gone, make the user's again."""
        self._subs.reset_server()
        for name in sorted(self._subs.user_names()):
            try:
                await self._subs.ensure_server(name, lambda n: self._subscribe_on(conn, n))
            except MiddlewareError as exc:
                if isinstance(exc, ClientError):
                    raise
                log.warning("could not subscribe again to %s: %s", name, exc)
                self._subs.end(name, exc)

    def _on_lost(self) -> None:
        # The server keeps running the jobs; their calls' replies are lost with the socket.
        self._jobs.fail_all(ConnectionLost())
        self._subs.drop_internal()
        self._subs.reset_server()

    def _on_notification(self, method: str, params: Any) -> None:
        if not isinstance(params, dict):
            return
        if method == "collection_update":
            self._subs.dispatch(params)
        elif method == "notify_unsubscribed":
            collection = params.get("collection")
            error = params.get("error")
            exc = error_from_rpc(error) if error is not None else None
            self._subs.end(collection if isinstance(collection, str) else None, exc)

    # Jobs.

    async def _subscribe_on(self, conn: Connection, name: str) -> Any:
        return await conn.call("core.subscribe", [name], self.options.call_timeout)

    async def _start_job(
        self,
        method: str,
        params: list[Any],
        on_progress: ProgressCallback | None,
        reply_timeout: float | None,
    ) -> JobHandle:
        conn = await self._link.current()
        await self._job_events(conn, method, reply_timeout)
        handle = JobHandle(conn.next_id(), method, self)
        if on_progress is not None:
            handle.add_progress_callback(on_progress)
        self._jobs.track(handle)
        try:
            future = await conn.send_call(handle.call_id, method, params)
        except BaseException as exc:
            error = exc if isinstance(exc, MiddlewareError) else ClientError(str(exc))
            self._jobs.finish(handle, error=error)
            raise
        future.add_done_callback(lambda f: self._settle(handle, f))
        return handle

    async def _job_events(self, conn: Connection, method: str, reply_timeout: float | None) -> None:
        """Make sure ``core.get_jobs`` events reach the job tracker."""
        if not self._subs.has_listeners(JOBS_COLLECTION, internal=True):
            self._subs.add(Listener(JOBS_COLLECTION, self._jobs.on_event, internal=True))
        try:
            async with asyncio.timeout(reply_timeout):
                await self._subs.ensure_server(
                    JOBS_COLLECTION, lambda n: self._subscribe_on(conn, n)
                )
        except TimeoutError:
            raise CallTimeout(f"No reply to core.subscribe within {reply_timeout} s") from None
        except MiddlewareError as exc:
            if isinstance(exc, ClientError):
                raise
            # Refused (not logged in, say): the call goes on, and its reply tells why.
            log.info("no job events for %s: %s", method, exc)

    async def _seed(
        self, conn: Connection, handle: JobHandle, job_id: int, timeout: float | None
    ) -> None:
        """The job's record as it is now: it may have ended before events were asked for."""
        query = [[["id", "=", job_id]], {"get": True}]
        record = await conn.call("core.get_jobs", query, timeout)
        if isinstance(record, dict):
            handle.method = str(record.get("method") or "")
            self._jobs.on_event({"msg": "changed", "id": job_id, "fields": record})

    def _settle(self, handle: JobHandle, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._jobs.finish(handle, error=ClientClosed())
            return
        exc = future.exception()
        if exc is None:
            self._jobs.finish(handle, result=future.result())
        else:
            error = exc if isinstance(exc, MiddlewareError) else ClientError(str(exc))
            self._jobs.finish(handle, error=error)

    def _settle_followed(self, handle: JobHandle, future: asyncio.Future[Any]) -> None:
        # core.job_wait on a job that ended already answers a bare CallError: the job's
        # record (seeded, or from its last event) keeps its errno and validation errors.
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, MiddlewareError) and not isinstance(exc, ClientError):
            recorded = error_from_record(handle.record)
            if recorded is not None:
                self._jobs.finish(handle, error=recorded)
                return
        self._settle(handle, future)

    # File transfers.

    def _http_url(self, path: str) -> str:
        return transfers.http_base(self.url) + path

    async def _http_headers(self) -> dict[str, str]:
        """The connection's credentials for HTTP; a token login gets a fresh token."""
        headers = transfers.auth_header(self._link.credentials)
        if headers is None:
            token = await self.call("auth.generate_token", HTTP_TOKEN_TTL, True)
            headers = {"Authorization": f"Token {token}"}
        return headers

    async def _follow_or_abort(self, job_id: int) -> JobHandle:
        try:
            return await self.follow_job(job_id)
        except BaseException:
            # Nobody will fetch its output: do not leave the job waiting for a reader.
            with contextlib.suppress(MiddlewareError):
                await self.abort_job(job_id)
            raise

    async def _fetch(
        self,
        url: str,
        part: transfers.PartFile,
        handle: JobHandle,
        on_progress: TransferCallback | None,
    ) -> None:
        try:
            async with transfers.session(
                self.options.connect_timeout, self.url, self.options.cafile
            ) as http:
                await transfers.download(http, self._http_url(url), part.file, on_progress)
        except MiddlewareError as exc:
            raise (await self._abandon(handle) or exc) from exc
        except OSError:
            await self._abandon(handle)
            raise

    async def _abandon(self, handle: JobHandle) -> MiddlewareError | None:
        """The transfer failed: stop the job. Its own error if it failed first (that explains
        more than the broken transfer), else ``None``."""
        if not handle.done():
            with contextlib.suppress(MiddlewareError):
                await handle.abort()
        try:
            await handle.result(ABANDON_TIMEOUT)
        except MiddlewareError as exc:
            if exc.errno != _errno.ECANCELED and not isinstance(exc, ClientError):
                return exc
        except TimeoutError:
            pass
        return None


def _download_target(dest: Path, filename: str) -> Path:
    """``dest`` itself, or ``dest/filename`` when ``dest`` is a directory."""
    if not dest.is_dir():
        return dest
    name = os.path.basename(filename.replace("\\", "/"))
    if name in ("", ".", ".."):
        raise ValueError(f"cannot save {filename!r} into a directory")
    return dest / name


class Connecting:
    """What ``AsyncClient.connect()`` returns: awaitable, or an async context manager."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, AsyncClient]:
        return self._client.open().__await__()

    async def __aenter__(self) -> AsyncClient:
        return await self._client.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.close()
