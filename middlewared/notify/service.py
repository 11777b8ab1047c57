"""Notifiers: what the trigger engine (and commands) call on a job's end. Each named notifier
is told once; a failure is logged with its name and never reaches the caller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from middlewared.config import NotifyLimits
from middlewared.mail import MailError, MailSettings, MailTransientError, send_mail
from middlewared.notify.book import NotifierBook
from middlewared.notify.deliver import (
    DeliveryError,
    log_tail,
    mail_body,
    mail_subject,
    post_webhook,
)
from middlewared.notify.notifier import Notifier, safe_url, smtp_settings
from middlewared.store.base import Store

log = logging.getLogger(__name__)

# Seconds a mail through a notifier's own SMTP server may take (the ``mail`` default).
SMTP_TIMEOUT = 60.0
# Returns the ``mail`` settings (raises when mail is not available).
MailSettingsSource = Callable[[], Mapping[str, Any]]


class Notifiers:
    def __init__(self, store: Store, mail_settings: MailSettingsSource, limits: NotifyLimits):
        self.book = NotifierBook(store, limits.max_notifiers)
        self.limits = limits
        self._mail_settings = mail_settings
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._pending: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    # -- what the trigger engine calls ----------------------------------------------------
    async def notify(
        self,
        names: Sequence[str],
        *,
        job: Mapping[str, Any],
        counter: int,
        subject_name: str,
        log_text: str,
    ) -> None:
        """Tell each notifier in ``names`` that ``job`` (its record) ended: a mail with
        subject ``<subject_name>: #<counter>: <STATE>`` and the job's log as body, or a POST
        of the record signed in ``X-Middlewared-Sign``. Returns once every delivery ended;
        never raises (a notifier must not fail a job)."""
        try:
            found = await self.book.by_name()
        except Exception:
            log.exception("notify: cannot read the notifiers (job %s)", job.get("id"))
            return
        targets = []
        for name in dict.fromkeys(names):
            notifier = found.get(name)
            if notifier is None:
                log.warning("notify: no notifier named %r (job %s)", name, job.get("id"))
            else:
                targets.append(notifier)
        subject = mail_subject(subject_name, counter, job)
        body = mail_body(job, log_text, self.limits.max_log_bytes) if targets else ""
        await asyncio.gather(*(self._deliver(n, job, subject, body) for n in targets))

    def notify_soon(
        self,
        names: Sequence[str],
        *,
        job: Mapping[str, Any],
        counter: int,
        subject_name: str,
        log_text: str,
    ) -> bool:
        """``notify`` in the background, for a caller that must not wait. False (and a log
        line) when ``--max-pending-notifications`` are already waiting: it is dropped."""
        if not names:
            return True
        if len(self._pending) >= self.limits.max_pending:
            log.warning(
                "notify: %d notifications pending; the one for job %s is dropped",
                len(self._pending),
                job.get("id"),
            )
            return False
        task = asyncio.create_task(
            self.notify(
                names, job=job, counter=counter, subject_name=subject_name, log_text=log_text
            ),
            name=f"notify-{job.get('id')}",
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def read_log(self, path: Path | str | None) -> str:
        """The tail of a job's log file that a mail would carry ("" when there is none)."""
        if not path:
            return ""
        return await asyncio.to_thread(_tail, Path(path), self.limits.max_log_bytes)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def close(self, grace: float) -> None:
        """Let pending notifications finish for up to ``grace`` seconds, then drop them."""
        if self._pending:
            _, late = await asyncio.wait(set(self._pending), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("notify: %d notifications dropped at shutdown", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- one delivery -----------------------------------------------------------------------
    async def _deliver(
        self, notifier: Notifier, job: Mapping[str, Any], subject: str, body: str
    ) -> None:
        job_id = job.get("id")
        try:
            async with self._slots:
                if notifier.kind == "mail":
                    await self._mail(notifier, subject, body)
                else:
                    await self._webhook(notifier, job)
        except MailError as e:
            kind = "transient" if isinstance(e, MailTransientError) else "permanent"
            self._failed(notifier, job_id, f"{kind} failure: {e}")
        except DeliveryError as e:
            self._failed(notifier, job_id, str(e))
        except Exception:
            log.exception("notifier %s: delivery for job %s failed", notifier.name, job_id)
        else:
            log.info("notifier %s: told of job %s (%s)", notifier.name, job_id, notifier.kind)

    @staticmethod
    def _failed(notifier: Notifier, job_id: Any, reason: str) -> None:
        where = safe_url(notifier.url) if notifier.kind == "webhook" else "mail"
        log.warning(
            "notifier %s (%s): job %s not delivered: %s", notifier.name, where, job_id, reason
        )

    async def _mail(self, notifier: Notifier, subject: str, body: str) -> None:
        try:
            if notifier.smtp is not None:
                settings = smtp_settings(notifier.smtp, SMTP_TIMEOUT)
            else:
                settings = MailSettings.from_settings(self._mail_settings())
        except Exception as e:
            raise DeliveryError(f"mail is not available: {e}") from None
        await send_mail(settings, to=notifier.to, subject=subject, body_text=body)

    async def _webhook(self, notifier: Notifier, job: Mapping[str, Any]) -> None:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limits.concurrency)
            )
        await post_webhook(self._http, notifier, job, self.limits.timeout_seconds)


def _tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            start = f.seek(max(0, size - limit))
            return log_tail(f.read(), limit, start)
    except FileNotFoundError:
        return ""
