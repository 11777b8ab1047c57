"""core.get_jobs: live jobs from memory merged with finished ones queried in SQL.

Conditions and orders run in SQL, on columns or on the stored JSON record; what SQL cannot
decide exactly (``~``, a few values SQL reads otherwise than Python) is finished in Python on
rows streamed in batches in the store's reader thread, stopping once the page is full. Each
query has a time budget and a row budget (``QueryLimits``). Pages come by offset, as TrueNAS
has them, or by cursor (keyset: cost independent of depth).
"""

from __future__ import annotations

import dataclasses
import errno
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from middlewared import jsonc
from middlewared.auth.credentials import Credentials
from middlewared.errors import CallError
from middlewared.jobs.store import COLUMNS
from middlewared.query import cursor
from middlewared.query.filters import Filter, date_object_ms, parse_filters
from middlewared.query.options import (
    OrderKey,
    QueryOptions,
    apply_options,
    parse_options,
    position_key,
    position_of,
    sort_records,
    with_id_last,
)
from middlewared.query.sql import Dialect, Fields, compile_filter
from middlewared.query.sqlorder import SqlOrder, compile_sql_order, run_key
from middlewared.query.sqltext import FALSE, TRUE, Sql, all_of
from middlewared.query.stream import Collector, Record, too_many_rows
from middlewared.store.base import Consumer

if TYPE_CHECKING:
    from middlewared.app import Middleware
    from middlewared.config import QueryLimits

# Past any real row count: "no limit" in SQL that both SQLite and PostgreSQL accept.
NO_LIMIT = 2**62
ENDED = "{} IN ('SUCCESS', 'FAILED', 'ABORTED')"
# The column holding each job's whole record as JSON.
DOCUMENT = "record"


@dataclass(frozen=True)
class _Query:
    """One core.get_jobs, compiled."""

    app: Middleware
    creds: Credentials
    opts: QueryOptions
    filter: Filter
    order: tuple[OrderKey, ...]
    where: Sql  # rows that may match (exactly those, when residual is None)
    residual: Filter | None
    sql_order: SqlOrder | None  # None: a key no SQL can read (Python sorts)
    dialect: Dialect
    limits: QueryLimits
    deadline: float

    @property
    def sql_exact(self) -> bool:
        """Whether SQL alone filters and orders: it may then page too."""
        return self.residual is None and self.sql_order is not None and self.sql_order.exact

    def decode(self, row: Sequence[Any]) -> Record:
        return _decode_record(row[0], self.creds.admin)

    def collector(self, probe: int = 0, **kw: Any) -> Collector:
        """A collector of this query's rows; ``probe`` more rows than the budget may be held
        (the one that tells a cursor page whether another follows)."""
        order = self.sql_order
        runs = None if order is not None and order.exact else _runs(order)
        return Collector(
            decode=self.decode,
            max_rows=self.limits.max_rows + probe,
            residual=self.residual,
            run_key=runs,
            position=position_key(self.order),
            **kw,
        )

    async def run(self, sql: Sql, consume: Consumer) -> None:
        """Run ``sql`` in the store within the query's time budget."""
        text = self.dialect.render(sql.text)
        try:
            await self.app.store.scan_sql(text, list(sql.params), consume, deadline=self.deadline)
        except TimeoutError:
            raise _timed_out(self.limits.timeout_seconds) from None

    async def scan(self, sql: Sql, collector: Collector) -> list[Record]:
        """Run ``sql`` (its first column: the record) through a collector."""
        await self.run(sql, collector)
        return collector.finish()

    def select(self, what: str, *extra_where: Sql, ordered: bool = True) -> Sql:
        where = all_of([self.where, *extra_where])
        sql = Sql(f"SELECT {what} FROM jobs WHERE ") + where
        if ordered and self.sql_order is not None:
            sql += Sql(" ORDER BY ") + self.sql_order.order_by()
        return sql


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


def _decode_record(text: str, admin: bool) -> Record:
    record: Record = jsonc.loads(text)
    if not admin:
        record["exception"] = None
    return record


def _runs(order: SqlOrder | None) -> Callable[[Mapping[str, Any]], Any]:
    """Where runs (rows SQL leaves tied) begin and end in a scan in ``order``."""
    if order is None:
        return lambda record: ()  # one run: Python sorts every row
    return lambda record: run_key(order, record)


def _timed_out(seconds: float) -> CallError:
    return CallError(
        f"the query took longer than {seconds:g} s: narrow it with conditions on id, method, "
        "state or the owner, or page with a cursor (middlewared --query-timeout)",
        errno.ETIMEDOUT,
    )


