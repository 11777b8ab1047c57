"""Outgoing mail: the SMTP settings (namespace ``mail``) and ``send_mail``, whose failures say
whether a retry may help (transient) or not (permanent)."""

from __future__ import annotations

import asyncio
import errno
import logging
import mimetypes
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib

from middlewared.errors import CallError

log = logging.getLogger(__name__)

SECURITY = ("PLAIN", "STARTTLS", "TLS")
# An address as this server accepts it: no spaces, quotes, brackets or separators, so that
# it can never carry a second header or recipient.
EMAIL_PATTERN = r"^[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+$"
EMAIL: dict[str, Any] = {"type": "string", "maxLength": 254, "pattern": EMAIL_PATTERN}
OPTIONAL_EMAIL: dict[str, Any] = {"anyOf": [{"const": ""}, EMAIL]}

# The plugin settings of namespace ``mail`` (settings.update("mail", ...) or mail.update).
SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "host": {"type": "string", "maxLength": 253, "pattern": r"^[^\s/@]*$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "security": {"enum": list(SECURITY)},
        "username": {"type": "string", "maxLength": 1024},
        # Write-only: no read method ever returns it (settings.get leaves it out).
        "password": {"type": "string", "maxLength": 1024, "writeOnly": True},
        "from_email": OPTIONAL_EMAIL,
        "noreply_email": OPTIONAL_EMAIL,
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
        # PEM certificates to trust for the server instead of the system's store (a private
        # CA, or the server's own self-signed certificate); "" trusts the system's.
        "ca_certificate": {"type": "string", "maxLength": 1024 * 1024},
    },
    "additionalProperties": False,
}
SETTINGS_DEFAULTS: dict[str, Any] = {
    "host": "",
    "port": 25,
    "security": "PLAIN",
    "username": "",
    "password": "",
    "from_email": "",
    "noreply_email": "",
    "timeout": 60.0,
    "ca_certificate": "",
}

# Errnos of the failures worth a retry (RetryPolicy(errnos=TRANSIENT_ERRNOS)).
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.ECONNRESET})


class MailError(CallError):
    """The mail was not sent."""


class MailTransientError(MailError):
    """Not sent this time; the same mail may go through later (connection refused or lost,
    a timeout, a 4xx reply). Its errno is one of TRANSIENT_ERRNOS."""

    default_errno = errno.EAGAIN


class MailPermanentError(MailError):
    """Not sent, and sending it again will not help: a 5xx reply (the reason quotes it), a
    certificate that is not trusted, a server without STARTTLS, mail not configured."""

    default_errno = errno.EREMOTEIO


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int = 25
    security: str = "PLAIN"
    username: str = ""
    password: str = field(default="", repr=False)
    from_email: str = ""
    noreply_email: str = ""
    timeout: float = 60.0
    ca_certificate: str = field(default="", repr=False)
    # False: the server's certificate is not checked (karajo's smtp_insecure).
    verify: bool = True

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> MailSettings:
        known = {k: values[k] for k in SETTINGS_DEFAULTS if k in values}
        return cls(**{**SETTINGS_DEFAULTS, **known})

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes = field(repr=False)
    # "type/subtype"; guessed from the file name when empty.
    mime_type: str = ""


def check_ca_certificate(pem: str) -> str | None:
    """Why ``pem`` cannot serve as the trusted certificates, or None when it can."""
    if not pem:
        return None
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError, TypeError) as e:
        # TypeError: text that is not ASCII (found by the REST facade's schemathesis run).
        return f"Not PEM certificates: {e.__class__.__name__}"
    return None


def _tls_context(settings: MailSettings) -> ssl.SSLContext:
    if settings.ca_certificate:
        return ssl.create_default_context(cadata=settings.ca_certificate)
    context = ssl.create_default_context()
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _one_line(text: str) -> str:
    """A header value: line breaks would start a header of the sender's choosing."""
    return " ".join(text.splitlines())


