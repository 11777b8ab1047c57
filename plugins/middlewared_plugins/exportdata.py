"""What data.export reads (through the query methods, as the caller may see it, secrets
masked once more) and the mail with the links it sends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.headerregistry import Address
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import MiddlewareError
from middlewared.hooks.redact import shown_result
from middlewared.mail import MailSettings, send_mail

from .exportparts import scrub

# Jobs read per query, and at most in one export (the newest first).
JOBS_PAGE = 1000
MAX_JOBS = 100_000


async def gather(
    ctx: CallContext, collections: Sequence[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each collection's records, as the caller may see them; and why some are left out."""
    data: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for name in collections:
        try:
            data[name] = scrub(await _READERS[name](ctx))
        except MiddlewareError as e:
            # Not granted by the caller's allow-list (triggers): what they cannot see.
            notes[name] = f"left out: {e}"
    return data, notes


async def _jobs(ctx: CallContext) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    while len(jobs) < MAX_JOBS:
        page = await ctx.call(
            "core.get_jobs", [], {"order_by": ["-id"], "offset": len(jobs), "limit": JOBS_PAGE}
        )
        jobs.extend(_without_secret_results(ctx, page))
        if len(page) < JOBS_PAGE:
            break
    return jobs


def _without_secret_results(ctx: CallContext, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results as hook scripts see them: what the returns schema marks writeOnly (a
    download URL's token, a new key) hidden."""
    methods = ctx.app.calls.methods  # type: ignore[attr-defined]
    shown = []
    for record in page:
        spec = methods.lookup(record["method"])
        returns = spec.returns if spec is not None else {"writeOnly": True}
        shown.append({**record, "result": shown_result(record["result"], returns)})
    return shown


async def _users(ctx: CallContext) -> list[dict[str, Any]]:
    if ctx.user.full_admin:
        users: list[dict[str, Any]] = await ctx.call_as_server("user.query", [], {})
        return users
    if ctx.user.user_id is None:
        return []
    mine: list[dict[str, Any]] = await ctx.call_as_server(
        "user.query", [["id", "=", ctx.user.user_id]], {}
    )
    return mine


async def _triggers(ctx: CallContext) -> list[dict[str, Any]]:
    triggers: list[dict[str, Any]] = await ctx.call("trigger.query", [], {})
    return triggers


async def _commands(ctx: CallContext) -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = await ctx.call("command.query", [], {})
    return commands


async def _settings(ctx: CallContext) -> dict[str, Any]:
    """Every namespace's settings as settings.get shows them (write-only ones left out)."""
    schemas: dict[str, Any] = await ctx.call("settings.schemas")
    return {ns: await ctx.call("settings.get", ns) for ns in sorted(schemas)}


_READERS = {
    "jobs": _jobs,
    "users": _users,
    "triggers": _triggers,
    "commands": _commands,
    "settings": _settings,
}


def manifest(
    username: str,
    collections: Sequence[str],
    with_files: bool,
    notes: Mapping[str, str],
    skipped: Sequence[str],
) -> dict[str, Any]:
    return {
        "format": "middlewared data.export 1",
        "by": username,
        "collections": list(collections),
        "files": with_files,
        "notes": dict(notes),
        "files_left_out": list(skipped),
    }


async def caller_email(ctx: CallContext) -> str:
    if ctx.user.user_id is None:
        return ""
    found = await ctx.call_as_server("user.query", [["id", "=", ctx.user.user_id]], {})
    return str(found[0].get("email") or "") if found else ""


async def send_links(
    settings: Mapping[str, Any], email: str, base: str, result: Mapping[str, Any]
) -> None:
    """The mail cozy sends at the end of an export: where to download each part."""
    links = [f"{base}{p['url']}" for p in result["parts"]]
    lines = [
        "Your data export is ready. Download each part (a zip of its own) before it "
        "expires; each link is yours alone:",
        "",
        *(
            f"Part {n} ({p['size']} bytes): {link}"
            for n, (p, link) in enumerate(zip(result["parts"], links, strict=True), 1)
        ),
    ]
    user, _, domain = email.rpartition("@")
    sender = settings.get("noreply_email") or settings["from_email"]
    await send_mail(
        MailSettings.from_settings(settings),
        to=[str(Address("", user, domain))],
        subject="Your data export is ready",
        body_text="\n".join(lines) + "\n",
        sender=sender,
    )
