"""Queries over records held in memory (users, API keys): filters and options in Python."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from middlewared.query import cursor
from middlewared.query.filters import MAX_CONDITIONS, parse_filters
from middlewared.query.options import apply_options, parse_options, with_id_last


def query(
    records: Iterable[Mapping[str, Any]],
    filters: Any = None,
    options: Any = None,
    *,
    max_conditions: int = MAX_CONDITIONS,
) -> Any:
    """Filter and apply options in Python: ``filters`` and ``options`` as they came on the wire."""
    raw = [] if filters is None else filters
    parsed = parse_filters(raw, max_conditions=max_conditions)
    opts = parse_options(options)
    if opts.cursor is False:
        return apply_options(parsed.filter(records), opts)
    # A cursor's position needs a unique last key: the id.
    order = with_id_last(opts.order_by)
    fp = cursor.fingerprint(raw, order)
    return cursor.page(parsed.filter(records), dataclasses.replace(opts, order_by=order), fp)
