"""Settling of file changes: one outcome per path once its changes stopped for a while (pure:
fed with times, asked what is due at a time)."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from enum import Enum


class Change(Enum):
    """What the watcher saw happen to a path."""

    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"


@dataclass(slots=True)
class _Burst:
    # Whether the path existed before the burst's first change.
    existed: bool
    first: float
    last: float
    # The one heap entry that stands for this burst (others for its path are stale).
    seq: int


@dataclass(frozen=True, slots=True)
class Settled:
    """A path whose changes stopped: what it was before them, and when they came."""

    path: str
    existed: bool
    first: float
    last: float


class Settler:
    """Bursts of changes, one per path, each due ``settle`` seconds after its last change.

    A change to a waiting path only moves its last-change time; the settle time is given when
    asking what is due, so a new setting applies at once to every waiting path. At most
    ``max_pending`` paths wait: past that the oldest burst is dropped and counted.
    """

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.dropped = 0
        self._bursts: dict[str, _Burst] = {}  # insertion order: oldest burst first
        # (last-change time when pushed, seq, path): one timer for every waiting path.
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._bursts)

    def touch(self, path: str, change: Change, now: float) -> bool:
        """Record a change; True when nothing was waiting before (the caller's timer sleeps)."""
        burst = self._bursts.get(path)
        if burst is not None:
            burst.last = max(burst.last, now)
            return False
        was_empty = not self._bursts
        self._add(path, change is not Change.CREATED, now, now)
        return was_empty

    def defer(self, settled: Settled, now: float) -> None:
        """Put a settled burst back to wait again (what it was before it is kept)."""
        burst = self._bursts.get(settled.path)
        if burst is not None:
            burst.last = max(burst.last, now)
            burst.existed = settled.existed
            return
        self._add(settled.path, settled.existed, settled.first, now)

    def _add(self, path: str, existed: bool, first: float, last: float) -> None:
        seq = next(self._seq)
        self._bursts[path] = _Burst(existed, first, last, seq)
        heapq.heappush(self._heap, (last, seq, path))
        while len(self._bursts) > self.max_pending:
            del self._bursts[next(iter(self._bursts))]
            self.dropped += 1
        if len(self._heap) > 2 * self.max_pending:
            # Dropped bursts left their entries behind: rebuild from the live ones.
            self._heap = [(b.last, b.seq, p) for p, b in self._bursts.items()]
            heapq.heapify(self._heap)

    def next_due(self, settle: float) -> float | None:
        """The earliest time something may be due (None: nothing waits)."""
        if not self._bursts:
            return None
        return self._heap[0][0] + settle

    def due(self, now: float, settle: float, limit: int | None = None) -> list[Settled]:
        """The bursts whose last change is at least ``settle`` old at ``now``, oldest first
        (at most ``limit``); they are forgotten."""
        out: list[Settled] = []
        heap = self._heap
        while heap and heap[0][0] + settle <= now and (limit is None or len(out) < limit):
            _, seq, path = heapq.heappop(heap)
            burst = self._bursts.get(path)
            if burst is None or burst.seq != seq:
                continue  # stale: dropped, or settled and changed again since
            if burst.last + settle > now:
                # Changed since this entry was pushed: wait from the last change.
                burst.seq = next(self._seq)
                heapq.heappush(heap, (burst.last, burst.seq, path))
                continue
            del self._bursts[path]
            out.append(Settled(path, burst.existed, burst.first, burst.last))
        return out
