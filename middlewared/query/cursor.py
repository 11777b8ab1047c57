"""Keyset paging: opaque cursors that hold the last row's order values, and pages after them.

A cursor is the base64 of ``{"v": 1, "q": fingerprint, "k": [value per order key]}``; the
order always ends in ``id``, so the values name one position. The fingerprint binds it to
its query (filters and order): a cursor of another query, or a damaged one, is a -32602.
Nothing in a cursor is trusted beyond a position: the values are checked, then compared.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from middlewared import jsonc
from middlewared.errors import ValidationErrors
from middlewared.query.filters import MISSING, resolve
from middlewared.query.options import (
    OrderKey,
    QueryOptions,
    position_key,
    position_of,
    select_fields,
    sort_records,
)

VERSION: Final = 1
WHERE: Final = "options.cursor"


def bad_cursor(reason: str) -> ValidationErrors:
    return ValidationErrors([(WHERE, reason, errno.EINVAL)])


def fingerprint(filters: Any, order: tuple[OrderKey, ...]) -> str:
    """A digest of what a cursor's position depends on."""
    keys = [[k.field, k.descending, k.nulls_first] for k in order]
    text = jsonc.dumps([filters, keys])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def order_values(record: Mapping[str, Any], order: tuple[OrderKey, ...]) -> list[Any]:
    """A row's values for each order key (None where the field is missing: it sorts so)."""
    values = (resolve(record, key.path) for key in order)
    return [None if v is MISSING else v for v in values]


def encode(fp: str, values: Sequence[Any]) -> str:
    payload = jsonc.dumps({"v": VERSION, "q": fp, "k": list(values)}).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def decode(token: str, fp: str, keys: int) -> list[Any]:
    """The order values a cursor holds; -32602 unless it is one of this query's."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = jsonc.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, jsonc.JSONDecodeError):
        raise bad_cursor("is not a cursor this server gave (start again with true)") from None
    if not isinstance(data, dict) or set(data) != {"v", "q", "k"} or data["v"] != VERSION:
        raise bad_cursor("is not a cursor this server gave (start again with true)")
    if data["q"] != fp:
        raise bad_cursor("belongs to another query: keep the filters and order_by of its walk")
    values = data["k"]
    if not isinstance(values, list) or len(values) != keys:
        raise bad_cursor("does not match this query's order")
    return values


def page(records: Iterable[Mapping[str, Any]], opts: QueryOptions, fp: str) -> dict[str, Any]:
    """A cursor page in Python: the records (matched already) after the cursor, in order."""
    order = opts.order_by
    position = position_key(order)
    rows = sort_records(records, order)
    if isinstance(opts.cursor, str):
        start = position_of(order, decode(opts.cursor, fp, len(order)))
        rows = [r for r in rows if position(r) > start]
    return result_page(rows, opts, fp)


def result_page(rows: Sequence[Mapping[str, Any]], opts: QueryOptions, fp: str) -> dict[str, Any]:
    """``{"results", "next_cursor"}`` from the rows after the cursor, in order (at least
    ``limit + 1`` of them when there are more)."""
    more = bool(opts.limit) and len(rows) > opts.limit
    shown = rows[: opts.limit] if opts.limit else rows
    cursor = encode(fp, order_values(shown[-1], opts.order_by)) if more and shown else None
    results = [select_fields(r, opts.select) if opts.select else r for r in shown]
    return {"results": results, "next_cursor": cursor}
