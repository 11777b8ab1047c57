"""mail.send's pure parts: its options' schema, and the mail they make for a given caller and
settings (who it goes to, from whom, which parts), refused with a reason when they cannot."""

from __future__ import annotations

import base64
import binascii
import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any

from middlewared.errors import ValidationErrors
from middlewared.mail import EMAIL, Attachment, MailPermanentError

# The most a mail may carry in attachments, decoded (most servers refuse past 25 MB).
MAX_ATTACHMENTS_BYTES = 20 * 1024 * 1024
MAX_RECIPIENTS = 100

RECIPIENT: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 200}, "email": EMAIL},
    "required": ["email"],
    "additionalProperties": False,
}
PART: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"enum": ["text/plain", "text/html"]},
        "body": {"type": "string", "maxLength": 5 * 1024 * 1024},
    },
    "required": ["type", "body"],
    "additionalProperties": False,
}
ATTACHMENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "filename": {"type": "string", "minLength": 1, "maxLength": 255},
        "content": {"type": "string", "description": "the file's bytes, base64"},
        "path": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4096,
            "description": "a file under the roots instead of content (no symlink followed)",
        },
    },
    "oneOf": [{"required": ["content", "filename"]}, {"required": ["path"]}],
    "additionalProperties": False,
}
OPTIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "mode": {
            "enum": ["noreply", "from"],
            "description": "noreply: to the caller's own email, from the no-reply address; "
            "from: to ``to``, from the configured address in the caller's name, Reply-To "
            "the caller's email",
        },
        "to": {"type": "array", "items": RECIPIENT, "maxItems": MAX_RECIPIENTS},
        "subject": {"type": "string", "maxLength": 998},
        "parts": {"type": "array", "items": PART, "minItems": 1, "maxItems": 2},
        "attachments": {"type": "array", "items": ATTACHMENT, "maxItems": 100},
    },
    "required": ["mode", "subject", "parts"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Caller:
    """Who asks for the mail, as the user directory has them."""

    username: str
    full_name: str
    email: str

    @property
    def name(self) -> str:
        return self.full_name or self.username


@dataclass(frozen=True)
class Outgoing:
    """The mail to send: addresses as header values, the parts, the attachments."""

    sender: str
    to: tuple[str, ...]
    subject: str
    body_text: str | None
    body_html: str | None
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = field(default=(), repr=False)


def _address(name: str, email: str) -> str:
    """``Name <email>`` quoted as needed; a line break in the name cannot start a header."""
    user, _, domain = email.rpartition("@")
    return str(Address(" ".join(name.splitlines()), user, domain))


def shown(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as job records show them: attachments by name and size, not content."""
    attachments = [
        {k: v for k, v in a.items() if k != "content"}
        | ({"content_length": len(a["content"])} if "content" in a else {})
        for a in options.get("attachments", [])
    ]
    return {**options, "attachments": attachments} if "attachments" in options else dict(options)


def decode_content(index: int, attachment: Mapping[str, Any]) -> Attachment:
    """An attachment given by content (base64); refused when that is not base64."""
    try:
        data = base64.b64decode(attachment["content"], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationErrors(
            [(f"options.attachments.{index}.content", "Not base64", errno.EINVAL)]
        ) from None
    return Attachment(attachment["filename"], data)


def check_size(attachments: Sequence[Attachment]) -> None:
    total = sum(len(a.content) for a in attachments)
    if total > MAX_ATTACHMENTS_BYTES:
        raise ValidationErrors(
            [
                (
                    "options.attachments",
                    f"Attachments take {total} bytes, more than {MAX_ATTACHMENTS_BYTES}",
                    errno.EFBIG,
                )
            ]
        )


def _parts(parts: Sequence[Mapping[str, str]]) -> tuple[str | None, str | None]:
    bodies: dict[str, str] = {}
    for p in parts:
        if p["type"] in bodies:
            raise ValidationErrors(
                [("options.parts", f"Two parts of type {p['type']}", errno.EINVAL)]
            )
        bodies[p["type"]] = p["body"]
    return bodies.get("text/plain"), bodies.get("text/html")


def compose(
    options: Mapping[str, Any],
    caller: Caller,
    settings: Mapping[str, Any],
    attachments: Sequence[Attachment] = (),
) -> Outgoing:
    """The mail ``options`` ask for, sent by ``caller`` with the SMTP ``settings``."""
    text, html = _parts(options["parts"])
    server_address = settings.get("from_email", "")
    if not (settings.get("host") and server_address):
        raise MailPermanentError("Mail is not configured: set host and from_email with mail.update")
    if options["mode"] == "noreply":
        if options.get("to"):
            raise ValidationErrors(
                [("options.to", "noreply mode writes to the caller's own email", errno.EINVAL)]
            )
        if not caller.email:
            raise ValidationErrors(
                [
                    (
                        "options.mode",
                        f"User {caller.username!r} has no email for noreply mode (set it "
                        "with user.update)",
                        errno.EINVAL,
                    )
                ]
            )
        # No no-reply address configured: the server's own address serves.
        sender = _address("", settings.get("noreply_email") or server_address)
        to: tuple[str, ...] = (_address(caller.name, caller.email),)
        reply_to = None
    else:
        if not options.get("to"):
            raise ValidationErrors([("options.to", "from mode needs recipients", errno.EINVAL)])
        if not caller.email:
            raise ValidationErrors(
                [
                    (
                        "options.mode",
                        f"User {caller.username!r} has no email for the Reply-To of from "
                        "mode (set it with user.update)",
                        errno.EINVAL,
                    )
                ]
            )
        sender = _address(caller.name, server_address)
        to = tuple(_address(r.get("name", ""), r["email"]) for r in options["to"])
        reply_to = _address(caller.name, caller.email)
    return Outgoing(
        sender=sender,
        to=to,
        subject=options["subject"],
        body_text=text,
        body_html=html,
        reply_to=reply_to,
        attachments=tuple(attachments),
    )
