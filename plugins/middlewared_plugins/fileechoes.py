"""What the API itself wrote, kept for a while so that the watcher does not report it again
(pure: fed with times)."""

from __future__ import annotations

import os
import stat as st
from collections import OrderedDict, deque
from dataclasses import dataclass

# How long the API's own writes are remembered: longer than any settle time plus the delay of
# a busy watcher; a path's signature changes with any later write, so this is only a bound.
WINDOW_SECONDS = 60.0
MAX_ECHOES = 10_000
MAX_ENDED_CLAIMS = 1_000

# What a path looked like (None: absent). A directory's times change with what it holds,
# which is reported on its own: only its inode and mode count.
Signature = tuple[int, ...] | None


def signature(s: os.stat_result | None) -> Signature:
    if s is None:
        return None
    if st.S_ISDIR(s.st_mode):
        return (s.st_ino, s.st_mode)
    return (s.st_ino, s.st_mode, s.st_size, s.st_mtime_ns, s.st_ctime_ns)


class Echoes:
    """Paths the API announced, with what they looked like then: a settled change that finds
    a path exactly so is the echo of that write. Bounded: the oldest are forgotten."""

    def __init__(self, limit: int = MAX_ECHOES, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._known: OrderedDict[str, tuple[Signature, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def expect(self, path: str, sig: Signature, now: float) -> None:
        self._known.pop(path, None)
        self._known[path] = (sig, now)
        while len(self._known) > self.limit:
            self._known.popitem(last=False)

    def is_echo(self, path: str, sig: Signature, now: float) -> bool:
        self._expire(now)
        found = self._known.get(path)
        return found is not None and found[0] == sig

    def forget(self, path: str) -> None:
        """The path changed since (news was published): its old state proves nothing now."""
        self._known.pop(path, None)

    def _expire(self, now: float) -> None:
        while self._known:
            _, (_, at) = next(iter(self._known.items()))
            if now - at <= self.window:
                return
            self._known.popitem(last=False)


@dataclass(eq=False)
class Claim:
    """A path (and all below it) the API is writing, from ``start`` to ``end``."""

    path: str
    start: float
    end: float | None = None


class Claims:
    """Paths being written by the API's jobs: a burst whose last change came while its path
    was claimed is the job's own, however late it settles."""

    def __init__(self, window: float = WINDOW_SECONDS, ended_limit: int = MAX_ENDED_CLAIMS) -> None:
        self.window = window
        self.ended_limit = ended_limit
        self._by_path: dict[str, list[Claim]] = {}
        self._ended: deque[Claim] = deque()

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_path.values())

    def begin(self, path: str, now: float) -> Claim:
        claim = Claim(path, now)
        self._by_path.setdefault(path, []).append(claim)
        return claim

    def end(self, claim: Claim, now: float) -> None:
        claim.end = now
        self._ended.append(claim)
        self._expire(now)
        while len(self._ended) > self.ended_limit:
            self._drop(self._ended.popleft())

    def covers(self, path: str, when: float, now: float) -> bool:
        """Whether a change to ``path`` at ``when`` came while it (or a parent) was claimed."""
        self._expire(now)
        if not self._by_path:
            return False
        probe = path
        while True:
            for claim in self._by_path.get(probe, ()):
                if claim.start <= when and (claim.end is None or when <= claim.end):
                    return True
            parent = os.path.dirname(probe)
            if parent == probe:
                return False
            probe = parent

    def _expire(self, now: float) -> None:
        while self._ended and now - (self._ended[0].end or now) > self.window:
            self._drop(self._ended.popleft())

    def _drop(self, claim: Claim) -> None:
        found = self._by_path.get(claim.path)
        if found is None:
            return
        if claim in found:
            found.remove(claim)
        if not found:
            del self._by_path[claim.path]