def _visible_sql(app: Middleware, creds: Credentials) -> list[Sql]:
    """Their own jobs, of the methods they may see (the mounted ones their allow-list grants,
    and those every identity may call)."""
    methods = tuple(m.spec.name for m in app.methods if app.visibility.method(creds, m.spec.name))
    conds = [Sql('"owner_id" = ?', (creds.user_id,))]
    if creds.restricted_key:
        conds.append(Sql('"api_key_id" = ?', (creds.api_key_id,)))
    marks = ", ".join("?" for _ in methods)
    conds.append(Sql(f'"method" IN ({marks})', methods) if methods else FALSE)
    return conds


def _compile(
    app: Middleware,
    creds: Credentials,
    flt: Filter,
    opts: QueryOptions,
    dialect: Dialect,
    exact_python: bool = False,
) -> _Query:
    """``exact_python``: every condition runs in Python on the exact record (a filter on
    names that are not UTF-8, which SQL text holds with U+FFFD in their place)."""
    limits = app.config.query
    deadline = time.monotonic() + limits.timeout_seconds
    overrides = {} if creds.admin else {"exception": None}
    fields = Fields(COLUMNS, dialect, DOCUMENT, overrides)
    where, residual = (TRUE, flt) if exact_python else compile_filter(flt, fields)
    # Nearly every stored job has ended: the state index would only slow this test down
    # (and make SQLite sort by id instead of walking the id index).
    conds = [where, Sql(ENDED.format(dialect.unindexed_template.format('"state"')))]
    if not creds.full_admin:
        conds.extend(_visible_sql(app, creds))
    overlap = app.jobs.ended_live_ids()
    if overlap:
        conds.append(Sql(f'"id" NOT IN ({", ".join("?" for _ in overlap)})', tuple(overlap)))
    order = with_id_last(opts.order_by)
    return _Query(
        app=app,
        creds=creds,
        opts=opts,
        filter=flt,
        order=order,
        where=all_of(conds),
        residual=residual,
        sql_order=compile_sql_order(order, fields),
        dialect=dialect,
        limits=limits,
        deadline=deadline,
    )


async def query_jobs(app: Middleware, creds: Credentials, filters: Any, options: Any) -> Any:
    """Filter, order and page jobs as PROTOCOL.md section 4 says, the same whether a
    condition runs in SQL or in Python."""
    limits = app.config.query
    flt = parse_filters(
        filters, max_conditions=limits.max_conditions, regex_seconds=limits.regex_seconds
    )
    opts = parse_options(options)
    visible = app.visibility.job
    live = [
        job.record(creds.admin)
        for job in app.jobs.live.values()
        if visible(creds, job.owner_id, job.method, job.key_id)
    ]
    # The same tree as the stored rows': one regex budget for the whole query.
    live_matches = [r for r in live if flt.matches(r)]
    dialect = app.store.dialect
    if dialect is None:
        return await _in_python(app, creds, filters, flt, opts, live_matches)
    q = _compile(app, creds, flt, opts, dialect, exact_python=_holds_surrogate(filters))
    if opts.cursor is not False:
        return await _cursor_page(q, filters, live_matches)
    if opts.count:
        return await _count(q) + len(live_matches)
    return await _page(q, live_matches)


async def _in_python(
    app: Middleware,
    creds: Credentials,
    filters: Any,
    flt: Filter,
    opts: QueryOptions,
    live_matches: list[Record],
) -> Any:
    """A store without a dialect (memory): every condition is evaluated in Python."""
    overlap = set(app.jobs.ended_live_ids())
    visible = app.visibility.job
    stored = []
    for row in await app.store.fetch("finished_job_records"):
        record = _decode_record(row["record"], creds.admin)
        who = (row["owner_id"], record["method"], row["api_key_id"])
        if record["id"] in overlap or not visible(creds, *who):
            continue
        if flt.matches(record):
            stored.append(record)
    order = with_id_last(opts.order_by)
    if opts.cursor is False:
        return apply_options(stored + live_matches, dataclasses.replace(opts, order_by=order))
    max_rows = app.config.query.max_rows
    page_size = min(opts.limit or max_rows, max_rows)
    paged = dataclasses.replace(opts, order_by=order, limit=page_size)
    return cursor.page(stored + live_matches, paged, cursor.fingerprint(filters, order))


