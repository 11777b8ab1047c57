"""notifier.*: administrators keep the named notifiers that triggers and commands tell of a
job's end (PROTOCOL.md section 9)."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import CallError
from middlewared.notify.notifier import CREATE, UPDATE, Notifier
from middlewared.query import query
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of
from middlewared.services.schemas import QUERY_PARAMS

registry = Registry("notifier", "Notifiers: mail and signed webhooks told of a job's end")

NID = {"type": "integer", "minimum": 1}


@registry.lifespan
async def lifespan(app: Any) -> AsyncIterator[None]:
    yield
    # Left after the jobs ended: the notifications of the last ones still go out.
    await app.notifiers.close(app.config.shutdown_grace_seconds)


@registry.method(params=QUERY_PARAMS, access=Access.ADMIN, name="query")
async def query_notifiers(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query notifiers: ``{id, name, kind, to, url, secret_set, smtp, created, declared}``
    (a webhook's secret and an SMTP password are never shown)."""
    return query(await app_of(ctx).notifiers.book.records(), filters, options)


@registry.method(
    params=[Param("data", CREATE, secret=True)], returns={"type": "object"}, access=Access.ADMIN
)
async def create(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create a notifier: ``{"name", "kind": "mail", "to": [addresses]}`` (sent through the
    ``mail`` settings, or through its own ``smtp`` server: ``{"server":
    "smtps://host[:port]" (TLS) or "smtp://host[:port]" (STARTTLS), "user", "password",
    "from", "insecure"}``) or ``{"name", "kind": "webhook", "url", "secret"}`` (a POST of the job
    record, hex HMAC-SHA256 of the body with ``secret`` in ``X-Middlewared-Sign``)."""
    return (await app_of(ctx).notifiers.book.create(data)).record()


@registry.method(
    params=[Param("id", NID), Param("data", UPDATE, secret=True)],
    returns={"type": "object"},
    access=Access.ADMIN,
)
async def update(ctx: CallContext, nid: int, data: dict[str, Any]) -> dict[str, Any]:
    """Change a notifier; a secret (or SMTP password) left out is kept. One a file declares
    (karajo's [notif], jobs.d) is changed in that file: EPERM."""
    book = app_of(ctx).notifiers.book
    _changeable((await book.all()).get(nid))
    return (await book.update(nid, data)).record()


@registry.method(params=[Param("id", NID)], returns={"type": "boolean"}, access=Access.ADMIN)
async def delete(ctx: CallContext, nid: int) -> bool:
    """Delete a notifier; triggers that name it log that it is missing when they end. One a
    file declares is deleted from that file: EPERM."""
    book = app_of(ctx).notifiers.book
    _changeable((await book.all()).get(nid))
    await book.delete(nid)
    return True


def _changeable(notifier: Notifier | None) -> None:
    if notifier is not None and notifier.declared is not None:
        raise CallError(
            f"Notifier {notifier.id} ({notifier.name}) is declared in {notifier.declared}: "
            "change it there, then reload (SIGHUP)",
            errno.EPERM,
        )
