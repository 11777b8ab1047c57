"""Named SQL queries and numbered migrations, loaded from the .sql files beside this module."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def _read(name: str) -> str:
    return resources.files("middlewared.store").joinpath("sql", name).read_text("utf-8")


@cache
def queries() -> dict[str, str]:
    """Every named query of ``queries.sql``, by name."""
    text = _read("queries.sql")
    parts = _NAME.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = body.strip().rstrip(";")
    return found


@cache
def migrations() -> list[tuple[int, list[str]]]:
    """``(version, statements)`` in order."""
    folder = resources.files("middlewared.store").joinpath("sql")
    result = []
    for entry in folder.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            result.append((int(m.group(1)), split_statements(entry.read_text("utf-8"))))
    return sorted(result)


def split_statements(script: str) -> list[str]:
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# The highest migration; a store refuses a database whose version is above it. Numbers may
# have gaps, but migrations at or below a database's version are never run on it.
SCHEMA_VERSION = 4
