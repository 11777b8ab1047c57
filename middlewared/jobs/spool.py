"""Spool space: the bytes that uploads and buffered downloads hold on disk, bounded per user
and in all, and given back when their spool file is removed."""

from __future__ import annotations

import errno

from middlewared.errors import CallError


class SpoolFull(CallError):
    """A spool file may not grow: EDQUOT past the user's share, ENOSPC past the total."""

    default_errno = errno.ENOSPC


class SpoolQuota:
    """Bytes held in the spool, per user and in all. A limit of 0 is no limit."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self.used = 0
        self._by_user: dict[str, int] = {}

    def used_by(self, user: str) -> int:
        return self._by_user.get(user, 0)

    def charge(self, user: str, nbytes: int) -> None:
        """Take ``nbytes`` for ``user``, or raise SpoolFull with the reason (nothing taken)."""
        mine = self.used_by(user)
        if self.per_user and mine + nbytes > self.per_user:
            raise SpoolFull(
                f"Spool quota exceeded: {user} holds {mine} of {self.per_user} bytes in "
                f"uploads and buffered downloads, {nbytes} more do not fit",
                errno.EDQUOT,
            )
        if self.total and self.used + nbytes > self.total:
            raise SpoolFull(
                f"Spool full: uploads and buffered downloads hold {self.used} of "
                f"{self.total} bytes, {nbytes} more do not fit",
                errno.ENOSPC,
            )
        self.used += nbytes
        self._by_user[user] = mine + nbytes

    def release(self, user: str, nbytes: int) -> None:
        if not nbytes:
            return
        self.used -= nbytes
        left = self.used_by(user) - nbytes
        if left > 0:
            self._by_user[user] = left
        else:
            self._by_user.pop(user, None)

    def account(self, user: str) -> SpoolAccount:
        return SpoolAccount(self, user)


class SpoolAccount:
    """What one spool file holds: charged as it grows, given back (once) when removed."""

    def __init__(self, quota: SpoolQuota, user: str) -> None:
        self.quota = quota
        self.user = user
        self.bytes = 0

    def charge(self, nbytes: int) -> None:
        self.quota.charge(self.user, nbytes)
        self.bytes += nbytes

    def release(self) -> None:
        self.quota.release(self.user, self.bytes)
        self.bytes = 0
