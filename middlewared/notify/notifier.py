"""A notifier as stored and as shown: its schema, its checks, its row and its record (which
never carries the webhook secret)."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from middlewared import jsonc
from middlewared.errors import ValidationErrors
from middlewared.mail import EMAIL

KINDS = ("mail", "webhook")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"
# Short secrets are guessable offline from one signed request.
MIN_SECRET = 16

_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "pattern": NAME_PATTERN},
    "kind": {"enum": list(KINDS)},
    "to": {"type": "array", "items": EMAIL, "maxItems": 100},
    "url": {"type": ["string", "null"], "maxLength": 2048},
    "secret": {
        "type": ["string", "null"],
        "minLength": MIN_SECRET,
        "maxLength": 1024,
        "writeOnly": True,
    },
}
CREATE: dict[str, Any] = {
    "type": "object",
    "properties": _FIELDS,
    "required": ["name", "kind"],
    "additionalProperties": False,
}
UPDATE: dict[str, Any] = {"type": "object", "properties": _FIELDS, "additionalProperties": False}


@dataclass(frozen=True)
class Notifier:
    id: int
    name: str
    kind: str
    to: tuple[str, ...] = ()
    url: str | None = None
    secret: str | None = field(default=None, repr=False)
    created: int = 0

    def record(self) -> dict[str, Any]:
        """What ``notifier.query`` shows: everything but the secret."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "to": list(self.to),
            "url": self.url,
            "secret_set": bool(self.secret),
            "created": {"$date": self.created},
        }

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "recipients": jsonc.dumps(list(self.to)),
            "url": self.url,
            "secret": self.secret,
            "created": self.created,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Notifier:
        return cls(
            id=row["id"],
            name=row["name"],
            kind=row["kind"],
            to=tuple(jsonc.loads(row["recipients"])),
            url=row["url"],
            secret=row["secret"],
            created=row["created"],
        )

    def with_changes(self, data: dict[str, Any]) -> Notifier:
        """This notifier with ``data`` applied (a secret left out or null is kept)."""
        fields: dict[str, Any] = {k: data[k] for k in ("name", "kind", "url") if k in data}
        if "to" in data:
            fields["to"] = tuple(data["to"])
        if data.get("secret"):
            fields["secret"] = data["secret"]
        return replace(self, **fields)


def check(notifier: Notifier) -> None:
    """What each kind needs: a mail notifier its recipients, a webhook an http(s) URL and a
    secret to sign with. Raises ValidationErrors naming the field."""
    errors = ValidationErrors()
    if notifier.kind == "mail" and not notifier.to:
        errors.add("to", "A mail notifier needs at least one recipient")
    if notifier.kind == "webhook":
        why = url_problem(notifier.url)
        if why:
            errors.add("url", why)
        if not notifier.secret:
            errors.add("secret", "A webhook notifier needs a secret to sign its requests")
    if errors:
        raise errors


def url_problem(url: str | None) -> str | None:
    if not url:
        return "A webhook notifier needs a URL"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return "Not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "The URL must be http:// or https:// with a host"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "The URL must not contain spaces or control characters"
    return None


def safe_url(url: str | None) -> str:
    """The URL for a log line: scheme, host and port only (paths and queries of webhook URLs
    often embed a token)."""
    if not url:
        return "-"
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def unique_name(current: dict[int, Notifier], name: str, own_id: int | None) -> None:
    for other in current.values():
        if other.name == name and other.id != own_id:
            raise ValidationErrors(
                [("name", f"A notifier named {name!r} exists already", errno.EEXIST)]
            )
