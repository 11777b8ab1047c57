"""The Notifiers service on the memory store with a real webhook receiver: the background
path's bounds and shutdown, and the pieces a notification is made of."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from middlewared.config import NotifyLimits
from middlewared.errors import Busy
from middlewared.notify import Notifiers
from middlewared.notify.deliver import log_tail, mail_body, sign
from middlewared.notify.notifier import safe_url, url_problem
from middlewared.store import open_store
from tests.sinks import webhook_receiver

SECRET = "0123456789abcdef-secret"
JOB = {"id": 42, "method": "t.m", "state": "FAILED", "error": "boom"}


@pytest.fixture
async def notifiers() -> AsyncIterator[Notifiers]:
    store = open_store("memory://")
    await store.open()
    limits = NotifyLimits(max_pending=1, max_notifiers=2, max_log_bytes=64)
    service = Notifiers(store, lambda: {}, limits)
    yield service
    await service.close(0)
    await store.close()


async def test_background_notifications_are_bounded_and_dropped_at_shutdown(
    notifiers: Notifiers, caplog: pytest.LogCaptureFixture
) -> None:
    async with webhook_receiver(SECRET) as hook:
        hook.hold = asyncio.Event()
        await notifiers.book.create(
            {"name": "h", "kind": "webhook", "url": hook.url, "secret": SECRET}
        )
        args: dict[str, Any] = {"job": JOB, "counter": 1, "subject_name": "n", "log_text": ""}
        assert notifiers.notify_soon(["h"], **args) is True
        await hook.next_request()  # the first is being delivered (held by the receiver)
        with caplog.at_level(logging.WARNING, "middlewared.notify"):
            assert notifiers.notify_soon(["h"], **args) is False
            assert "dropped" in caplog.text
            assert notifiers.pending == 1
            await notifiers.close(0)
        assert notifiers.pending == 0
        assert "1 notifications dropped at shutdown" in caplog.text
        hook.hold.set()


async def test_the_book_bounds_the_notifiers(notifiers: Notifiers) -> None:
    for name in ("a", "b"):
        await notifiers.book.create({"name": name, "kind": "mail", "to": ["x@example.com"]})
    with pytest.raises(Busy, match="--max-notifiers"):
        await notifiers.book.create({"name": "c", "kind": "mail", "to": ["x@example.com"]})


async def test_mail_without_mail_settings_is_logged(
    notifiers: Notifiers, caplog: pytest.LogCaptureFixture
) -> None:
    await notifiers.book.create({"name": "m", "kind": "mail", "to": ["x@example.com"]})
    with caplog.at_level(logging.WARNING, "middlewared.notify"):
        await notifiers.notify(["m"], job=JOB, counter=3, subject_name="s", log_text="x")
    assert "notifier m (mail): job 42 not delivered" in caplog.text
    assert "Mail is not configured" in caplog.text


async def test_read_log_keeps_the_tail(notifiers: Notifiers, tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    text = await notifiers.read_log(log)
    assert len(text.encode()) <= 64 and text.endswith("line 99\n")
    assert text.startswith("[") and "earlier bytes of the log left out" in text
    assert await notifiers.read_log(tmp_path / "missing.log") == ""
    assert await notifiers.read_log(None) == ""


def test_log_tail_says_what_it_left_out() -> None:
    assert log_tail(b"short", 64) == "short"
    data = b"x" * 1000
    text = log_tail(data, 100)
    assert len(text.encode()) <= 100
    left_out = int(text[1:].split(" ")[0])
    assert left_out + text.count("x") == 1000
    assert mail_body(JOB, "", 100) == "Job #42 t.m ended FAILED.\nError: boom\n"


def test_the_signature_is_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"id":1}'
    assert sign(SECRET, body) == hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_urls_are_checked_and_logged_without_their_path() -> None:
    assert url_problem("https://h.example:8443/x?token=t") is None
    for bad in (None, "", "ftp://h/", "http:///x", "http://h:99999/", "http://h/a b"):
        assert url_problem(bad) is not None, bad
    assert safe_url("https://u:p@h.example:8443/x?token=t") == "https://h.example:8443"
