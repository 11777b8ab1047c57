"""Keyset paging of ``*.query`` methods: page after page, each continuing the last's cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

# Rows a page asks for when the caller gives no limit.
DEFAULT_PAGE_SIZE = 500

Call = Callable[..., Awaitable[Any]]


async def query_pages(
    call: Call,
    method: str,
    filters: Sequence[Any] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> AsyncIterator[list[Any]]:
    """The results of ``method(filters, options)`` a page at a time, walked by cursor: a walk
    sees each row that held still during it once, in order, whatever was added meanwhile."""
    opts = dict(options or {})
    for name in ("count", "get", "offset", "cursor"):
        if opts.get(name):
            raise ValueError(f"a paged query cannot take {name!r}")
    opts["limit"] = opts.get("limit") or page_size
    cursor: bool | str = True
    while cursor:
        page = await call(method, list(filters or []), {**opts, "cursor": cursor})
        yield page["results"]
        cursor = page["next_cursor"]
