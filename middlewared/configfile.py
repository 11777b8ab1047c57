"""The server's configuration file (``--config FILE``, TOML): any command-line option as a
top-level key (``max-frame = 1048576``; ``fs-root = ["/srv/a", "/srv/b"]`` for a repeatable
one), and declarative triggers as ``[[trigger]]`` tables. Options on the command line win
over the file. The triggers are loaded at start and again on SIGHUP (``declarations.py``
gathers them with karajo's and jobs.d's, ``services/declared.py`` makes the stored ones
match); a file that cannot be read or a table that is wrong is refused with the file's
name, the line and the reason, and what was loaded before stays."""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Options that only make sense on the command line.
_NOT_IN_FILE = frozenset({"help", "version", "config"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DECODE_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_TABLE = re.compile(r"^\s*\[\[\s*trigger\s*\]\]")


class ConfigError(ValueError):
    """``FILE:LINE: reason`` (the line is 0 when it is not known)."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class DeclaredTrigger:
    """One ``[[trigger]]`` table: its unique ``name``, the user it runs as (``owner``,
    default root) and what ``trigger.create`` takes."""

    name: str
    owner: str
    data: dict[str, Any]
    line: int


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    options: dict[str, Any]  # by argparse dest, converted as the command line would be
    triggers: tuple[DeclaredTrigger, ...]


def read_toml(path: Path) -> tuple[dict[str, Any], list[str]]:
    """A TOML file's document and its lines; ConfigError with the line of a syntax error."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, 0, f"cannot be read: {e}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        found = _DECODE_LINE.search(str(e))
        reason = _DECODE_LINE.sub("", str(e)).strip()
        raise ConfigError(path, int(found.group(1)) if found else 0, reason) from None
    return doc, text.splitlines()


def read(path: Path, parser: argparse.ArgumentParser) -> ConfigFile:
    """Parse and check the file against ``parser``'s options; ConfigError if anything is
    wrong (nothing of a bad file is used)."""
    doc, lines = read_toml(path)
    tables = doc.pop("trigger", [])
    actions = {
        a.dest: a for a in parser._actions if a.option_strings and a.dest not in _NOT_IN_FILE
    }
    options = {}
    for key, value in doc.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        line = line_of(lines, key)
        if action is None:
            hint = " (a table other than [[trigger]]?)" if isinstance(value, dict) else ""
            raise ConfigError(path, line, f"unknown option {key!r}{hint}")
        try:
            options[dest] = _convert(action, value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            raise ConfigError(path, line, f"{key}: {e}") from None
    return ConfigFile(path, options, _triggers(path, lines, tables))


def _convert(action: argparse.Action, value: Any) -> Any:
    """``value`` as the command line would have given it to the server."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise TypeError("must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_one(action, item) for item in items]
    return _one(action, value)


def _one(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, dict | list):
        raise TypeError("must be a single value")
    converted = action.type(str(value)) if callable(action.type) else str(value)
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"{value!r} is not one of {choices}")
    return converted


def _triggers(path: Path, lines: list[str], tables: Any) -> tuple[DeclaredTrigger, ...]:
    starts = [i + 1 for i, ln in enumerate(lines) if _TABLE.match(ln)]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(path, line_of(lines, "trigger"), "trigger must be [[trigger]] tables")
    if len(starts) != len(tables):
        starts = []  # a header this scan cannot place (inside a string?): no line numbers
    found: list[DeclaredTrigger] = []
    names: set[str] = set()
    for index, table in enumerate(tables):
        line = starts[index] if index < len(starts) else 0
        data = dict(table)
        name = data.pop("name", None)
        owner = data.pop("owner", "root")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                path, line, "a [[trigger]] needs a name: letters, digits, '.', '_' or '-'"
            )
        if name in names:
            raise ConfigError(path, line, f"trigger {name!r} is declared twice")
        if not isinstance(owner, str) or not owner:
            raise ConfigError(path, line, f"trigger {name!r}: owner must be a user name")
        names.add(name)
        found.append(DeclaredTrigger(name, owner, data, line))
    return tuple(found)


def line_of(lines: list[str], key: str) -> int:
    """The first line that sets ``key`` or opens its table (0: not found)."""
    pattern = re.compile(rf"^\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*[=.\]]")
    for number, line in enumerate(lines, 1):
        if pattern.match(line):
            return number
    return 0
