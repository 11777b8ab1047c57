"""One sqlite3 connection confined to its own thread; each call is one hop there and back."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Concatenate, ParamSpec, TypeVar

from middlewared.errors import CallError

P = ParamSpec("P")
T = TypeVar("T")

_Call = tuple[asyncio.Future[Any], Callable[[sqlite3.Connection], Any]]


class ConnectionThread:
    """Runs functions on a connection in the one thread that opened it.

    A whole unit of work (a group commit: BEGIN, every statement, COMMIT) is one function,
    so it costs one thread round trip instead of one per statement. Calls run in order.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and open the connection there (its errors are raised here)."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(
            target=self._serve,
            args=(connect, loop, opened, self._stopped),
            name=self.name,
            daemon=True,
        )
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._thread = None  # it has stopped: nothing is left to close
            raise

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(connection, *args, **kwargs)`` in the connection's thread."""
        if self._thread is None:
            raise CallError(f"{self.name}: the connection is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((fut, lambda conn: fn(conn, *args, **kwargs)))
        return await fut

    async def close(self) -> None:
        """Let the calls already queued finish, then close the connection and the thread."""
        if self._thread is None or self._stopped is None:
            return
        self._thread = None
        self._calls.put(None)
        await self._stopped

    def _serve(
        self,
        connect: Callable[[], sqlite3.Connection],
        loop: asyncio.AbstractEventLoop,
        opened: asyncio.Future[None],
        stopped: asyncio.Future[None],
    ) -> None:
        try:
            conn = connect()
        except BaseException as e:
            loop.call_soon_threadsafe(_settle, opened, e, None)
            loop.call_soon_threadsafe(_settle, stopped, None, None)
            return
        loop.call_soon_threadsafe(_settle, opened, None, None)
        try:
            while (call := self._calls.get()) is not None:
                fut, fn = call
                try:
                    result = fn(conn)
                except BaseException as e:
                    loop.call_soon_threadsafe(_settle, fut, e, None)
                else:
                    loop.call_soon_threadsafe(_settle, fut, None, result)
        finally:
            conn.close()
            loop.call_soon_threadsafe(_settle, stopped, None, None)


def _settle(fut: asyncio.Future[Any], exc: BaseException | None, result: Any) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
