"""Local event listeners and the one server subscription per collection they share."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from middlewared.errors import MiddlewareError

log = logging.getLogger(__name__)

ALL = "*"

EventCallback = Callable[[dict[str, Any]], object]
EndCallback = Callable[[MiddlewareError | None], object]


@dataclass(frozen=True)
class Listener:
    """One ``subscribe()`` of the client's user (or of the client itself, ``internal``)."""

    name: str
    callback: EventCallback
    on_end: EndCallback | None = None
    internal: bool = False


class Subscriptions:
    """Listeners by local id; server subscription ids by collection, valid for one connection."""

    def __init__(self) -> None:
        self._listeners: dict[str, Listener] = {}
        self._server: dict[str, asyncio.Task[Any]] = {}
        self._ids = itertools.count(1)

    def add(self, listener: Listener) -> str:
        local_id = f"sub-{next(self._ids)}"
        self._listeners[local_id] = listener
        return local_id

    def remove(self, local_id: str) -> Listener | None:
        return self._listeners.pop(local_id, None)

    def has_listeners(self, name: str, *, internal: bool | None = None) -> bool:
        return any(
            lst.name == name and (internal is None or lst.internal == internal)
            for lst in self._listeners.values()
        )

    def user_names(self) -> set[str]:
        """Collections the user listens to: to subscribe again after a reconnection."""
        return {lst.name for lst in self._listeners.values() if not lst.internal}

    def dispatch(self, params: dict[str, Any]) -> None:
        """Hand one ``collection_update`` to every listener of its collection (and of ``*``)."""
        collection = params.get("collection")
        # The client's own listeners first: a job handle knows its id before user callbacks run.
        for lst in sorted(self._listeners.values(), key=lambda lst: not lst.internal):
            if lst.name == collection or lst.name == ALL:
                try:
                    lst.callback(params)
                except Exception:
                    log.exception("event callback for %s failed", lst.name)

    def drop_internal(self) -> None:
        """Forget the client's own listeners (their jobs died with the connection)."""
        for local_id, lst in list(self._listeners.items()):
            if lst.internal:
                del self._listeners[local_id]

    def end(self, name: str | None, error: MiddlewareError | None) -> None:
        """The server ended ``name`` (``None``: every subscription): tell and drop its listeners."""
        for local_id, lst in list(self._listeners.items()):
            if name is None or lst.name == name:
                del self._listeners[local_id]
                if lst.on_end is not None:
                    try:
                        lst.on_end(error)
                    except Exception:
                        log.exception("end callback for %s failed", lst.name)
        if name is None:
            self._server.clear()
        else:
            self._server.pop(name, None)

    # Server side, one subscription per collection name.

    async def ensure_server(
        self, name: str, subscribe: Callable[[str], Coroutine[Any, Any, Any]]
    ) -> Any:
        """The server subscription id of ``name``, subscribing once however many callers."""
        task = self._server.get(name)
        if task is None:
            task = asyncio.create_task(subscribe(name))
            self._server[name] = task
            task.add_done_callback(lambda t: self._forget_failed(name, t))
        return await asyncio.shield(task)

    def _forget_failed(self, name: str, task: asyncio.Task[Any]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._server.get(name) is task:
            del self._server[name]

    def pop_server(self, name: str) -> asyncio.Task[Any] | None:
        return self._server.pop(name, None)

    def reset_server(self) -> None:
        """The connection changed: every server subscription id is void."""
        self._server.clear()
