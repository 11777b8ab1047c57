"""Keeps one logged-in connection open, reconnecting with backoff after a drop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from middlewared.errors import CallError, MiddlewareError
from middlewared_client.connection import Connection, NotificationHandler
from middlewared_client.errors import (
    CallTimeout,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    LoginFailed,
    NotConnected,
)
from middlewared_client.options import ClientOptions, Credentials

log = logging.getLogger(__name__)

# Failures worth another attempt; anything else (a refused login) ends the reconnection.
TRANSIENT = (ConnectFailed, ConnectionLost, NotConnected, CallTimeout, TimeoutError)

OpenHook = Callable[[Connection], Coroutine[Any, Any, None]]
LostHook = Callable[[], None]
GiveUpHook = Callable[[MiddlewareError], None]


async def login(conn: Connection, creds: Credentials, reply_timeout: float | None) -> None:
    """Log in on ``conn``; ``LoginFailed`` when the server says no (or refuses to try)."""
    if creds.password is not None and creds.otp_token is None and creds.otp_prompt is not None:
        await _login_asking_code(conn, creds, reply_timeout)
        return
    method, params = creds.login_call()
    try:
        ok = await conn.call(method, params, reply_timeout)
    except CallError as exc:
        raise LoginFailed(f"Login failed: {exc.reason}", exc.errno) from exc
    if ok is not True:
        raise LoginFailed()


async def _login_asking_code(
    conn: Connection, creds: Credentials, reply_timeout: float | None
) -> None:
    """TrueNAS's two-step password login: the code is asked for only when the server answers
    OTP_REQUIRED."""
    assert creds.otp_prompt is not None
    try:
        answer = await conn.call(
            "auth.login_ex",
            [
                {
                    "mechanism": "PASSWORD_PLAIN",
                    "username": creds.username,
                    "password": creds.password,
                }
            ],
            reply_timeout,
        )
        if answer.get("response_type") == "OTP_REQUIRED":
            code = await asyncio.to_thread(creds.otp_prompt)
            answer = await conn.call(
                "auth.login_ex_continue",
                [{"mechanism": "OTP_TOKEN", "otp_token": code.strip()}],
                reply_timeout,
            )
    except CallError as exc:
        raise LoginFailed(f"Login failed: {exc.reason}", exc.errno) from exc
    if answer.get("response_type") != "SUCCESS":
        raise LoginFailed()


class Link:
    """The client's current ``Connection``; hooks tell the client when it changes."""

    def __init__(
        self,
        url: str,
        options: ClientOptions,
        credentials: Credentials,
        on_notification: NotificationHandler,
        on_open: OpenHook,
        on_lost: LostHook,
        on_give_up: GiveUpHook,
    ) -> None:
        self.url = url
        self.options = options
        self.credentials = credentials
        self._on_notification = on_notification
        self._on_open = on_open
        self._on_lost = on_lost
        self._on_give_up = on_give_up
        self._conn: Connection | None = None
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: MiddlewareError | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self._fatal is None and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    async def open(self) -> None:
        """The first connection: failures are raised, not retried."""
        if self._closed:
            raise ClientClosed()
        await self._open_once()
        self._supervisor = asyncio.create_task(self._supervise(), name="middlewared-client")

    async def current(self) -> Connection:
        """The open connection, waiting (up to ``connect_timeout``) while reconnecting."""
        if self._conn is None and not self._closed:
            raise NotConnected("Not connected: open() was not called")
        conn = self._conn
        if conn is not None and conn.closed.is_set() and self._fatal is None and not self._closed:
            self._connected.clear()  # dropped, and the supervisor has not run yet
        if not self._connected.is_set():
            try:
                async with asyncio.timeout(self.options.connect_timeout):
                    await self._connected.wait()
            except TimeoutError:
                raise NotConnected("Not connected (reconnecting)") from None
        if self._closed:
            raise ClientClosed()
        if self._fatal is not None:
            raise NotConnected(f"Not connected: {self._fatal.reason}")
        assert self._conn is not None
        return self._conn

    def current_nowait(self) -> Connection | None:
        return self._conn if self.connected else None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        if self._conn is not None:
            await self._conn.close(ClientClosed)
        self._connected.set()  # wake callers waiting for a connection: they see it closed

    async def _open_once(self) -> None:
        conn = await Connection.open(self.url, self.options, self._on_notification)
        try:
            if not self.credentials.empty:
                await login(conn, self.credentials, self.options.call_timeout)
            self._conn = conn
            await self._on_open(conn)
        except BaseException:
            await conn.close()
            raise
        self._connected.set()

    async def _supervise(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            await conn.closed.wait()
            if self._closed:
                return
            self._connected.clear()
            self._on_lost()
            try:
                if not self.options.reconnect:
                    raise ConnectionLost()
                await self._reconnect()
            except MiddlewareError as exc:
                log.warning("connection to %s lost for good: %s", self.url, exc)
                self._fatal = exc
                self._connected.set()
                self._on_give_up(exc)
                return

    async def _reconnect(self) -> None:
        last: BaseException | None = None
        for delay in self.options.reconnect_policy.delays():
            await asyncio.sleep(delay)
            try:
                await self._open_once()
            except TRANSIENT as exc:
                log.info("reconnecting to %s: %s", self.url, exc)
                last = exc
                continue
            log.info("reconnected to %s", self.url)
            return
        raise NotConnected(f"Gave up reconnecting: {last}")
