"""One in-process event bus that jobs, collections and plugins publish to; WebSocket
subscriptions and first-class listeners consume it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from middlewared import jsonc
from middlewared.lograte import RateLimitedLog

if TYPE_CHECKING:
    from middlewared.events.listeners import Listener

log = logging.getLogger(__name__)
_unencodable = RateLimitedLog(log)

ADDED = "added"
CHANGED = "changed"
REMOVED = "removed"
ALL = "*"


@dataclass(slots=True)
class Event:
    """One collection change.

    Who may see it (auth/visibility.py): every logged-in identity when ``everyone``; full
    administrators; whoever's allow-list grants ``granted`` when it is set (an object of no
    one's, such as a file in a root); otherwise its owner (a user id) when the owner may see
    ``method`` (a job's method: docs/security.md). An event with no owner, no grant and not
    for everyone is for full administrators only.
    """

    collection: str
    msg: str
    id: Any
    fields: dict[str, Any] | None = None
    owner: int | None = None
    # Fields only admins see (a job's formatted exception), merged over ``fields``.
    admin_fields: dict[str, Any] | None = None
    # The JSON of the fields as admins see them, when the publisher already has it (a job's
    # stored record): frames embed it instead of encoding the fields again.
    encoded_fields: str | None = None
    method: str | None = None
    everyone: bool = False
    # The API key the object (a job) was made with: restricted keys see only their own.
    owner_key: int | None = None
    # The job whose work caused this event (a job's own events; a file a job wrote), so that
    # a trigger never fires on what the jobs it started did.
    cause: int | None = None
    # The method an allow-list must grant to see this event (when it has no owner).
    granted: str | None = None
    _frames: dict[bool, str | None] = field(default_factory=dict)

    def params(self, admin: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"msg": self.msg, "collection": self.collection, "id": self.id}
        if self.msg != REMOVED:
            fields = self.fields or {}
            if admin and self.admin_fields:
                fields = {**fields, **self.admin_fields}
            params["fields"] = fields
        return params

    def frame(self, admin: bool) -> str | None:
        """The encoded notification, built once per audience however many subscribers.

        None when a field has no JSON form (a plugin's progress extra, say): that frame is
        dropped, with a warning, and the subscriber goes on with the next one.
        """
        admin = admin and bool(self.admin_fields)
        cached = self._frames.get(admin, "")
        if cached != "":  # built before (None: it could not be)
            return cached
        try:
            frame: str | None = self._encode(admin)
        except jsonc.EncodeError as e:
            _unencodable.warning(
                "%s %s %r: event dropped, it cannot be encoded as JSON: %s",
                self.collection,
                self.msg,
                self.id,
                e,
            )
            frame = None
        self._frames[admin] = frame
        return frame

    def _encode(self, admin: bool) -> str:
        if self.encoded_fields is None or self.msg == REMOVED or (self.admin_fields and not admin):
            return jsonc.dumps(
                {"jsonrpc": "2.0", "method": "collection_update", "params": self.params(admin)}
            )
        head = jsonc.dumps(
            {
                "jsonrpc": "2.0",
                "method": "collection_update",
                "params": {"msg": self.msg, "collection": self.collection, "id": self.id},
            }
        )
        # The head ends with the two closing braces of params and of the frame.
        return f'{head[:-2]},"fields":{self.encoded_fields}}}}}'

    def merged_after(self, older: Event) -> Event | None:
        """What a reader that has not seen ``older`` yet should get instead of both
        (None: neither, an object added and removed before it was read)."""
        if older.msg == ADDED and self.msg == REMOVED:
            return None
        if older.msg == ADDED and self.msg == CHANGED:
            return Event(
                self.collection,
                ADDED,
                self.id,
                self.fields,
                self.owner,
                self.admin_fields,
                self.encoded_fields,
                self.method,
                self.everyone,
                self.owner_key,
                self.cause,
                self.granted,
            )
        return self


class Sink(Protocol):
    """Where a subscription's events go (a WebSocket session), and who it is now."""

    def push_event(self, event: Event) -> None: ...

    def may_see(self, event: Event) -> bool:
        """Decided at each event from the sink's current credentials (revocation)."""


@dataclass(eq=False)
class Subscription:
    id: str
    collection: str
    sink: Sink


class EventBus:
    """Fan-out of published events to subscriptions and in-process listeners."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self.listeners: list[Listener] = []

    def subscribe(self, sub: Subscription) -> None:
        self._subs.setdefault(sub.collection, set()).add(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.collection)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.collection]

    def add_listener(self, listener: Listener) -> None:
        """Deliver the events of ``listener.collections`` (``*``: all) to it."""
        self.listeners.append(listener)
        for collection in listener.collections:
            self._listeners.setdefault(collection, []).append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
        for collection in listener.collections:
            found = self._listeners.get(collection, [])
            if listener in found:
                found.remove(listener)
            if not found:
                self._listeners.pop(collection, None)

    def has_consumers(self, collection: str) -> bool:
        """Whether publishing on ``collection`` reaches anyone (a subscription or a
        listener): publishers skip building events nobody takes."""
        return bool(
            self._subs.get(collection)
            or self._subs.get(ALL)
            or self._listeners.get(collection)
            or self._listeners.get(ALL)
        )

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def publish(self, event: Event) -> None:
        for key in (event.collection, ALL):
            for sub in self._subs.get(key, ()):
                sink = sub.sink
                if sink.may_see(event):
                    sink.push_event(event)
            for listener in self._listeners.get(key, ()):
                listener.push(event)
