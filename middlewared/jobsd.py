"""``<data-dir>/jobs.d/*.toml``: declarative files holding ``[[command]]``, ``[[trigger]]``
and ``[[notifier]]`` tables with the fields of ``command.create``, ``trigger.create`` (plus
its ``name`` and ``owner``, as the ``--config`` file's) and ``notifier.create``. Read in
name order at start and on SIGHUP; a file that is wrong refuses the reload with its name,
line and reason."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from middlewared.configfile import ConfigError, line_of, read_toml
from middlewared.declarations import KINDS, Declarations, Item

DIRNAME = "jobs.d"
# A declared trigger's name (commands and notifiers are checked by their own schemas).
_TRIGGER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# At most this many files are read (each is small; a directory of thousands is a mistake).
MAX_FILES = 1000


def files(folder: Path) -> list[Path]:
    """The ``*.toml`` files of ``folder`` in name order ([] when it does not exist)."""
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if p.suffix == ".toml" and p.is_file())
    if len(found) > MAX_FILES:
        raise ConfigError(folder, 0, f"more than {MAX_FILES} files")
    return found


def load(path: Path, into: Declarations) -> None:
    doc, lines = read_toml(path)
    for key in doc:
        if key not in KINDS:
            tables = ", ".join(f"[[{k}]]" for k in KINDS)
            raise ConfigError(path, line_of(lines, key), f"unknown table {key!r}: use {tables}")
    for kind in KINDS:
        for table, line in _tables(path, lines, kind, doc.get(kind, [])):
            into.add(_item(path, kind, table, line))


def _tables(path: Path, lines: list[str], kind: str, tables: Any) -> list[tuple[Any, int]]:
    header = re.compile(rf"^\s*\[\[\s*{kind}\s*\]\]")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(path, line_of(lines, kind), f"{kind} must be [[{kind}]] tables")
    starts = [i + 1 for i, ln in enumerate(lines) if header.match(ln)]
    if len(starts) != len(tables):
        starts = [0] * len(tables)  # a header this scan cannot place: no line numbers
    return list(zip(tables, starts, strict=True))


def _item(path: Path, kind: str, table: dict[str, Any], line: int) -> Item:
    data = dict(table)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(path, line, f"a [[{kind}]] needs a name")
    if kind != "trigger":
        return Item(kind, name, data, path, line)
    del data["name"]
    owner = data.pop("owner", "root")
    if not _TRIGGER_NAME.match(name):
        reason = f"trigger {name!r}: a name of letters, digits, '.', '_' or '-'"
        raise ConfigError(path, line, reason)
    if not isinstance(owner, str) or not owner:
        raise ConfigError(path, line, f"trigger {name!r}: owner must be a user name")
    return Item(kind, name, data, path, line, owner)
