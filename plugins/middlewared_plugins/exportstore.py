"""The exports data.export made, until they expire: their parts' files and tokens, at most
so many per user, and why a gone export's links no longer answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Clock = Callable[[], float]
# Gone exports remembered (for a 410 saying why rather than a 404).
MAX_TOMBSTONES = 10_000


@dataclass(frozen=True)
class Part:
    path: Path
    size: int
    sha256: str
    # The part's download token (a secret: only its hash is kept by the token store).
    token: str = field(repr=False)


@dataclass
class Export:
    export_id: str
    owner: str
    folder: Path
    expires: float  # seconds since the epoch
    parts: list[Part] = field(default_factory=list)


class ExportStore:
    """Exports by id; ``clock`` tells the time (tests give their own)."""

    def __init__(self, max_per_user: int, clock: Clock = time.time) -> None:
        self.max_per_user = max_per_user
        self.clock = clock
        self._exports: dict[str, Export] = {}
        self._gone: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._exports)

    def add(self, export: Export) -> list[Export]:
        """Keep ``export``; returns the owner's oldest exports it pushes out (and the expired
        ones), for the caller to remove."""
        removed = self.expire_due()
        self._exports[export.export_id] = export
        mine = [e for e in self._exports.values() if e.owner == export.owner]
        for old in mine[: max(0, len(mine) - self.max_per_user)]:
            removed.append(self._drop(old.export_id, f"replaced by a newer export of {old.owner}"))
        return removed

    def get(self, export_id: str) -> tuple[Export | None, str | None]:
        """The export, or None and why it is gone (None when it never existed)."""
        export = self._exports.get(export_id)
        if export is None:
            return None, self._gone.get(export_id)
        if export.expires <= self.clock():
            # Removed by the next expire_due; unusable from now on.
            return None, "expired"
        return export, None

    def expire_due(self) -> list[Export]:
        """Forget the exports whose time is up; returns them for the caller to remove."""
        now = self.clock()
        due = [e.export_id for e in self._exports.values() if e.expires <= now]
        return [self._drop(export_id, "expired") for export_id in due]

    def next_expiry(self) -> float | None:
        return min((e.expires for e in self._exports.values()), default=None)

    def drop_all(self) -> list[Export]:
        return [self._drop(export_id, "the server stopped") for export_id in list(self._exports)]

    def _drop(self, export_id: str, why: str) -> Export:
        export = self._exports.pop(export_id)
        self._gone[export_id] = why
        while len(self._gone) > MAX_TOMBSTONES:
            del self._gone[next(iter(self._gone))]
        return export