def build_message(
    settings: MailSettings,
    *,
    to: Sequence[str],
    subject: str,
    body_text: str | None,
    body_html: str | None = None,
    reply_to: str | None = None,
    attachments: Sequence[Attachment] = (),
    sender: str | None = None,
) -> EmailMessage:
    sender = sender or settings.from_email
    msg = EmailMessage()
    msg["From"] = _one_line(sender)
    msg["To"] = ", ".join(_one_line(t) for t in to)
    msg["Subject"] = _one_line(subject)
    msg["Date"] = formatdate(localtime=True)
    # The sender's domain, not socket.getfqdn(): that can block on DNS.
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or "localhost")
    if reply_to:
        msg["Reply-To"] = _one_line(reply_to)
    # Both bodies: multipart/alternative, the plain one first (the last is the preferred).
    if body_text is not None:
        msg.set_content(body_text)
        if body_html is not None:
            msg.add_alternative(body_html, subtype="html")
    else:
        msg.set_content(body_html or "", subtype="html")
    for a in attachments:
        mime = a.mime_type or mimetypes.guess_type(a.filename)[0] or "application/octet-stream"
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(
            a.content, maintype=maintype, subtype=subtype or "octet-stream", filename=a.filename
        )
    return msg


async def send_mail(
    settings: MailSettings,
    *,
    to: Sequence[str],
    subject: str,
    body_text: str | None,
    body_html: str | None = None,
    reply_to: str | None = None,
    attachments: Sequence[Attachment] = (),
    sender: str | None = None,
) -> None:
    """Send one mail through the configured server (``sender`` defaults to ``from_email``).

    ``settings.timeout`` bounds the whole exchange. Raises MailTransientError or
    MailPermanentError with the reason (the server's reply when it gave one).
    """
    if not settings.host:
        raise MailPermanentError("Mail is not configured: set its host with mail.update")
    if not (sender or settings.from_email):
        raise MailPermanentError("Mail is not configured: set from_email with mail.update")
    if not to:
        raise MailPermanentError("The mail has no recipient", errno.EINVAL)
    msg = build_message(
        settings,
        to=to,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        reply_to=reply_to,
        attachments=attachments,
        sender=sender,
    )
    try:
        async with asyncio.timeout(settings.timeout):
            refused = await _deliver(settings, msg)
    except Exception as e:
        raise _classify(e, settings) from None
    if refused:
        # Some went out: a retry would send those again, so this is only reported.
        log.warning("mail via %s: some recipients were refused: %s", settings.where, refused)


async def _deliver(settings: MailSettings, msg: EmailMessage) -> dict[str, str]:
    context = None
    if settings.security != "PLAIN":
        context = await asyncio.to_thread(_tls_context, settings)
    client = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        timeout=settings.timeout,
        use_tls=settings.security == "TLS",
        start_tls=settings.security == "STARTTLS",
        tls_context=context,
    )
    async with client:
        if settings.username:
            await client.login(settings.username, settings.password)
        errors, _ = await client.send_message(msg)
    return {rcpt: f"{code} {text}" for rcpt, (code, text) in errors.items()}


def _classify(exc: Exception, settings: MailSettings) -> MailError:
    """The project's error for a failure of the exchange with ``settings.host``."""
    where = settings.where
    if _tls_failure(exc):
        return MailPermanentError(
            f"TLS with {where} failed: {_tls_failure(exc)} (trust its certificate with the "
            "ca_certificate setting)",
            errno.EPROTO,
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if all(400 <= c < 500 for c in codes):
            return MailTransientError(f"{where} refused the recipients for now: {replies}")
        return MailPermanentError(f"{where} refused the recipients: {replies}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = f"{exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            return MailTransientError(f"{where} answered {reply}")
        return MailPermanentError(f"{where} answered {reply}")
    if isinstance(exc, TimeoutError):
        return MailTransientError(
            f"{where} did not answer within {settings.timeout:g} s", errno.ETIMEDOUT
        )
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionRefusedError):
        return MailTransientError(f"Cannot connect to {where}: {exc}", errno.ECONNREFUSED)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return MailTransientError(f"{where} dropped the connection: {exc}", errno.ECONNRESET)
    if isinstance(exc, aiosmtplib.SMTPException):
        # Refusals of ours: no STARTTLS offered, no AUTH mechanism in common...
        return MailPermanentError(f"{where}: {exc}")
    if isinstance(exc, OSError):
        return MailTransientError(f"Cannot reach {where}: {exc}", errno.ECONNREFUSED)
    return MailPermanentError(f"Mail via {where} failed: {exc.__class__.__name__}: {exc}")


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS error somewhere in ``exc``'s chain (a verification failure is permanent)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
