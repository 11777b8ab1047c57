"""The scenarios, by name, in the order they run; each module has ``run(ctx) -> Result``."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from bench.context import Context
from bench.model import Result

NAMES = (
    "rpc",
    "jobs",
    "fanout",
    "files",
    "idle",
    "store",
    "commands",
    "output",
    "triggers",
    "hooks",
    "thumbnails",
    "archives",
    "thumbload",
    "mail",
)


def runner(name: str) -> Callable[[Context], Result]:
    module = importlib.import_module(f"bench.scenarios.{name}")
    run: Callable[[Context], Result] = module.run
    return run
