"""HTTP refusals that always carry a JSON body saying why."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from middlewared import jsonc


def error_body(status: int, reason: str, **extra: Any) -> str:
    return jsonc.dumps({"error": reason, "status": status, **extra})


def http_error(
    cls: type[web.HTTPException], reason: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.HTTPException:
    body = error_body(cls.status_code, reason, **extra)
    return cls(text=body, content_type="application/json", headers=headers)


class PayloadTooLarge(web.HTTPClientError):
    """413 without aiohttp's size arguments: the JSON body says the limit."""

    status_code = 413


class PartsOutOfOrder(web.HTTPClientError):
    """405 as TrueNAS answers upload parts in the wrong order (no Allow header applies)."""

    status_code = 405
