"""An installed app as kept on disk: ``<data-dir>/apps/<slug>/app.json`` beside the folder
of its files (``<slug>/<n>/``, a new one for each update). The record is written by
rename, so an install or update is all there or not at all."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from middlewared.apps.manifest import Manifest, parse_manifest

RECORD = "app.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppRecord:
    slug: str
    version: str
    name: str
    # The path it was installed from (under a root), read again by app.update.
    source: str
    digest: str
    # The folder of its files, under the slug's.
    folder: str
    installed: int
    updated: int
    # Who installed (or last updated) it: its services' triggers run as them.
    owner_id: int | None
    owner_key: int | None
    # The methods and collections its token may use (the permissions translated).
    allow: tuple[str, ...]
    manifest: dict[str, Any]

    @property
    def parsed(self) -> Manifest:
        return parse_manifest(self.manifest)

    def files(self, apps_dir: Path) -> Path:
        return apps_dir / self.slug / self.folder

    def save(self, apps_dir: Path) -> None:
        target = apps_dir / self.slug / RECORD
        tmp = target.with_name(f".{RECORD}.tmp")
        data = {**asdict(self), "allow": list(self.allow)}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: Path) -> AppRecord:
        data = json.loads(path.read_text())
        data["allow"] = tuple(data["allow"])
        return cls(**data)


def load_all(apps_dir: Path) -> dict[str, AppRecord]:
    """Every installed app by slug (a folder without a record is an install that did not
    finish: not an app)."""
    found: dict[str, AppRecord] = {}
    if not apps_dir.is_dir():
        return found
    for entry in sorted(apps_dir.iterdir()):
        path = entry / RECORD
        if not entry.name.startswith(".") and path.is_file():
            try:
                record = AppRecord.load(path)
            except (OSError, ValueError, TypeError, KeyError) as e:
                log.error(
                    "app %s: its record %s cannot be read (%s): left out", entry.name, path, e
                )
                continue
            found[record.slug] = record
    return found


def sweep(apps_dir: Path) -> list[str]:
    """What an install or update a crash interrupted left: staging folders, a slug's folder
    without a record, an app's folders other than its current one. Returns what went."""
    removed: list[str] = []
    if not apps_dir.is_dir():
        return removed
    records = load_all(apps_dir)
    for entry in sorted(apps_dir.iterdir()):
        record = records.get(entry.name)
        if record is None and (entry / RECORD).exists():
            continue  # a record that cannot be read: its files are left alone
        if record is None:
            removed.append(entry.name)
            shutil.rmtree(entry, ignore_errors=True)
            continue
        for folder in sorted(entry.iterdir()):
            if folder.is_dir() and folder.name != record.folder:
                removed.append(f"{entry.name}/{folder.name}")
                shutil.rmtree(folder, ignore_errors=True)
    return removed
