"""An app's ``manifest.json`` read and checked (cozy's shape): its slug, version,
permissions and services, each service's trigger turned into our trigger's type and
arguments. Pure: no server, no files."""

from __future__ import annotations

import errno
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from middlewared.errors import ValidationErrors
from middlewared.triggers.durations import parse_debounce
from middlewared.triggers.model import TYPES

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,25}$")
SERVICE_TYPES = ("node", "python", "exec")
SERVICE_KEYS = frozenset({"type", "file", "trigger", "debounce"})
MAX_PERMISSIONS = 64
MAX_SERVICES = 32
# cozy's doctypes that name one of our event collections or namespaces.
ALIASES = {
    "io.cozy.files": "filesystem",
    "io.cozy.jobs": "jobs",
    "io.cozy.triggers": "trigger",
}
COLLECTION_ALIASES = {
    "io.cozy.files": "filesystem.files",
    "io.cozy.jobs": "core.get_jobs",
    "io.cozy.triggers": "trigger.query",
}


@dataclass(frozen=True)
class Service:
    name: str
    type: str
    file: str
    # Our trigger's type and arguments (cozy's "@event io.cozy.files:CREATED" made ours).
    trigger_type: str
    arguments: str
    # As the manifest wrote them.
    trigger: str
    debounce: str | None

    def record(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "file": self.file,
            "trigger": self.trigger,
            "debounce": self.debounce,
        }


@dataclass(frozen=True)
class Manifest:
    slug: str
    version: str
    name: str
    # As given (a cozy object keyed by name, or a list), each checked for its shape.
    permissions: dict[str, dict[str, Any]]
    services: dict[str, Service]
    raw: dict[str, Any]


def _bad(field: str, message: str, code: int = errno.EINVAL) -> ValidationErrors:
    return ValidationErrors([(field, message, code)])


def parse_manifest(raw: Any, where: str = "manifest") -> Manifest:
    """The manifest checked; a ValidationErrors naming the field otherwise."""
    if not isinstance(raw, dict):
        raise _bad(where, "A manifest is a JSON object")
    slug = raw.get("slug")
    if not isinstance(slug, str) or not SLUG.match(slug):
        raise _bad(
            f"{where}.slug",
            "A slug is 1 to 32 lowercase letters, digits and dashes, not starting with a dash",
        )
    version = raw.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        raise _bad(f"{where}.version", "A version is a non-empty string of at most 64 characters")
    name = raw.get("name", slug)
    if not isinstance(name, str) or len(name) > 256:
        raise _bad(f"{where}.name", "A name is a string of at most 256 characters")
    permissions = parse_permissions(raw.get("permissions", {}), f"{where}.permissions")
    services = _services(raw.get("services", {}), f"{where}.services")
    return Manifest(slug, version, name, permissions, services, raw)


def parse_permissions(raw: Any, where: str = "permissions") -> dict[str, dict[str, Any]]:
    """cozy's object of named rules, or a list of rules (named by their index)."""
    if isinstance(raw, list):
        raw = {str(i): rule for i, rule in enumerate(raw)}
    if not isinstance(raw, dict):
        raise _bad(where, "Permissions are an object of named rules (cozy's) or a list")
    if len(raw) > MAX_PERMISSIONS:
        raise _bad(where, f"At most {MAX_PERMISSIONS} permissions")
    for key, rule in raw.items():
        if not isinstance(rule, dict):
            raise _bad(f"{where}.{key}", "A permission is an object with a type and verbs")
    return dict(raw)


def _services(raw: Any, where: str) -> dict[str, Service]:
    if not isinstance(raw, dict):
        raise _bad(where, "Services are an object: {name: {type, file, trigger, debounce}}")
    if len(raw) > MAX_SERVICES:
        raise _bad(where, f"At most {MAX_SERVICES} services")
    return {name: parse_service(name, spec, f"{where}.{name}") for name, spec in raw.items()}


def parse_service(name: str, spec: Any, where: str) -> Service:
    if not SERVICE_NAME.match(name):
        raise _bad(where, "A service name is 1 to 26 letters, digits, '_' and '-'")
    if not isinstance(spec, dict):
        raise _bad(where, "A service is an object: {type, file, trigger, debounce}")
    unknown = sorted(set(spec) - SERVICE_KEYS)
    if unknown:
        raise _bad(
            f"{where}.{unknown[0]}", "Unknown field (a service has type, file, trigger, debounce)"
        )
    kind = spec.get("type")
    if kind not in SERVICE_TYPES:
        raise _bad(f"{where}.type", f"The type is one of {', '.join(SERVICE_TYPES)}")
    file = _relative(spec.get("file"), f"{where}.file")
    trigger = spec.get("trigger")
    if not isinstance(trigger, str) or not trigger.strip():
        raise _bad(
            f"{where}.trigger", "A trigger is a string such as '@event io.cozy.files:CREATED'"
        )
    trigger_type, arguments = parse_trigger(trigger, f"{where}.trigger")
    debounce = spec.get("debounce")
    if debounce is not None:
        if not isinstance(debounce, str):
            raise _bad(f"{where}.debounce", "A debounce is a duration such as '5s' or '3m'")
        if trigger_type not in ("@event", "@webhook"):
            raise _bad(f"{where}.debounce", "Only @event and @webhook services can be debounced")
        try:
            parse_debounce(debounce)
        except ValidationErrors as e:
            raise _bad(f"{where}.debounce", e.errors[0][1]) from None
    return Service(name, kind, file, trigger_type, arguments, trigger, debounce)


def _relative(file: Any, where: str) -> str:
    """A path inside the app: relative, normalised, never above the app's folder."""
    if not isinstance(file, str) or not file or "\0" in file or len(file) > 1024:
        raise _bad(where, "A file is a path relative to the app's folder")
    norm = posixpath.normpath(file)
    if file.startswith("/") or norm == "." or norm.startswith("../") or norm == "..":
        raise _bad(where, f"{file!r} is not a path inside the app's folder")
    return norm


def parse_trigger(text: str, where: str) -> tuple[str, str]:
    """cozy's trigger string as our trigger's type and arguments: ``@event RULES`` (cozy's
    doctypes named as our collections), ``@cron``, ``@every``, ``@at``, ``@in``,
    ``@hourly``.. ``@monthly``, ``@webhook``, ``@client`` and karajo's forms."""
    kind, _, arguments = text.strip().partition(" ")
    arguments = arguments.strip()
    if kind not in TYPES:
        raise _bad(where, f"Unknown trigger type {kind!r}: one of {', '.join(sorted(TYPES))}")
    if kind == "@event":
        if not arguments:
            raise _bad(where, "An @event trigger names what it listens to: '@event io.cozy.files'")
        arguments = " ".join(_collection_alias(rule) for rule in arguments.split())
    return kind, arguments


def _collection_alias(rule: str) -> str:
    collection, sep, rest = rule.partition(":")
    return COLLECTION_ALIASES.get(collection, collection) + sep + rest
