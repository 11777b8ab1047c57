"""The event loop every bench process runs: uvloop when installed (as middlewared picks),
else asyncio's own, so both sides of a measurement use the same implementation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    make: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return make


def name() -> str:
    return "uvloop" if factory() is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=factory()) as runner:
        return runner.run(main)
