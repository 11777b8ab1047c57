"""At start, before the trigger engine loads: the apps on disk and their triggers in the
store made to agree again after a crash between the two (an install whose triggers were
not all stored, an uninstall whose files went first), or a restored snapshot."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from middlewared.apps.manifest import Manifest
from middlewared.apps.record import load_all
from middlewared.apps.triggering import KIND, trigger_data
from middlewared.errors import ValidationErrors
from middlewared.triggers.model import Trigger, from_row
from middlewared.triggers.store import TriggerStore

log = logging.getLogger(__name__)


async def reconcile(store: TriggerStore, apps_dir: Path) -> tuple[list[int], list[int]]:
    """Delete the app triggers whose app or service is gone, store one for each service
    that has none; returns (deleted, created) trigger ids."""
    records = await asyncio.to_thread(load_all, apps_dir)
    services: dict[str, Manifest] = {}
    unreadable: set[str] = set()
    for slug, record in records.items():
        try:
            services[slug] = record.parsed
        except ValidationErrors as e:
            unreadable.add(slug)  # its triggers are left as they are
            log.error("app %s: its manifest is no longer valid (%s)", slug, e)
    have: set[tuple[str, str]] = set()
    deleted: list[int] = []
    for row in await store.all():
        trigger = from_row(row)
        managed = trigger.managed or {}
        if managed.get("kind") != KIND:
            continue
        key = (str(managed.get("slug")), str(managed.get("service")))
        if key[0] in unreadable:
            continue
        manifest = services.get(key[0])
        if manifest is None or key[1] not in manifest.services or key in have:
            await store.delete(trigger.id)
            deleted.append(trigger.id)
            log.warning("app trigger %d deleted: %s/%s is not installed", trigger.id, *key)
        else:
            have.add(key)
    created: list[int] = []
    next_id = await store.next_id()
    for slug, manifest in services.items():
        record = records[slug]
        for name, service in manifest.services.items():
            if (slug, name) in have:
                continue
            trigger = Trigger(
                id=next_id,
                data=trigger_data(slug, service),
                owner_id=record.owner_id,
                owner_key=record.owner_key,
                created=int(time.time() * 1000),
                managed={"kind": KIND, "slug": slug, "service": name},
            )
            await store.insert(trigger)
            created.append(next_id)
            next_id += 1
            log.warning("app %s: trigger %d of service %s stored again", slug, trigger.id, name)
    return deleted, created
