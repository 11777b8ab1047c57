"""Finishing in Python what SQL could not: rows streamed in SQL order, a page out.

A ``Collector`` consumes batches of a scan (in the store's reader thread, off the event
loop): it decodes each row, keeps those the residual filter holds for and that come after the
cursor, sorts each run (rows SQL left tied, see ``sqlorder``) into Python's order, skips the
offset and stops the scan once the page is full. It never holds more than ``max_rows`` rows:
past that the query fails with the reason instead of growing the server.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from middlewared.errors import ValidationErrors
from middlewared.query.filters import Filter

Record = dict[str, Any]


def too_many_rows(limit: int) -> ValidationErrors:
    return ValidationErrors(
        [
            (
                "options",
                f"this query needs more than {limit} stored jobs in memory at once (its "
                "answer, or rows it orders in Python): give a limit or page with a cursor, "
                "order by columns, or narrow the filters (middlewared --query-max-rows)",
                errno.EINVAL,
            )
        ]
    )


@dataclass
class Collector:
    """What one scan keeps. Called with each batch; returns False once it has enough."""

    decode: Callable[[Sequence[Any]], Record]
    max_rows: int
    residual: Filter | None = None
    # Equal for rows SQL left tied that Python orders further (None: SQL's order is final).
    run_key: Callable[[Mapping[str, Any]], Any] | None = None
    # Python's order; needed with run_key or after.
    position: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
    after: tuple[Any, ...] | None = None  # a cursor's position: rows at or before it go
    skip: int = 0  # rows to pass over (an offset) ...
    want: int | None = None  # ... then rows to keep (None: all)
    count_only: bool = False
    rows: list[Record] = field(default_factory=list)
    counted: int = 0
    seen: int = 0  # rows the scan gave
    _skipped: int = 0
    _run: list[Record] = field(default_factory=list)
    _run_id: Any = None
    _tail: tuple[Any, Any] = (None, None)  # the run keys of the last two rows seen

    def __call__(self, batch: list[Sequence[Any]]) -> bool:
        for row in batch:
            self.seen += 1
            record = self.decode(row)
            if self.residual is not None and not self.residual.matches(record):
                continue
            if self.after is not None and self._position(record) <= self.after:
                continue
            if self.count_only:
                self.counted += 1
            elif self.run_key is None:
                self._emit(record)
            else:
                self._add_to_run(record)
            if self.want is not None and len(self.rows) >= self.want:
                return False
        return True

    def finish(self) -> list[Record]:
        """The rows kept, in order, once the scan is over."""
        self._flush()
        return self.rows

    def cut_a_run(self, limit: int) -> bool:
        """Whether a scan cut at ``limit`` rows cut a run (its last two rows tie in SQL), so
        Python may have missed rows that order before those it kept."""
        return self.seen >= limit and self._tail[0] == self._tail[1]

    def _position(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        assert self.position is not None
        return self.position(record)

    def _add_to_run(self, record: Record) -> None:
        assert self.run_key is not None
        key = self.run_key(record)
        self._tail = (self._tail[1], key)
        if key != self._run_id:
            self._flush()
            self._run_id = key
        self._run.append(record)
        if len(self._run) + len(self.rows) > self.max_rows:
            raise too_many_rows(self.max_rows)

    def _flush(self) -> None:
        run, self._run = self._run, []
        if len(run) > 1:
            run.sort(key=self._position)
        for record in run:
            self._emit(record)

    def _emit(self, record: Record) -> None:
        if self._skipped < self.skip:
            self._skipped += 1
            return
        if self.want is not None and len(self.rows) >= self.want:
            return
        self.rows.append(record)
        if len(self.rows) > self.max_rows:
            raise too_many_rows(self.max_rows)
