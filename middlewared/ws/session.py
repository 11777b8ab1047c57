"""One client connection: its state, limits, subscriptions and outgoing frames."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from middlewared.auth.credentials import Credentials, Identity
from middlewared.calls import JobQuota
from middlewared.errors import (
    CallError,
    InternalError,
    InvalidRequest,
    NotAuthenticated,
    PermissionDenied,
    TooManyCalls,
)
from middlewared.events.bus import Event, Subscription
from middlewared.jsonc import EncodeError
from middlewared.lograte import RateLimitedLog
from middlewared.rpc.errors import error_object
from middlewared.rpc.protocol import (
    BadMessage,
    Frame,
    Request,
    encode,
    error_reply,
    parse_frame,
    result_reply,
)
from middlewared.ws.outbox import Outbox

if TYPE_CHECKING:
    from middlewared.app import Middleware

log = logging.getLogger(__name__)
_unexpected = RateLimitedLog(log)
_unencodable = RateLimitedLog(log)

CLOSE_UNSUPPORTED = 1003
CLOSE_TOO_BIG = 1009
# Documented: the reader fell so far behind that the server let it go.
CLOSE_TOO_SLOW = 4008


class Transport(Protocol):
    async def send(self, frame: str) -> None: ...

    async def send_many(self, frames: list[str]) -> None:
        """Several frames, in order, as one write where the transport can."""

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None:
        """Drop the connection at once, discarding what is not sent yet."""


class State(enum.Enum):
    CONNECTED = "connected"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


@dataclass
class Options:
    legacy_jobs: bool = False
    private_methods: bool = False
    py_exceptions: bool = False
    # Our extension: admins may ask for tracebacks in error data.
    tracebacks: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "legacy_jobs": self.legacy_jobs,
            "private_methods": self.private_methods,
            "py_exceptions": self.py_exceptions,
            "tracebacks": self.tracebacks,
        }


class Session:
    def __init__(self, app: Middleware, transport: Transport, remote: str) -> None:
        self.app = app
        self.transport = transport
        self.remote = remote
        self.state = State.CONNECTED
        # Who logged in (ids), and what that identity may do now: re-resolved whenever a
        # user or key changes (``refresh``), so a revocation reaches the next call and event.
        self.identity: Identity | None = None
        self.credentials: Credentials | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.options = Options()
        self.subscriptions: dict[str, Subscription] = {}
        self.inflight = 0
        self.outbox = Outbox()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._letting_go: asyncio.Task[None] | None = None
        # Frames being sent (by the writer, or a reply by its call's task).
        self._sending = 0
        self.limits = app.config.limits
        self.quota = JobQuota(self.limits.max_live_jobs_per_connection)
        # Set by the HTTP layer: lifts the login deadline and caps of a connection not
        # logged in yet.
        self.on_login: Callable[[], None] | None = None
        # Set by the HTTP layer: the connection came over TLS (SCRAM channel binding).
        self.tls = False
        # A SCRAM exchange under way (at most one a connection: a new one replaces it).
        self.scram: Any = None
        # A password login waiting for its two-factor code (auth.login_ex_continue).
        self.otp: Any = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.app.sessions.add(self)
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.remote}")

    async def close(self) -> None:
        """The connection is gone: drop subscriptions, cancel calls, stop the writer."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.app.sessions.discard(self)
        if self._expiry is not None:
            self._expiry.cancel()
        for sub in self.subscriptions.values():
            self.app.bus.unsubscribe(sub)
        self.subscriptions.clear()
        for task in list(self._tasks):
            task.cancel()
        await self._stop_writer()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._letting_go is not None:
            self._letting_go.cancel()
            await asyncio.gather(self._letting_go, return_exceptions=True)

    async def _stop_writer(self) -> None:
        self.outbox.close()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    @property
    def max_frame(self) -> int:
        if self.credentials is None:
            return self.limits.max_frame_unauthenticated
        return self.limits.max_frame

    # -- incoming -----------------------------------------------------------------------
    async def on_text(self, data: str) -> None:
        """Never raises into the transport: what goes wrong unexpectedly with one frame is
        logged (rate-limited) and answered with -32603; the connection keeps serving."""
        limit = self.max_frame
        try:
            # The limit is in bytes; encode only when characters alone cannot decide.
            if len(data) > limit or (len(data) * 4 > limit and len(data.encode()) > limit):
                await self._close(CLOSE_TOO_BIG, "Frame too large")
                return
            self._accept(parse_frame(data))
        except Exception as e:
            _unexpected.error("session %s: a frame failed: %r", self.remote, e, exc_info=True)
            err = InternalError("The server failed to handle this frame (logged)")
            self.outbox.put_frame(encode(error_reply(None, err.to_rpc_error())))
        # Replies the client does not read (errors included) must not pile up: stop reading
        # its requests (TCP pushes back on it) until the writer has taken them.
        await self.outbox.wait_room(self.limits.max_inflight)

    def _accept(self, frame: Frame) -> None:
        """Start the calls of a frame, or queue the error replies it gets at once."""
        if frame.batch:
            if len(frame.messages) > self.limits.max_batch:
                too_big = InvalidRequest(
                    f"Batch of {len(frame.messages)} calls: at most {self.limits.max_batch} "
                    "are taken in one frame"
                )
                self.outbox.put_frame(encode(error_reply(None, too_big.to_rpc_error())))
                return
            self._spawn(self._batch(frame.messages))
            return
        message = frame.messages[0]
        if isinstance(message, BadMessage):
            self.outbox.put_frame(encode(error_reply(message.id, message.error.to_rpc_error())))
            return
        if self.inflight >= self.limits.max_inflight:
            if not message.notification:
                err = TooManyCalls("Too many calls in flight on this connection")
                self.outbox.put_frame(encode(error_reply(message.id, err.to_rpc_error())))
            return
        self.inflight += 1
        self._spawn(self._single(message))

    async def on_binary(self) -> None:
        await self._close(CLOSE_UNSUPPORTED, "Binary frames are not supported")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _single(self, request: Request) -> None:
        try:
            reply = await self._handle(request)
        finally:
            self.inflight -= 1
        if reply is not None and self.state is not State.CLOSED:
            await self._reply(safe_encode(reply))

    async def _reply(self, frame: str) -> None:
        """Send a reply from the call's own task when nothing is being sent or waits before
        it (no hop to the writer task: a reply to a lone call is the common case); else queue
        it, in order and counted against the outbox's bound."""
        if self._sending or len(self.outbox) or self.outbox.closed:
            self.outbox.put_frame(frame)
            return
        self._sending += 1
        try:
            await self.transport.send(frame)
        except (ConnectionError, RuntimeError) as e:
            log.debug("session %s: send failed: %s", self.remote, e)
        finally:
            self._sending -= 1

    async def _batch(self, messages: list[Request | BadMessage]) -> None:
        """Members run concurrently; one array of replies, or nothing if all were notices."""

        async def member(m: Request | BadMessage) -> dict[str, Any] | None:
            if isinstance(m, BadMessage):
                return error_reply(m.id, m.error.to_rpc_error())
            if self.inflight >= self.limits.max_inflight:
                err = TooManyCalls("Too many calls in flight on this connection")
                return None if m.notification else error_reply(m.id, err.to_rpc_error())
            self.inflight += 1
            try:
                return await self._handle(m)
            finally:
                self.inflight -= 1

        replies = await asyncio.gather(*(member(m) for m in messages))
        out = [safe_encode(r) for r in replies if r is not None]
        if out and self.state is not State.CLOSED:
            await self._reply(f"[{','.join(out)}]")

    async def _handle(self, request: Request) -> dict[str, Any] | None:
        try:
            result = await self.app.calls.call(
                request.method,
                request.params,
                self.credentials,
                session=self,
                message_id=request.id,
                legacy_jobs=self.options.legacy_jobs,
                private=self.options.private_methods,
                quota=self.quota,
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if request.notification:
                return None
            admin = self.credentials is not None and self.credentials.admin
            error = error_object(exc, request.method, admin and self.options.tracebacks)
            return error_reply(request.id, error)
        if request.notification:
            return None
        return result_reply(request.id, result)

    # -- outgoing -----------------------------------------------------------------------
    def may_see(self, event: Event) -> bool:
        """Decided per event from the credentials this session has now."""
        creds = self.credentials
        if creds is not None and creds.full_admin:
            return True  # the common case, without a call
        return self.app.visibility.event(creds, event)

    def push_event(self, event: Event) -> None:
        if self.state is State.CLOSED or self.outbox.closed:
            return
        self.outbox.put_event(event)
        if len(self.outbox) > self.limits.max_pending_events:
            log.warning(
                "session %s: %d events unread, disconnecting (close %d)",
                self.remote,
                len(self.outbox),
                CLOSE_TOO_SLOW,
            )
            self._let_go()

    def _let_go(self) -> None:
        """Free at once what the slow reader holds, then close the connection with 4008.

        The close frame goes behind what the socket already holds; a reader that does not
        take it within the grace period has its connection reset.
        """
        self.outbox.close()
        self._letting_go = asyncio.create_task(self._close_too_slow())

    async def _close_too_slow(self) -> None:
        # Not while the bus is still publishing the event that went past the limit.
        for sub_id in list(self.subscriptions):
            self.unsubscribe(sub_id)
        # The writer is not cancelled: it may be waiting for the socket to drain, and
        # aiohttp shares that wait with the close (cancelling one would cancel both). The
        # outbox is closed, so it stops after the frame it holds.
        await self.close_within(CLOSE_TOO_SLOW, "Reader too slow")

    async def close_within(self, code: int, reason: str) -> None:
        """Close with ``code``; a peer that does not take the close within the grace period
        (--slow-reader-grace) has its connection reset."""
        closed = False
        try:
            await asyncio.wait_for(
                self.transport.close(code, reason), self.limits.slow_reader_grace_seconds
            )
            closed = True
        except (TimeoutError, ConnectionError, RuntimeError) as e:
            log.info("session %s: the %d close was not taken (%r)", self.remote, code, e)
        finally:
            # Also when cancelled (the session closing, which cancels the writer that shares
            # aiohttp's drain wait with this close). A graceful close would wait for the reader.
            if not closed:
                self.transport.abort()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self.outbox.wait()
                admin = self.credentials is not None and self.credentials.admin
                # While it holds frames taken from the outbox, replies queue behind them.
                self._sending += 1
                try:
                    frames = _frames(self.outbox.pop_all(), admin)
                    if frames:
                        await self.transport.send_many(frames)
                except (ConnectionError, RuntimeError):
                    raise
                except Exception as e:
                    # Those frames are lost; the connection and its subscriptions are not.
                    _unexpected.error("session %s: frames not sent: %r", self.remote, e)
                finally:
                    self._sending -= 1
                if self.outbox.closed:
                    return
        except (ConnectionError, RuntimeError) as e:
            log.debug("session %s: send failed: %s", self.remote, e)
        finally:
            # Nobody will send what is put from now on: drop it, and never leave the reader
            # waiting for room that will not come.
            self.outbox.close()

    async def _close(self, code: int, reason: str) -> None:
        log.info("session %s: closing (%d %s)", self.remote, code, reason)
        await self.transport.close(code, reason)

    # -- what core and auth methods change ----------------------------------------------
    def login(self, identity: Identity) -> Credentials | None:
        """Log in as ``identity``; None (and still logged out) when it does not resolve."""
        creds = self.app.directory.resolve(identity)
        if creds is None:
            return None
        # Subscriptions made as another identity must not outlive it.
        self._drop_subscriptions(None)
        self.identity = identity
        self.credentials = creds
        self.state = State.AUTHENTICATED
        if self.on_login is not None:
            self.on_login()
        self._watch_expiry()
        return creds

    def logout(self) -> None:
        self.identity = None
        self.credentials = None
        self.state = State.CONNECTED
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._drop_subscriptions(None)

    def refresh(self) -> None:
        """A user or key changed: take the identity's rights as they are now; a revoked
        identity is logged out, its subscriptions ended with a notice saying why."""
        if self.identity is None or self.state is State.CLOSED:
            return
        creds = self.app.directory.resolve(self.identity)
        if creds is None:
            log.info("session %s: credentials revoked; logged out", self.remote)
            self.identity = None
            self.credentials = None
            self.state = State.CONNECTED
            self._drop_subscriptions("Credentials revoked: log in again")
            return
        self.credentials = creds
        for sub_id, sub in list(self.subscriptions.items()):
            if not self.app.collections.may_subscribe(sub.collection, creds):
                self._end_subscription(sub_id, "No longer permitted")

    def _watch_expiry(self) -> None:
        """An API key that expires ends the sessions it logged in when it does."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        identity = self.identity
        if identity is None or identity.api_key_id is None:
            return
        key = self.app.directory.keys.get(identity.api_key_id)
        if key is None or key.expires is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, key.expires / 1000 - time.time())
        self._expiry = loop.call_later(delay + 0.001, self.refresh)

    def _drop_subscriptions(self, reason: str | None) -> None:
        for sub_id in list(self.subscriptions):
            if reason is None:
                self.unsubscribe(sub_id)
            else:
                self._end_subscription(sub_id, reason)

    def _end_subscription(self, sub_id: str, reason: str) -> None:
        """The server ends a subscription: TrueNAS's ``notify_unsubscribed`` says so."""
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return
        self.unsubscribe(sub_id)
        err = PermissionDenied(reason)
        self.outbox.put_frame(
            encode(
                {
                    "jsonrpc": "2.0",
                    "method": "notify_unsubscribed",
                    "params": {"collection": sub.collection, "error": err.error_data()},
                }
            )
        )

    def subscribe(self, name: str) -> str:
        creds = self.credentials
        if creds is None:
            raise NotAuthenticated()
        if not self.app.collections.exists(name):
            raise CallError(f"No such event source {name!r}", errno.ENOENT)
        if not self.app.collections.may_subscribe(name, creds):
            raise PermissionDenied(f"Not permitted to subscribe to {name}")
        if len(self.subscriptions) >= self.limits.max_subscriptions:
            raise CallError(
                f"This connection has {len(self.subscriptions)} subscriptions, the most it may "
                "hold: unsubscribe first",
                errno.EBUSY,
            )
        sub_id = secrets.token_hex(8)
        sub = Subscription(sub_id, name, self)
        self.subscriptions[sub_id] = sub
        self.app.bus.subscribe(sub)
        return sub_id

    def unsubscribe(self, sub_id: str) -> None:
        sub = self.subscriptions.pop(sub_id, None)
        if sub is not None:
            self.app.bus.unsubscribe(sub)

    def set_options(self, options: dict[str, Any]) -> dict[str, Any]:
        for key in ("legacy_jobs", "private_methods", "py_exceptions", "tracebacks"):
            if key in options:
                setattr(self.options, key, bool(options[key]))
        return self.options.as_dict()


def safe_encode(reply: dict[str, Any]) -> str:
    """The encoded reply, or an internal error in its place when its result has no JSON
    form (a non-JSON type, NaN, nesting past the limit)."""
    try:
        return encode(reply)
    except EncodeError as e:
        _unencodable.warning("reply to %r cannot be encoded: %s", reply.get("id"), e)
        err = InternalError(f"The result cannot be encoded as JSON: {e}")
        return encode(error_reply(reply.get("id"), err.to_rpc_error()))


def _frames(items: list[str | Event], admin: bool) -> list[str]:
    """What the writer sends: replies as they are, events encoded for this reader (an event
    that cannot be encoded is left out)."""
    frames = []
    for item in items:
        frame = item if isinstance(item, str) else item.frame(admin)
        if frame is not None:
            frames.append(frame)
    return frames
