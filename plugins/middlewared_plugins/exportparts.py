"""data.export's pure parts: its options' schema and bounds, how entries are packed into
parts no larger than ``parts_size``, and the secrets rule applied to what is exported."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

MIN_PARTS_SIZE = 64 * KIB
MAX_PARTS_SIZE = 4 * GIB
DEFAULT_PARTS_SIZE = 1 * GIB
MIN_MAX_AGE = 1.0
MAX_MAX_AGE = 30 * 24 * 3600.0
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
# The most one export may hold (files and data, before compression).
MAX_TOTAL_BYTES = 100 * GIB
MAX_PARTS = 10_000
# Exports kept per user: a newer one removes the oldest past this.
MAX_EXPORTS_PER_USER = 5

# Collection -> whether only administrators export it (the others: what the caller may see).
COLLECTIONS: dict[str, bool] = {
    "jobs": False,
    "users": False,
    "triggers": False,
    "commands": True,
    "settings": True,
}

OPTIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "parts_size": {
            "type": "integer",
            "minimum": MIN_PARTS_SIZE,
            "maximum": MAX_PARTS_SIZE,
            "description": "the most bytes a part may have (a single larger file aside, in a "
            f"part of its own); default {DEFAULT_PARTS_SIZE}",
        },
        "max_age": {
            "type": "number",
            "minimum": MIN_MAX_AGE,
            "maximum": MAX_MAX_AGE,
            "description": "seconds the parts stay downloadable, then removed with their "
            f"tokens; default {DEFAULT_MAX_AGE:g}",
        },
        "with_collections": {
            "type": ["array", "null"],
            "items": {"enum": sorted(COLLECTIONS)},
            "uniqueItems": True,
            "description": "only these collections (empty or null: all the caller may read)",
        },
        "without_files": {
            "type": "boolean",
            "description": "leave the files under the roots out (administrators only export files)",
        },
    },
    "additionalProperties": False,
}

# Bytes a zip spends on one entry besides its data, at most: local header (30) and central
# directory record (46), ZIP64 extra fields (20 and 28), a data descriptor (24), the name
# twice.
ENTRY_OVERHEAD = 30 + 46 + 20 + 28 + 24
# End of central directory, with its ZIP64 record and locator.
END_OVERHEAD = 22 + 56 + 20


def deflate_bound(size: int) -> int:
    """The most bytes raw DEFLATE makes of ``size`` bytes (zlib's deflateBound, no header)."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13


def entry_cost(name: str, size: int) -> int:
    return ENTRY_OVERHEAD + 2 * len(name.encode()) + deflate_bound(size)


@dataclass(frozen=True)
class Item:
    """One entry to export: its name in the zip and its size before compression."""

    name: str
    size: int


def pack(items: Sequence[Item], parts_size: int) -> list[list[int]]:
    """Indexes of ``items`` per part, in order: each part's zip stays within ``parts_size``
    whatever the compression does; an entry that cannot fit in any part has one of its own."""
    parts: list[list[int]] = []
    current: list[int] = []
    used = END_OVERHEAD
    for i, item in enumerate(items):
        cost = entry_cost(item.name, item.size)
        if current and used + cost > parts_size:
            parts.append(current)
            current, used = [], END_OVERHEAD
        current.append(i)
        used += cost
        if used > parts_size:  # alone and still too big: a part of its own
            parts.append(current)
            current, used = [], END_OVERHEAD
    if current:
        parts.append(current)
    return parts


# Keys whose values never leave the server, whatever record they appear in.
SECRET_KEYS = frozenset(
    {
        "password",
        "password_hash",
        "key_hash",
        "hash",
        "salt",
        "scram",
        "stored_key",
        "server_key",
        "token",
        "otp_secret",
        "twofactor_secret",
        "secret",
        "private_key",
        "vapid_private_key",
        "key",
    }
)
MASK = "********"
_TOKEN_IN_TEXT = re.compile(r"(auth_token=)[^&\s\"']+")


def scrub(value: Any) -> Any:
    """``value`` with every secret-named text or number masked (flags such as
    ``secret: true`` are kept, records under such names looked into) and every
    ``auth_token=`` in a text masked: the query methods already hide their secrets; this is
    the export's own rule on top."""
    if isinstance(value, dict):
        return {
            k: MASK if k.lower() in SECRET_KEYS and _hideable(v) else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _TOKEN_IN_TEXT.sub(r"\1" + MASK, value)
    return value


def _hideable(value: Any) -> bool:
    # A flag (``secret: true``), a null, a record under such a name: looked into instead.
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def refused_collections(asked: Sequence[str], admin: bool) -> list[str]:
    """The collections asked for that only administrators export, when the caller is not."""
    return [] if admin else [c for c in asked if COLLECTIONS[c]]


def collections_for(asked: Sequence[str] | None, admin: bool) -> list[str]:
    """The collections to export: those asked for, or all the caller may read."""
    if asked:
        return list(asked)
    return [c for c, admin_only in COLLECTIONS.items() if admin or not admin_only]
