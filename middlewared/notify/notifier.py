"""A notifier as stored and as shown: its schema, its checks, its row and its record (which
never carries the webhook secret)."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from middlewared import jsonc
from middlewared.errors import ValidationErrors
from middlewared.mail import EMAIL, MailSettings

KINDS = ("mail", "webhook")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"
# Short secrets are guessable offline from one signed request.
MIN_SECRET = 16

# A notifier's own SMTP server (karajo's [notif] keys), instead of the ``mail`` settings:
# ``smtps://host[:port]`` is TLS from the first byte (port 465 by default), ``smtp://``
# upgrades with STARTTLS, which the server must offer (port 587 by default); ``insecure``
# skips the certificate check (karajo's smtp_insecure).
SMTP_SERVER = r"^smtps?://[^/\s@:]+(:[0-9]{1,5})?/?$"
SMTP: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "server": {"type": "string", "pattern": SMTP_SERVER, "maxLength": 300},
        "user": {"type": "string", "maxLength": 1024},
        "password": {"type": "string", "maxLength": 1024, "writeOnly": True},
        "from": EMAIL,
        "insecure": {"type": "boolean"},
    },
    "required": ["server", "from"],
    "additionalProperties": False,
}

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
    "smtp": SMTP,
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
    # Its own SMTP server (``SMTP``'s fields, the password included).
    smtp: dict[str, Any] | None = field(default=None, repr=False)
    # Where a file declares it (it is changed there, not through the API).
    declared: str | None = None

    def record(self) -> dict[str, Any]:
        """What ``notifier.query`` shows: everything but the secret and the SMTP password."""
        smtp = None
        if self.smtp is not None:
            smtp = {k: v for k, v in self.smtp.items() if k != "password"}
            smtp["password_set"] = bool(self.smtp.get("password"))
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "to": list(self.to),
            "url": self.url,
            "secret_set": bool(self.secret),
            "smtp": smtp,
            "created": {"$date": self.created},
            "declared": self.declared,
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
            "extra": jsonc.dumps({"smtp": self.smtp, "declared": self.declared}),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Notifier:
        extra = jsonc.loads(row.get("extra") or "{}")
        return cls(
            id=row["id"],
            name=row["name"],
            kind=row["kind"],
            to=tuple(jsonc.loads(row["recipients"])),
            url=row["url"],
            secret=row["secret"],
            created=row["created"],
            smtp=extra.get("smtp"),
            declared=extra.get("declared"),
        )

    def with_changes(self, data: dict[str, Any]) -> Notifier:
        """This notifier with ``data`` applied (a secret left out or null is kept)."""
        fields: dict[str, Any] = {k: data[k] for k in ("name", "kind", "url") if k in data}
        if "to" in data:
            fields["to"] = tuple(data["to"])
        if data.get("secret"):
            fields["secret"] = data["secret"]
        if "smtp" in data:
            smtp = data["smtp"]
            if smtp is not None and "password" not in smtp and self.smtp is not None:
                # Left out: the password it had stays (queries never show it).
                smtp = {**smtp, "password": self.smtp.get("password", "")}
            fields["smtp"] = None if smtp is None else dict(smtp)
        return replace(self, **fields)


def smtp_settings(smtp: dict[str, Any], timeout: float) -> MailSettings:
    """The mail settings of a notifier's own SMTP server."""
    parts = urlsplit(smtp["server"])
    tls = parts.scheme == "smtps"
    return MailSettings(
        host=parts.hostname or "",
        port=parts.port or (465 if tls else 587),
        security="TLS" if tls else "STARTTLS",
        username=smtp.get("user", ""),
        password=smtp.get("password", ""),
        from_email=smtp["from"],
        timeout=timeout,
        verify=not smtp.get("insecure", False),
    )


def check(notifier: Notifier) -> None:
    """What each kind needs: a mail notifier its recipients, a webhook an http(s) URL and a
    secret to sign with. Raises ValidationErrors naming the field."""
    errors = ValidationErrors()
    if notifier.kind == "mail" and not notifier.to:
        errors.add("to", "A mail notifier needs at least one recipient")
    if notifier.kind != "mail" and notifier.smtp is not None:
        errors.add("smtp", "Only a mail notifier has an SMTP server")
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