async def _count(q: _Query) -> int:
    if q.residual is None:
        counted: list[int] = []

        def take(rows: list[Sequence[Any]]) -> bool:
            counted.append(int(rows[0][0]))
            return False

        await q.run(q.select("COUNT(*)", ordered=False), take)
        return counted[0]
    collector = q.collector(count_only=True)
    await q.scan(q.select("record", ordered=False), collector)
    return collector.counted


async def _stored(
    q: _Query,
    *,
    keyset: Sql | None = None,
    skip: int = 0,
    want: int | None = None,
    after: tuple[Any, ...] | None = None,
    probe: int = 0,
) -> list[Record]:
    """The stored rows of the query in its order: ``skip`` passed over, then at most
    ``want`` (all when None); ``after`` drops rows at or before a cursor's position."""
    sql = q.select("record", *([keyset] if keyset is not None else []))
    if q.sql_exact:  # SQL filters, orders and pages alone
        page = Sql(" LIMIT ? OFFSET ?", (want if want is not None else NO_LIMIT, skip))
        return await q.scan(sql + page, q.collector(probe))
    if q.residual is None and q.sql_order is not None and want is not None and after is None:
        # Rows SQL leaves tied (a run) are ordered here: a page cut in SQL is right unless
        # the cut falls inside a run, which one more row tells.
        limit = skip + want + 1
        collector = q.collector(probe, skip=skip, want=want)
        rows = await q.scan(sql + Sql(" LIMIT ?", (limit,)), collector)
        if not collector.cut_a_run(limit):
            return rows
    return await q.scan(sql, q.collector(probe, skip=skip, want=want, after=after))


async def _page(q: _Query, live_matches: list[Record]) -> Any:
    """Offset paging. Every row of the requested page has at least ``offset - len(live)``
    stored rows before it, so the store may skip those; the rest is merged and paged here."""
    opts = q.opts
    skip = max(0, opts.offset - len(live_matches))
    want: int | None = opts.offset + opts.limit - skip if opts.limit else None
    if opts.get and not opts.limit:
        want = opts.offset + 1 - skip
    stored = await _stored(q, skip=skip, want=want)
    # Stored rows come in the requested order: sort only to merge the live ones in.
    merge_order = q.order if live_matches else ()
    rest = dataclasses.replace(opts, order_by=merge_order, offset=opts.offset - skip)
    if len(stored) + len(live_matches) > q.limits.max_rows:
        raise too_many_rows(q.limits.max_rows)
    return apply_options(stored + live_matches, rest)


async def _cursor_page(q: _Query, filters: Any, live_matches: list[Record]) -> dict[str, Any]:
    """Keyset paging: the rows after the cursor's position (the id breaks every tie), so a
    page costs the same at any depth, and rows added meanwhile never shift a walk."""
    # A page holds at most what one query may hold: a walk never fails for its page size.
    page_size = min(q.opts.limit or q.limits.max_rows, q.limits.max_rows)
    opts = dataclasses.replace(q.opts, limit=page_size, order_by=q.order)
    fp = cursor.fingerprint(filters, q.order)
    keyset: Sql | None = None
    start: tuple[Any, ...] | None = None  # the cursor's position
    after: tuple[Any, ...] | None = None  # ... when Python must drop rows up to it
    if isinstance(opts.cursor, str):
        values = cursor.decode(opts.cursor, fp, len(q.order))
        _check_cursor_values(q, values)
        start = after = position_of(q.order, values)
        if q.sql_order is not None:
            keyset, exact = q.sql_order.after(values)
            if exact:
                after = None
    # One row more than the page: is there a next page?
    stored = await _stored(q, keyset=keyset, want=page_size + 1, after=after, probe=1)
    position = position_key(q.order)
    live = [r for r in live_matches if start is None or position(r) > start]
    rows = sort_records(stored + live, q.order) if live else stored
    return cursor.result_page(rows, opts, fp)


def _check_cursor_values(q: _Query, values: list[Any]) -> None:
    """A cursor's values are compared with columns in SQL: each must be of its column's
    kind (anything goes for a field of the JSON record)."""
    for key, value in zip(q.order, values, strict=True):
        column = COLUMNS.get(key.field)
        if column is None or value is None:
            continue
        if not _of_kind(column.kind, value):
            raise cursor.bad_cursor("is not a cursor this server gave (start again with true)")


def _of_kind(kind: str, value: Any) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "date":
        return date_object_ms(value) is not None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int":
        return number and isinstance(value, int) and -(2**63) <= value < 2**63
    return number and abs(value) < 2.0**63
