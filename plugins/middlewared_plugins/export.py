"""data.export: cozy-stack's export worker. A zip of the server's data in parts, each
downloadable with a token of its own until ``max_age``, mailed to the caller when mail is
configured."""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middlewared import jsonc
from middlewared.context import CallContext
from middlewared.errors import CallError, MiddlewareError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.registry import JobOptions, Param, Registry
from middlewared.routes import HttpRequest, HttpResponse, Route

from . import exportdata, exportparts
from .blocking import run_blocking
from .exportstore import Export, ExportStore, Part
from .exportwrite import Entry, PartWriter, file_entries, split

log = logging.getLogger(__name__)

registry = Registry("data", "cozy-stack's export worker", trusted=True)

ROUTE = "/_download/export/{export_id}/{part}"
RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "export_id": {"type": "string"},
        "parts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    # writeOnly: the URL holds a token, the caller's alone.
                    "url": {"type": "string", "writeOnly": True},
                    "size": {"type": "integer"},
                    "sha256": {"type": "string"},
                },
            },
        },
        "expires": {"type": "object", "properties": {"$date": {"type": "integer"}}},
    },
}


@dataclass
class _State:
    app: Any
    store: ExportStore
    folder: Path
    timer: asyncio.TimerHandle | None = None
    removing: set[asyncio.Task[None]] = field(default_factory=set)

    def remove(self, gone: list[Export]) -> None:
        """Files and tokens of exports the store let go of."""
        for export in gone:
            for part in export.parts:
                self.app.tokens.revoke(part.token)
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(shutil.rmtree, export.folder, True)
            )
            self.removing.add(task)
            task.add_done_callback(self.removing.discard)
            log.info("data.export %s removed (%d parts)", export.export_id, len(export.parts))
        self.schedule()

    def schedule(self) -> None:
        """A timer for the next export to expire."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        due = self.store.next_expiry()
        if due is not None:
            delay = max(0.0, due - self.store.clock())
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(delay, lambda: self.remove(self.store.expire_due()))


_states: dict[int, _State] = {}


@registry.lifespan
async def _exports(app: Any) -> AsyncIterator[None]:
    # Exports live in memory: what a previous run left on disk has no token any more.
    folder = app.config.data_dir / "exports"
    await asyncio.to_thread(shutil.rmtree, folder, True)
    await asyncio.to_thread(folder.mkdir, 0o700, True, True)
    state = _State(app, ExportStore(exportparts.MAX_EXPORTS_PER_USER), folder)
    _states[id(app)] = state
    app.add_route(Route("GET", ROUTE, handler=lambda r: _download(state, r)))
    try:
        yield
    finally:
        if state.timer is not None:
            state.timer.cancel()
        state.remove(state.store.drop_all())
        if state.timer is not None:
            state.timer.cancel()
        await asyncio.gather(*state.removing, return_exceptions=True)
        _states.pop(id(app), None)


def _refusal(status: int, reason: str) -> HttpResponse:
    return HttpResponse(status=status, json={"error": reason, "status": status})


async def _download(state: _State, request: HttpRequest) -> HttpResponse:
    """A part of an export, with its own token, until the export expires."""
    export_id = request.match["export_id"]
    export, gone = state.store.get(export_id)
    if export is None:
        if gone is not None:
            return _refusal(410, f"Export {export_id} is no longer available: {gone}")
        return _refusal(404, f"No export {export_id}")
    try:
        n = int(request.match["part"])
        part = export.parts[n - 1]
        if n < 1:
            raise IndexError(n)
    except (ValueError, IndexError):
        return _refusal(404, f"Export {export_id} has no part {request.match['part']}")
    token = state.app.tokens.peek(request.query.get("auth_token", ""))
    if token is None or token.purpose != _purpose(export_id, n):
        return _refusal(401, "Invalid download token for this part")
    if state.app.directory.resolve(token.identity) is None:
        return _refusal(401, "The credentials of this download were revoked")
    return HttpResponse(
        file=part.path,
        content_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="export-{export_id}-{n}.zip"',
        },
    )


def _purpose(export_id: str, n: int) -> str:
    return f"export:{export_id}:{n}"


def _check(ctx: CallContext, options: dict[str, Any]) -> tuple[list[str], bool]:
    """The collections to export and whether files go in; refused with reasons."""
    admin = ctx.user.full_admin
    asked = options.get("with_collections") or []
    refused = exportparts.refused_collections(asked, admin)
    if refused:
        raise ValidationErrors(
            [
                (
                    "options.with_collections",
                    f"Only administrators export {', '.join(refused)}",
                    errno.EPERM,
                )
            ]
        )
    if not admin and options.get("without_files") is False:
        raise ValidationErrors(
            [("options.without_files", "Only administrators export files", errno.EPERM)]
        )
    return exportparts.collections_for(asked, admin), admin and not options.get("without_files")


def _bounded(entries: list[Entry], parts: list[list[Entry]], folder: Path) -> None:
    total = sum(e.size for e in entries)
    if total > exportparts.MAX_TOTAL_BYTES:
        raise CallError(
            f"The export would hold {total} bytes, more than {exportparts.MAX_TOTAL_BYTES}: "
            "use without_files or with_collections",
            errno.EFBIG,
        )
    if len(parts) > exportparts.MAX_PARTS:
        raise CallError(
            f"The export would take {len(parts)} parts, more than {exportparts.MAX_PARTS}: "
            "give a larger parts_size",
            errno.EFBIG,
        )
    free = shutil.disk_usage(folder).free
    if total > free:
        raise CallError(f"The export needs up to {total} bytes; {free} are free", errno.ENOSPC)


@registry.method(
    params=[Param("options", exportparts.OPTIONS, required=False, default={})],
    returns=RESULT,
    job=JobOptions(
        logs=True,
        abortable=True,
        timeout=3600.0,
        description="Export the server's data",
    ),
)
async def export(ctx: CallContext, job: Job, options: dict[str, Any]) -> dict[str, Any]:
    """Export the server's data as cozy's export worker: ``jobs``, ``users`` (no secret),
    ``triggers``, ``commands`` and ``settings`` as JSON, and the files under the roots
    (``files/<root>/...``, symlinks left out) unless ``without_files``; ``with_collections``
    narrows the data (empty: all). Administrators export everything; anyone else exports
    what they may see (their jobs, their own user record, the triggers their allow-list
    shows them) and never files, commands nor settings. Secrets (password hashes, keys,
    tokens, SCRAM and two-factor material, SMTP and env secrets) never go in.

    The zip is split in parts, each a zip of its own no larger than ``parts_size`` (a file
    too large for one part has a part of its own). Each part downloads with a token of its
    own at its ``url`` (``GET``, Range supported) until ``max_age`` seconds have passed;
    then parts and tokens are removed. A user keeps at most 5 exports: a newer one removes
    the oldest. When mail is configured and the caller has an ``email``, the links are
    mailed to them."""
    state = _states[id(ctx.app)]
    collections, with_files = _check(ctx, options)
    parts_size = options.get("parts_size", exportparts.DEFAULT_PARTS_SIZE)
    max_age = options.get("max_age", exportparts.DEFAULT_MAX_AGE)
    job.set_progress(0, "Reading the data")
    data, notes = await exportdata.gather(ctx, collections)
    entries: list[Entry] = []
    skipped: list[str] = []
    if with_files:
        entries, skipped = await asyncio.to_thread(file_entries, ctx.config.roots)
    manifest = exportdata.manifest(ctx.user.username, collections, with_files, notes, skipped)
    entries[:0] = [Entry("manifest.json", jsonc.dumps(manifest).encode())] + [
        Entry(f"{name}.json", jsonc.dumps(value).encode()) for name, value in data.items()
    ]
    parts = split(entries, parts_size)
    await asyncio.to_thread(_bounded, entries, parts, state.folder)
    export_id = secrets.token_hex(8)
    folder = state.folder / export_id
    await asyncio.to_thread(folder.mkdir, 0o700)
    try:
        total = sum(e.size for e in entries)
        written = await run_blocking(
            job,
            total,
            "Exported",
            lambda p, s: PartWriter(folder, p, s).write_all(parts, parts_size),
        )
        expires = state.store.clock() + max_age
        record = Export(export_id, ctx.user.username, folder, expires)
        for n, w in enumerate(written, 1):
            token = state.app.tokens.issue(ctx.user, max_age, False, job.id, _purpose(export_id, n))
            record.parts.append(Part(w.path, w.size, w.sha256, token))
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise
    state.remove(state.store.add(record))
    result = _result(record)
    log.info(
        "data.export %s by %s: %d parts, %d bytes (job %d)",
        export_id,
        ctx.user.username,
        len(written),
        sum(w.size for w in written),
        job.id,
    )
    job.log(f"export {export_id}: {len(written)} part(s), expires in {max_age:g} s")
    await _mail(ctx, job, result)
    job.set_progress(100, f"Exported in {len(written)} part(s)")
    return result


def _result(record: Export) -> dict[str, Any]:
    return {
        "export_id": record.export_id,
        "parts": [
            {
                "url": f"/_download/export/{record.export_id}/{n}?auth_token={p.token}",
                "size": p.size,
                "sha256": p.sha256,
            }
            for n, p in enumerate(record.parts, 1)
        ],
        "expires": {"$date": int(record.expires * 1000)},
    }


async def _mail(ctx: CallContext, job: Job, result: dict[str, Any]) -> None:
    """The links to the caller, as cozy mails them; skipped with a log line when mail is not
    configured or the caller has no email; a failure to send does not undo the export."""
    settings = ctx.app.get_settings("mail")
    email = await exportdata.caller_email(ctx)
    if not (settings.get("host") and settings.get("from_email")) or not email:
        why = "mail is not configured" if email else f"{ctx.user.username} has no email"
        log.info("data.export %s: no mail sent (%s)", result["export_id"], why)
        job.log(f"no mail sent: {why}")
        return
    base = _base_url(ctx)
    try:
        await exportdata.send_links(settings, email, base, result)
    except MiddlewareError as e:
        log.warning("data.export %s: the mail to %s failed: %s", result["export_id"], email, e)
        job.log(f"the mail with the links failed: {e}")
        return
    job.log(f"links mailed to {email}")


def _base_url(ctx: CallContext) -> str:
    ws: str = ctx.app.ws_url  # type: ignore[attr-defined]
    scheme, _, rest = ws.partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest.removesuffix('/api/current')}"
