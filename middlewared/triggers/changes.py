"""The last value seen of watched fields of watched objects, for @event rules with ``!=``
("this field changed"), bounded so memory stays flat however many objects go by."""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

import orjson

from middlewared.query.filters import MISSING, resolve

# About 200 bytes per kept value (key, 16-byte digest, LRU links): some 4 MB.
DEFAULT_MAX_VALUES = 20_000

Path = tuple[str, ...]
_Key = tuple[str, Hashable, Path]


def fingerprint(value: Any) -> bytes:
    """A fixed-size digest of a JSON value: 1 and true differ, key order does not matter."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # not JSON (a plugin's odd field): its repr still tells values apart
        text = repr(value).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


class ChangeTracker:
    """Per (collection, object id, field path), the fingerprint of the last value seen.

    Only fields some rule watches are kept, and at most ``max_values`` of them, the least
    recently updated dropped first. An object whose value was dropped (or never seen: it
    existed before the server started, or before the rule) has no previous value, so its
    next update does not count as a change; the update after it does.
    """

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        if max_values < 1:
            raise ValueError("max_values must be at least 1")
        self.max_values = max_values
        self._values: OrderedDict[_Key, bytes] = OrderedDict()
        # collection -> watched paths, each counted once per rule that watches it
        self._watched: dict[str, Counter[Path]] = {}

    def __len__(self) -> int:
        return len(self._values)

    def watches(self, collection: str) -> bool:
        return collection in self._watched

    def watch(self, collection: str, path: Path) -> None:
        self._watched.setdefault(collection, Counter())[path] += 1

    def unwatch(self, collection: str, path: Path) -> None:
        paths = self._watched.get(collection)
        if paths is None or paths[path] == 0:
            return
        paths[path] -= 1
        if paths[path] > 0:
            return
        del paths[path]
        if not paths:
            del self._watched[collection]
        # Rare (a trigger deleted): drop what no rule needs, so it cannot go stale.
        stale = [k for k in self._values if k[0] == collection and k[2] == path]
        for key in stale:
            del self._values[key]

    def update(
        self, collection: str, object_id: Hashable, fields: Mapping[str, Any] | None
    ) -> set[Path]:
        """Record an ADDED or CHANGED object's watched fields; return the paths whose value
        differs from a previous value known for it. A field absent from ``fields`` is left
        as it was (a partial update says nothing about it)."""
        changed: set[Path] = set()
        for path in self._watched.get(collection, ()):
            value = resolve(fields or {}, path)
            if value is MISSING:
                continue
            key = (collection, object_id, path)
            new = fingerprint(value)
            old = self._values.pop(key, None)
            if old is not None and old != new:
                changed.add(path)
            self._values[key] = new
        while len(self._values) > self.max_values:
            self._values.popitem(last=False)
        return changed

    def forget(self, collection: str, object_id: Hashable) -> None:
        """A REMOVED object: its values go (a later object with the same id starts afresh)."""
        for path in self._watched.get(collection, ()):
            self._values.pop((collection, object_id, path), None)
