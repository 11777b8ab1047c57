"""What an identity may see and touch: jobs and events, by owner and by method.

A full administrator (no key narrows their rights) sees everything. Anyone else sees the
jobs and events they own, of the methods their allow-list grants (and of the methods every
logged-in identity may call, such as ``core.bulk``). So an administrator's API key limited
to ``core.ping`` sees no job at all, and a user sees none of another user's.
"""

from __future__ import annotations

from collections.abc import Callable

from middlewared.auth.credentials import Credentials
from middlewared.events.bus import Event


class Visibility:
    def __init__(self, open_method: Callable[[str], bool]) -> None:
        # Whether every logged-in identity may call the method (its jobs need no grant).
        self._open_method = open_method

    def method(self, creds: Credentials, method: str) -> bool:
        return self._open_method(method) or creds.allows(method)

    def job(
        self,
        creds: Credentials | None,
        owner_id: int | None,
        method: str | None,
        key_id: int | None = None,
    ) -> bool:
        """Whether ``creds`` may see (and, if abortable, abort) a job or a job's event.

        ``key_id`` is the API key the job was started with: an identity narrowed by its key
        sees only the jobs started with that key (not its user's other jobs).
        """
        if creds is None:
            return False
        if creds.full_admin:
            return True
        if not creds.owns(owner_id):
            return False
        if creds.restricted_key and key_id != creds.api_key_id:
            return False
        return method is None or self.method(creds, method)

    def event(self, creds: Credentials | None, event: Event) -> bool:
        """Whether ``creds`` may receive ``event`` (a subscription's sink, a trigger's owner),
        decided at each event from the credentials as they are now."""
        if creds is None:
            return False
        if event.everyone or creds.full_admin:
            return True
        if event.granted is not None:
            return self.method(creds, event.granted)
        return self.job(creds, event.owner, event.method, event.owner_key)
