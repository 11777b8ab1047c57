"""What the configuration files declare: commands, triggers and notifiers, each with the file
and line it comes from. Three sources make one set, read at start and on SIGHUP: the
``--config`` file's ``[[trigger]]`` tables, karajo's INI (``--karajo-config``) and
``<data-dir>/jobs.d/*.toml``. A fault anywhere refuses the whole set (``services/declared.py``
changes nothing then)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middlewared.configfile import ConfigError, ConfigFile
from middlewared.errors import ValidationErrors

log = logging.getLogger(__name__)

KINDS = ("notifier", "command", "trigger", "worker")


@dataclass(frozen=True)
class Item:
    """One declared object: ``data`` is what its ``<kind>.create`` takes (a trigger's
    without its name and owner, which are here)."""

    kind: str
    name: str
    data: dict[str, Any]
    path: Path
    line: int
    owner: str = "root"

    def error(self, e: Exception) -> ConfigError:
        """Its refusal, pointing at where it is written."""
        if isinstance(e, ValidationErrors):
            reason = "; ".join(f"{field}: {message}" for field, message, _ in e.errors)
        else:
            reason = str(getattr(e, "reason", e))
        return ConfigError(self.path, self.line, f"{self.kind} {self.name!r}: {reason}")

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Declarations:
    items: list[Item] = field(default_factory=list)
    # karajo's [karajo] max_job_running: the runs of commands at once (None: leave it).
    max_running: int | None = None
    sources: list[Path] = field(default_factory=list)

    def add(self, item: Item) -> None:
        """Names are unique per kind across every source."""
        for other in self.items:
            if other.kind == item.kind and other.name == item.name:
                raise ConfigError(
                    item.path,
                    item.line,
                    f"{item.kind} {item.name!r} is declared twice (also at {other.where})",
                )
        self.items.append(item)

    def of(self, kind: str) -> list[Item]:
        return [i for i in self.items if i.kind == kind]

    def count(self) -> str:
        return ", ".join(f"{len(self.of(k))} {k}s" for k in KINDS)


def collect(config: ConfigFile | None, karajo: Path | None, jobs_dir: Path | None) -> Declarations:
    """Every source read and checked for its form (not yet against the server: that is
    ``services/declared.py``'s); ConfigError on the first fault."""
    from middlewared import jobsd
    from middlewared.karajo import mapping

    found = Declarations()
    if config is not None:
        found.sources.append(config.path)
        for t in config.triggers:
            found.add(Item("trigger", t.name, t.data, config.path, t.line, t.owner))
    if karajo is not None:
        found.sources.append(karajo)
        mapping.load(karajo, found)
    if jobs_dir is not None:
        for path in jobsd.files(jobs_dir):
            found.sources.append(path)
            jobsd.load(path, found)
    return found
