"""The event sources one can subscribe to, and who may subscribe to each."""

from __future__ import annotations

from dataclasses import dataclass

from middlewared.auth.credentials import Credentials
from middlewared.events.bus import ALL


@dataclass(frozen=True)
class Collection:
    name: str
    description: str
    # Every logged-in user may subscribe (and sees only what they may read).
    open_to_all: bool = False


class Collections:
    def __init__(self) -> None:
        self._known: dict[str, Collection] = {ALL: Collection(ALL, "Every event", True)}

    def add(self, collection: Collection) -> None:
        if collection.name in self._known:
            raise ValueError(f"event source {collection.name} declared twice")
        self._known[collection.name] = collection

    def exists(self, name: str) -> bool:
        return name in self._known

    def may_subscribe(self, name: str, credentials: Credentials) -> bool:
        c = self._known[name]
        return c.open_to_all or credentials.allows(name)

    def all(self) -> list[Collection]:
        return list(self._known.values())
