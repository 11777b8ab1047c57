"""Persistence: a small store contract and its backends, chosen by URL."""

from __future__ import annotations

import errno
import importlib
from pathlib import Path
from urllib.parse import urlsplit

from middlewared.errors import CallError
from middlewared.store.base import Op, Store

__all__ = ["Op", "Store", "open_store"]

# scheme -> (module, class, the extra that installs its driver or None)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("middlewared.store.sqlite", "SQLiteStore", None),
    "memory": ("middlewared.store.memory", "MemoryStore", None),
}


def open_store(url: str, durability: str = "full") -> Store:
    """The store a URL names: ``sqlite:///absolute/path.db`` or ``memory://``.

    Backends are imported when chosen, so an optional driver that is missing is reported
    by name (with the extra that installs it) only to those who ask for that backend.
    """
    scheme = urlsplit(url).scheme
    found = BACKENDS.get(scheme)
    if found is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise CallError(f"Unknown store {url!r}: use one of {known}", errno.EINVAL)
    module_name, class_name, extra = found
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = (
            f" (install the {extra!r} extra: pip install 'middlewared[{extra}]')" if extra else ""
        )
        raise CallError(f"The {scheme} store needs {e.name or e}{hint}", errno.ENOPKG) from e
    cls = getattr(module, class_name)
    if scheme == "sqlite":
        path = url.removeprefix("sqlite://")
        if not path.startswith("/"):
            raise CallError(f"{url!r}: give an absolute path (sqlite:///path/to.db)", errno.EINVAL)
        store: Store = cls(Path(path), durability)
        return store
    memory: Store = cls()
    return memory
