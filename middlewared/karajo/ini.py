"""karajo's INI dialect (git-config style, as pakakeh.go's lib/ini reads it), parsed with the
file and line of every key.

Written on purpose rather than with ``configparser``: karajo repeats keys (``command``,
``http_header``, ``to``, ``notif_on_success``) and each value counts, in order, where
configparser keeps the last one or refuses the file; configparser also knows no
``[job "name"]`` subsections and keeps no line per key, and every refusal here names
``FILE:LINE``. What it reads: ``[section]`` and ``[section "subsection"]`` headers (section
names are case-insensitive, subsections are not), ``key = value`` (keys case-insensitive; a
key alone means ``true``), ``#`` and ``;`` comments (whole lines, or after a value outside
quotes), double-quoted parts with ``\\"``, ``\\\\``, ``\\n``, ``\\t``, ``\\b`` escapes, and a
backslash at the end of a line continuing the value on the next one. Values are never
quoted in errors: some are secrets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from middlewared.configfile import ConfigError

_HEADER = re.compile(r'^\[\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?:"((?:[^"\\]|\\.)*)")?\s*\]$')
_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*(?:=(.*))?$", re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "b": "\b"}
TRUE = frozenset({"true", "yes", "on", "1"})
FALSE = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int


@dataclass
class Section:
    name: str
    sub: str | None
    line: int
    entries: list[Entry] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f'[{self.name} "{self.sub}"]' if self.sub is not None else f"[{self.name}]"


@dataclass(frozen=True)
class IniFile:
    path: Path
    sections: tuple[Section, ...]

    def error(self, line: int, reason: str) -> ConfigError:
        return ConfigError(self.path, line, reason)


def read(path: Path) -> IniFile:
    """The file's sections in order; ConfigError (``FILE:LINE: reason``) on the first fault."""
    try:
        # A byte-order mark (an editor's) is not part of the first line.
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, 0, f"cannot be read: {e}") from None
    return parse(text, path)


def parse(text: str, path: Path) -> IniFile:
    sections: list[Section] = []
    seen: dict[tuple[str, str | None], int] = {}
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start = number + 1
        raw = lines[number]
        number += 1
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            section = _header(stripped, path, start)
            key = (section.name, section.sub)
            if key in seen:
                reason = f"{section.title} is written twice (first at line {seen[key]})"
                raise ConfigError(path, start, reason)
            seen[key] = start
            sections.append(section)
            continue
        while _continues(raw) and number < len(lines):
            raw = raw.rstrip()[:-1] + lines[number]
            number += 1
        if not sections:
            raise ConfigError(path, start, "a key before any [section]")
        sections[-1].entries.append(_entry(raw.strip(), path, start))
    return IniFile(path, tuple(sections))


def _header(text: str, path: Path, line: int) -> Section:
    # A comment may follow the closing bracket.
    head = _strip_comment(text)
    m = _HEADER.match(head.strip())
    if m is None:
        raise ConfigError(path, line, 'not a section header: write [name] or [name "sub"]')
    sub = _unescape(m.group(2)) if m.group(2) is not None else None
    return Section(m.group(1).lower(), sub, line)


def _entry(text: str, path: Path, line: int) -> Entry:
    m = _KEY.match(text)
    if m is None:
        raise ConfigError(path, line, "not a key: write name = value")
    key = m.group(1).lower()
    if m.group(2) is None:
        return Entry(key, "true", line)
    return Entry(key, _value(m.group(2), path, line, key), line)


def _continues(raw: str) -> bool:
    """A backslash ends the line (and is not itself escaped): the value goes on."""
    body = raw.rstrip()
    trailing = len(body) - len(body.rstrip("\\"))
    return trailing % 2 == 1


def _strip_comment(text: str) -> str:
    quoted = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch in "#;" and not quoted:
            return text[:i]
    return text


def _value(text: str, path: Path, line: int, key: str) -> str:
    """The value with quotes and escapes resolved; whitespace outside quotes is trimmed."""
    out: list[str] = []
    quoted = False
    i = 0
    # Spaces outside quotes at the end are dropped; inside quotes they are kept.
    kept = 0
    body = text.strip()
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if i + 1 >= len(body) or body[i + 1] not in _ESCAPES:
                raise ConfigError(path, line, f"{key}: a backslash starts an unknown escape")
            out.append(_ESCAPES[body[i + 1]])
            i += 2
            kept = len(out)
            continue
        if ch == '"':
            quoted = not quoted
            kept = len(out)
        elif ch in "#;" and not quoted:
            break
        else:
            out.append(ch)
            if quoted or not ch.isspace():
                kept = len(out)
        i += 1
    if quoted:
        raise ConfigError(path, line, f"{key}: a quote is not closed")
    return "".join(out[:kept])


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def boolean(entry: Entry, path: Path) -> bool:
    value = entry.value.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(path, entry.line, f"{entry.key}: not a boolean (true or false)")
