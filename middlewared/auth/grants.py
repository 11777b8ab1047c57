"""Grants: rights narrowed to an allow-list for a while (a command run's token), held by
id. An identity that names a grant resolves only while the grant is open, and only to the
methods both its user and the grant allow; closing the grant ends every session and token
that stands on it."""

from __future__ import annotations

import secrets


class Grants:
    def __init__(self) -> None:
        self._open: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def open(self, allow: tuple[str, ...]) -> str:
        """A new grant of ``allow`` (method patterns); its id goes into identities."""
        grant = secrets.token_hex(12)
        self._open[grant] = allow
        return grant

    def scope(self, grant: str) -> tuple[str, ...] | None:
        """The allow-list of an open grant; None once it is closed (or never was)."""
        return self._open.get(grant)

    def close(self, grant: str) -> None:
        self._open.pop(grant, None)
