"""mail.*: the outgoing mail server's settings, read and changed by administrators (the
password is write-only: no method returns it), and ``mail.send``, cozy's sendmail worker."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import ValidationErrors
from middlewared.jobs.job import Job
from middlewared.mail import (
    SETTINGS_DEFAULTS,
    SETTINGS_SCHEMA,
    TRANSIENT_ERRNOS,
    Attachment,
    MailSettings,
    check_ca_certificate,
    send_mail,
)
from middlewared.registry import Access, JobOptions, Param, Registry, RetryPolicy
from middlewared.roots import Location, Roots

from . import mailsend

log = logging.getLogger(__name__)

registry = Registry("mail", "Outgoing mail (SMTP)", trusted=True)
registry.declare_settings(SETTINGS_SCHEMA, SETTINGS_DEFAULTS)

CONFIG: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{k: v for k, v in SETTINGS_SCHEMA["properties"].items() if k != "password"},
        "password_set": {"type": "boolean"},
    },
}


def _shown(settings: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in settings.items() if k != "password"}
    shown["password_set"] = bool(settings.get("password"))
    return shown


@registry.method(returns=CONFIG, access=Access.ADMIN)
async def config(ctx: CallContext) -> dict[str, Any]:
    """The SMTP settings: ``host``, ``port``, ``security`` (``PLAIN``, ``STARTTLS`` or
    ``TLS``), ``username``, ``from_email``, ``noreply_email``, ``timeout`` (seconds the
    whole exchange may take), ``ca_certificate`` (PEM certificates trusted for the server
    instead of the system's), and ``password_set`` in place of the password."""
    return _shown(ctx.settings())


@registry.method(
    params=[Param("changes", SETTINGS_SCHEMA, secret=True)],
    returns=CONFIG,
    access=Access.ADMIN,
)
async def update(ctx: CallContext, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some SMTP settings (``password: ""`` removes the password); answers as
    ``mail.config``. Kept in the store and carried by ``config.save``."""
    why = check_ca_certificate(changes.get("ca_certificate", ""))
    if why:
        raise ValidationErrors([("ca_certificate", why, errno.EINVAL)])
    return _shown(await ctx.app.set_settings("mail", changes))


def _read_attachment(where: Location, limit: int) -> bytes:
    with where.open_read() as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValidationErrors(
            [(where.field, f"The file is larger than {limit} bytes", errno.EFBIG)]
        )
    return data


async def _attachments(ctx: CallContext, job: Job, given: list[dict[str, Any]]) -> list[Attachment]:
    """The attachments' bytes: content decoded, paths read through the roots' confinement."""
    roots = Roots(ctx.config.roots)
    found: list[Attachment] = []
    for i, a in enumerate(given):
        if "content" in a:
            found.append(mailsend.decode_content(i, a))
        else:
            where = roots.locate(f"options.attachments.{i}.path", a["path"])
            left = mailsend.MAX_ATTACHMENTS_BYTES - sum(len(x.content) for x in found)
            data = await asyncio.to_thread(_read_attachment, where, max(left, 0))
            found.append(Attachment(a.get("filename") or where.name, data))
        job.set_progress(40 * (i + 1) / len(given), f"Read attachment {i + 1} of {len(given)}")
    mailsend.check_size(found)
    return found


async def _caller(ctx: CallContext) -> mailsend.Caller:
    creds = ctx.user
    if creds.user_id is None:
        return mailsend.Caller(creds.username, "", "")
    user = await ctx.call_as_server("user.query", [["id", "=", creds.user_id]], {"get": True})
    return mailsend.Caller(user["username"], user["full_name"], user["email"])


@registry.method(
    params=[Param("options", mailsend.OPTIONS, redact=mailsend.shown)],
    returns={"type": "null"},
    job=JobOptions(
        logs=True,
        description=lambda args: f"Mail ({args[0]['mode']}): {args[0]['subject']}",
        # Transient failures (connection refused, 4xx): again after 1, 2, 4, 8 s +-10 %.
        retry=RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0, errnos=TRANSIENT_ERRNOS),
    ),
)
async def send(ctx: CallContext, job: Job, options: dict[str, Any]) -> None:
    """Send a mail, as cozy's sendmail worker: ``mode`` ``noreply`` writes to the caller's own
    ``email`` (user.update sets it) from ``noreply_email`` (``from_email`` when unset);
    ``from`` writes to ``to`` from ``from_email`` in the caller's name with ``Reply-To`` the
    caller's email. ``parts``: ``text/plain`` and/or ``text/html`` (both: multipart/
    alternative). ``attachments``: ``{filename, content}`` (base64) or ``{path}`` (a file
    under the roots; ``filename`` defaults to its name). A connection refused or a 4xx reply
    is retried with exponential backoff (5 attempts); a 5xx fails at once with the reply."""
    settings = ctx.settings()
    caller = await _caller(ctx)
    # Checked before the attachments are read: a refusal costs nothing.
    mailsend.compose(options, caller, settings)
    attachments = await _attachments(ctx, job, options.get("attachments", []))
    mail = mailsend.compose(options, caller, settings, attachments)
    smtp = MailSettings.from_settings(settings)
    job.set_progress(50, f"Sending to {len(mail.to)} recipient(s) via {smtp.where}")
    job.log(f"attempt {job.attempt}: to {', '.join(mail.to)} via {smtp.where}")
    await send_mail(
        smtp,
        to=mail.to,
        subject=mail.subject,
        body_text=mail.body_text,
        body_html=mail.body_html,
        reply_to=mail.reply_to,
        attachments=mail.attachments,
        sender=mail.sender,
    )
    log.info("job %s: mail (%s) sent to %d recipient(s)", job.id, options["mode"], len(mail.to))
    job.set_progress(100, "Sent")
