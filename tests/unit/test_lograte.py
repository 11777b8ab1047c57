"""The rate-limited log: one line per interval, then a count of the ones held back."""

from __future__ import annotations

import logging

import pytest

from middlewared.lograte import RateLimitedLog


def test_one_line_per_interval_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.lograte")
    now = [0.0]
    limited = RateLimitedLog(logger, interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.lograte"):
        for i in range(50):
            now[0] = i / 10
            limited.warning("frame %d failed", i)
    assert [r.getMessage() for r in caplog.records] == ["frame 0 failed"]
    now[0] = 10.0  # the interval has passed
    with caplog.at_level(logging.WARNING, logger="test.lograte"):
        limited.error("frame %d failed", 50)
    assert caplog.records[-1].getMessage() == (
        "frame 50 failed (and 49 more like it since the last one logged)"
    )
    assert caplog.records[-1].levelno == logging.ERROR
