"""Telling one notifier of a job's end: a mail (karajo's form) or a signed webhook POST."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import aiohttp

from middlewared import __version__, jsonc
from middlewared.notify.notifier import Notifier

SIGN_HEADER = "X-Middlewared-Sign"


class DeliveryError(Exception):
    """A notification did not reach its destination; the message says why (no secret)."""


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: what ``X-Middlewared-Sign`` carries."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def mail_subject(subject_name: str, counter: int, job: Mapping[str, Any]) -> str:
    return f"{subject_name}: #{counter}: {job.get('state')}"


def mail_body(job: Mapping[str, Any], log_text: str, max_bytes: int) -> str:
    """The job's log (its last ``max_bytes``), or a summary when it wrote none."""
    if not log_text:
        lines = [f"Job #{job.get('id')} {job.get('method')} ended {job.get('state')}."]
        if job.get("error"):
            lines.append(f"Error: {job['error']}")
        return "\n".join(lines) + "\n"
    return log_tail(log_text.encode("utf-8", "surrogateescape"), max_bytes)


def log_tail(data: bytes, limit: int, skipped: int = 0) -> str:
    """The end of a log in at most ``limit`` bytes, saying how much was left out before it
    (``skipped``: bytes already left out before ``data``)."""
    if not skipped and len(data) <= limit:
        return data.decode("utf-8", "replace")
    # Room for the note, whose digits do not change by what they count here.
    note = "[{} earlier bytes of the log left out]\n"
    keep = max(0, limit - len(note.format(skipped + len(data))))
    tail = data[len(data) - keep :]
    return note.format(skipped + len(data) - len(tail)) + tail.decode("utf-8", "replace")


async def post_webhook(
    session: aiohttp.ClientSession, notifier: Notifier, job: Mapping[str, Any], timeout: float
) -> None:
    """POST the job record as JSON, signed with the notifier's secret; a 2xx is success.
    Redirects are not followed (the signature is for the URL the admin gave)."""
    assert notifier.url is not None and notifier.secret is not None
    body = jsonc.dumps(job).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"middlewared/{__version__}",
        SIGN_HEADER: sign(notifier.secret, body),
    }
    try:
        async with session.post(
            notifier.url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            status = response.status
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    except aiohttp.ClientConnectorError as e:
        raise DeliveryError(f"cannot connect: {e.os_error}") from None
    except aiohttp.ClientError as e:
        # Only the class: some aiohttp errors quote the URL, which may embed a token.
        raise DeliveryError(f"request failed: {e.__class__.__name__}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"answered HTTP {status}")
