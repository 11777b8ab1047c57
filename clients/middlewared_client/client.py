"""The synchronous client: an ``AsyncClient`` driven from an event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from middlewared_client.aclient import AsyncClient
from middlewared_client.jobs import JobHandle, JobProgress, ProgressCallback
from middlewared_client.options import DEFAULT_MAX_SIZE, DEFAULT_URL, ClientOptions, Credentials
from middlewared_client.paging import DEFAULT_PAGE_SIZE
from middlewared_client.subscriptions import EndCallback, EventCallback
from middlewared_client.transfers import FileSpec, TransferCallback

_T = TypeVar("_T")


class _LoopThread:
    """An event loop running forever in a daemon thread, fed coroutines from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="middlewared-client", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a blocking Client method was called from one of its callbacks")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): do not leave the call running
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            self.run(_cancel_others())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
        self.loop.close()


async def _cancel_others() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


class SyncJobHandle:
    """The blocking face of a ``JobHandle``; progress callbacks run in the client's thread."""

    def __init__(self, handle: JobHandle, loop: _LoopThread) -> None:
        self._handle = handle
        self._loop = loop

    def __repr__(self) -> str:
        return repr(self._handle).replace("<JobHandle", "<SyncJobHandle", 1)

    @property
    def call_id(self) -> str:
        return self._handle.call_id

    @property
    def method(self) -> str:
        return self._handle.method

    @property
    def id(self) -> int | None:
        return self._handle.id

    @property
    def state(self) -> str | None:
        return self._handle.state

    @property
    def progress(self) -> JobProgress:
        return self._handle.progress

    @property
    def record(self) -> dict[str, Any]:
        return self._handle.record

    def done(self) -> bool:
        return self._handle.done()

    def add_progress_callback(self, callback: ProgressCallback) -> None:
        self._loop.loop.call_soon_threadsafe(self._handle.add_progress_callback, callback)

    def wait_id(self, timeout: float | None = None) -> int:
        return self._loop.run(self._handle.wait_id(timeout))

    def result(self, timeout: float | None = None) -> Any:
        """Block until the job ends; its result, or its error raised."""
        return self._loop.run(self._handle.result(timeout))

    def abort(self) -> None:
        self._loop.run(self._handle.abort())


class Client:
    """A blocking middlewared client: ``with Client(url, username=..., password=...) as c:``."""

    def __init__(
        self,
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
    ) -> None:
        creds = Credentials(username, password, api_key, token)
        if options is None:
            options = ClientOptions(
                reconnect=reconnect, call_timeout=call_timeout, max_size=max_size
            )
        self._loop = _LoopThread()
        try:
            self._aclient = self._loop.run(_open(url, creds, options))
        except BaseException:
            self._loop.stop()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._aclient.url

    @property
    def connected(self) -> bool:
        return self._aclient.connected

    def login(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
    ) -> None:
        self._loop.run(self._aclient.login(username, password, api_key=api_key, token=token))

    @overload
    def call(
        self,
        method: str,
        *params: Any,
        job: Literal[False] = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Any: ...

    @overload
    def call(
        self,
        method: str,
        *params: Any,
        job: Literal[True],
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> SyncJobHandle: ...

    def call(
        self,
        method: str,
        *params: Any,
        job: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Any:
        """As ``AsyncClient.call``; ``job=True`` gives a ``SyncJobHandle``."""
        if job:
            handle = self._loop.run(
                self._aclient.call(
                    method, *params, job=True, on_progress=on_progress, timeout=timeout
                )
            )
            return SyncJobHandle(handle, self._loop)
        return self._loop.run(
            self._aclient.call(method, *params, on_progress=on_progress, timeout=timeout)
        )

    def follow_job(
        self, job_id: int, *, on_progress: ProgressCallback | None = None
    ) -> SyncJobHandle:
        """As ``AsyncClient.follow_job``: a handle on a job this client did not start."""
        handle = self._loop.run(self._aclient.follow_job(job_id, on_progress=on_progress))
        return SyncJobHandle(handle, self._loop)

    def upload(
        self,
        method: str,
        params: Sequence[Any] | dict[str, Any],
        files: Sequence[FileSpec],
        *,
        on_progress: TransferCallback | None = None,
    ) -> SyncJobHandle:
        """As ``AsyncClient.upload``; ``handle.result()`` blocks until the job ends."""
        handle = self._loop.run(
            self._aclient.upload(method, params, files, on_progress=on_progress)
        )
        return SyncJobHandle(handle, self._loop)

    def download(
        self,
        method: str,
        args: Sequence[Any],
        filename: str,
        dest: str | os.PathLike[str],
        *,
        buffered: bool = False,
        on_progress: TransferCallback | None = None,
    ) -> Any:
        """As ``AsyncClient.download``: blocks until the file is saved and the job ended."""
        return self._loop.run(
            self._aclient.download(
                method, args, filename, dest, buffered=buffered, on_progress=on_progress
            )
        )

    def query_pages(
        self,
        method: str,
        filters: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[list[Any]]:
        """As ``AsyncClient.query_pages``: each page is fetched when the loop asks for it."""
        pages = self._aclient.query_pages(method, filters, options, page_size=page_size)
        return self._iterate(pages)

    def iter_jobs(
        self,
        filters: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Every job ``core.get_jobs(filters, options)`` matches, fetched a page at a time."""
        for page in self.query_pages("core.get_jobs", filters, options, page_size=page_size):
            yield from page

    def _iterate(self, pages: AsyncIterator[_T]) -> Iterator[_T]:
        while True:
            try:
                yield self._loop.run(_next(pages))
            except StopAsyncIteration:
                return

    def subscribe(
        self, name: str, callback: EventCallback, *, on_end: EndCallback | None = None
    ) -> str:
        """As ``AsyncClient.subscribe``; callbacks run in the client's thread."""
        return self._loop.run(self._aclient.subscribe(name, callback, on_end=on_end))

    def unsubscribe(self, sub_id: str) -> None:
        self._loop.run(self._aclient.unsubscribe(sub_id))

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._aclient.close())
        finally:
            self._loop.stop()


async def _next(pages: AsyncIterator[_T]) -> _T:
    return await anext(pages)


async def _open(url: str, creds: Credentials, options: ClientOptions) -> AsyncClient:
    client = AsyncClient(url, credentials=creds, options=options)
    return await client.open()
