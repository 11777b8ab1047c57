"""core.get_jobs: live jobs from memory merged with finished ones queried in SQL."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from middlewared import jsonc
from middlewared.auth.credentials import Credentials
from middlewared.jobs.store import COLUMNS
from middlewared.query import (
    Filter,
    OrderKey,
    QueryOptions,
    apply_options,
    compile_order,
    compile_where,
    parse_filters,
    parse_options,
)

if TYPE_CHECKING:
    from middlewared.app import Middleware

# Past any real row count: "no limit" in SQL that both SQLite and PostgreSQL accept.
NO_LIMIT = 2**62
ENDED_SQL = "\"state\" IN ('SUCCESS', 'FAILED', 'ABORTED')"


def _ordering(opts: QueryOptions) -> tuple[OrderKey, ...]:
    """The requested order, with the id as the last tie-breaker (default: by id)."""
    keys = opts.order_by
    if not any(k.field == "id" for k in keys):
        keys = (*keys, OrderKey("id"))
    return keys


def _holds_surrogate(filters: Any) -> bool:
    """Whether a filter compares with a lone surrogate (a name that is not UTF-8). Text
    columns hold U+FFFD in its place, so such a filter runs in Python on the exact record."""
    stack = [filters]
    while stack:
        value = stack.pop()
        if isinstance(value, str) and jsonc.has_surrogates(value):
            return True
        if isinstance(value, list):
            stack.extend(value)
    return False


def _decode(row: dict[str, Any], admin: bool) -> dict[str, Any]:
    record: dict[str, Any] = jsonc.loads(row["record"])
    if not admin:
        record["exception"] = None
    return record


async def query_jobs(app: Middleware, creds: Credentials, filters: Any, options: Any) -> Any:
    """Filter, order and page jobs as PROTOCOL.md section 4 says, the same whether a
    condition runs in SQL or in Python."""
    flt = parse_filters(filters)
    opts = parse_options(options)
    order = _ordering(opts)
    live = [
        job.record(creds.admin)
        for job in app.jobs.live.values()
        if creds.may_read(job.credentials.username)
    ]
    live_matches = [r for r in live if flt.matches(r)]
    dialect = app.store.dialect
    # Compile with "?" placeholders, add ours, and render the whole statement once.
    columns = {} if _holds_surrogate(filters) else COLUMNS
    compiled = compile_where(flt, columns, dataclasses.replace(dialect, paramstyle="qmark"))
    where = [compiled.sql, ENDED_SQL]
    params = list(compiled.params)
    if not creds.admin:
        where.append('"owner" = ?')
        params.append(creds.username)
    overlap = app.jobs.ended_live_ids()
    if overlap:
        where.append(f'"id" NOT IN ({", ".join("?" for _ in overlap)})')
        params.extend(overlap)
    where_sql = " AND ".join(f"({w})" for w in where)
    order_sql = compile_order(order, COLUMNS, dialect)

    if compiled.residual is None and opts.count:
        rows = await app.store.fetch_sql(
            f"SELECT COUNT(*) AS n FROM jobs WHERE {where_sql}", params
        )
        return int(rows[0]["n"]) + len(live_matches)
    if compiled.residual is None and order_sql is not None:
        return await _paged(app, creds, opts, order, where_sql, order_sql, params, live_matches)
    return await _scan(app, creds, opts, order, where_sql, params, compiled.residual, live_matches)


async def _paged(
    app: Middleware,
    creds: Credentials,
    opts: QueryOptions,
    order: tuple[OrderKey, ...],
    where_sql: str,
    order_sql: str,
    params: list[Any],
    live_matches: list[dict[str, Any]],
) -> Any:
    """SQL does the filter, order and page; the few live matches are merged in.

    Every row of the requested page has at least ``offset - len(live)`` stored rows before
    it, so SQL may skip those; the rest is merged and paged in Python.
    """
    skip = max(0, opts.offset - len(live_matches))
    limit = opts.offset + opts.limit - skip if opts.limit else NO_LIMIT
    if opts.get and not opts.limit:
        limit = opts.offset + 1 - skip
    sql = f"SELECT record FROM jobs WHERE {where_sql} ORDER BY {order_sql} LIMIT ? OFFSET ?"
    rows = await app.store.fetch_sql(app.store.dialect.render(sql), [*params, limit, skip])
    stored = [_decode(r, creds.admin) for r in rows]
    # Rows come in the requested order (the SQL order is the Python one): sort only to merge.
    merge_order = order if live_matches else ()
    rest = dataclasses.replace(opts, order_by=merge_order, offset=opts.offset - skip)
    return apply_options(stored + live_matches, rest)


async def _scan(
    app: Middleware,
    creds: Credentials,
    opts: QueryOptions,
    order: tuple[OrderKey, ...],
    where_sql: str,
    params: list[Any],
    residual: Filter | None,
    live_matches: list[dict[str, Any]],
) -> Any:
    """A condition or an order SQL cannot express: narrow in SQL, finish in Python."""
    sql = app.store.dialect.render(f"SELECT record FROM jobs WHERE {where_sql}")
    rows = await app.store.fetch_sql(sql, params)
    stored = [_decode(r, creds.admin) for r in rows]
    if residual is not None:
        stored = [r for r in stored if residual.matches(r)]
    return apply_options(stored + live_matches, dataclasses.replace(opts, order_by=order))
