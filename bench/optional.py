"""Optional packages (the ``bench`` extra): imported by name, so the suite still type-checks
and runs its own contenders where they are not installed."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

EXTRA_HINT = "pip install -e '.[bench]'"


def load(name: str) -> Any | None:
    """The module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def missing(*names: str) -> str | None:
    """Why a contender cannot run: the first package that is not installed, else None."""
    for n in names:
        if importlib.util.find_spec(n) is None:
            return f"{n} is not installed ({EXTRA_HINT})"
    return None
