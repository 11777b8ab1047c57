"""http.request: karajo's HTTP job (PROTOCOL.md section 10) as an ordinary job. It adds
``_epoch`` to the query or body, signs what it sends with HMAC-SHA256 into ``header_sign``
when a secret is set, fails on an answer that is not 2xx, and logs the status and the
first 64 KiB of the answer. A periodic HTTP job is a trigger that starts it.

It makes the server send requests where it is told to, so it is for administrators (and
for the triggers they own)."""

from __future__ import annotations

import errno
import hashlib
import hmac
import ssl
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import yarl

from middlewared import jsonc
from middlewared.context import CallContext
from middlewared.errors import CallError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.registry import Access, JobOptions, Param, Registry
from middlewared.rpc.schema import REDACTED

registry = Registry("http", "HTTP jobs: requests the server makes, signed, as karajo's")

# Of the answer, what the job's log keeps.
LOGGED_BYTES = 64 * 1024
DEFAULT_HEADER_SIGN = "X-Karajo-Sign"
OPTIONS = {
    "type": "object",
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "DELETE"], "default": "GET"},
        "url": {"type": "string", "pattern": "^https?://[^/]", "maxLength": 4096},
        "request_type": {"enum": ["query", "form", "json"], "default": "query"},
        "headers": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+: ?.*$"},
            "maxItems": 64,
        },
        "params": {"type": "object"},
        "secret": {"type": ["string", "null"], "minLength": 1, "writeOnly": True},
        "header_sign": {"type": "string", "minLength": 1, "maxLength": 128},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        "insecure": {"type": "boolean"},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def _shown(options: Any) -> Any:
    """The options as the job's record shows them: the secret, header values (tokens,
    cookies) and the URL's password and query hidden."""
    if not isinstance(options, dict):
        return options
    shown = dict(options)
    if shown.get("secret"):
        shown["secret"] = REDACTED
    if isinstance(shown.get("headers"), list):
        shown["headers"] = [f"{_header(h)[0]}: {REDACTED}" for h in shown["headers"]]
    if isinstance(shown.get("url"), str):
        shown["url"] = _safe_url(shown["url"])
    return shown


def _safe_url(url: str) -> str:
    """``url`` without what may be a credential: a password and the query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return REDACTED
    user = f"{parts.username}:{REDACTED}@" if parts.password else ""
    query = f"?{REDACTED}" if parts.query else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}{query}"


@registry.method(
    params=[Param("options", OPTIONS, redact=_shown)],
    returns={"type": "object"},
    access=Access.ADMIN,
    job=JobOptions(logs=True, abortable=True, description=lambda args: _describe(args[0])),
)
async def request(ctx: CallContext, job: Job, options: dict[str, Any]) -> dict[str, Any]:
    """Send one request: ``_epoch`` (Unix time) is added to the query (``request_type``
    ``query``) or to the form or JSON body, which is signed with HMAC-SHA256 (hex) into the
    ``header_sign`` header (default ``X-Karajo-Sign``) when ``secret`` is set. An answer that
    is not 2xx fails the job; the status and the first 64 KiB of the answer go to its log.
    ``insecure`` skips the TLS certificate check. Returns ``{"status", "logged_bytes"}``."""
    url = _checked_url(options["url"])
    method = options.get("method", "GET")
    kind = options.get("request_type", "query")
    params = {**options.get("params", {}), "_epoch": int(time.time())}
    headers = dict(_header(h) for h in options.get("headers", []))
    query: str | None = None
    body: bytes | None = None
    if kind == "query":
        query = urlencode(sorted(_flat(params)))
        signed = query.encode()
    elif kind == "form":
        body = urlencode(sorted(_flat(params))).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        signed = body
    else:
        body = jsonc.dumps(params).encode()
        headers["Content-Type"] = "application/json"
        signed = body
    secret = options.get("secret")
    if secret:
        sign = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        headers[options.get("header_sign", DEFAULT_HEADER_SIGN)] = sign
    target = url if query is None else f"{url}{'&' if urlsplit(url).query else '?'}{query}"
    shown = _safe_url(url)
    job.log(f"{method} {shown} ({kind}{', signed' if secret else ''})")
    timeout = aiohttp.ClientTimeout(total=float(options.get("timeout", 30)))
    tls: ssl.SSLContext | bool = False if options.get("insecure") else True
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            # Sent as signed: not requoted on the way out. A redirect is not followed (it
            # would carry the signature and headers elsewhere): it fails as non-2xx.
            session.request(
                method,
                yarl.URL(target, encoded=True),
                data=body,
                headers=headers,
                ssl=tls,
                allow_redirects=False,
            ) as answer,
        ):
            head = await _first_bytes(answer.content, LOGGED_BYTES)
            status, reason = answer.status, answer.reason or ""
    except TimeoutError:
        raise CallError(
            f"No answer from {shown} within {timeout.total:g} s", errno.ETIMEDOUT
        ) from None
    except aiohttp.ClientError as e:
        # The exception's text may quote the URL as given (with its credentials).
        raise CallError(
            f"Request to {shown} failed: {type(e).__name__}", errno.ECONNREFUSED
        ) from None
    job.log(f"{status} {reason}")
    if head:
        job.log_bytes(head if head.endswith(b"\n") else head + b"\n")
    if not 200 <= status < 300:
        raise CallError(f"{method} {shown} answered {status} {reason}".rstrip(), errno.EREMOTEIO)
    return {"status": status, "logged_bytes": len(head)}


async def _first_bytes(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of the answer (``read(n)`` alone returns what has come)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await stream.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationErrors(
            [("options.url", "must be an http:// or https:// URL", errno.EINVAL)]
        )
    return url


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


def _flat(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Query and form values as text: strings as they are, the rest as JSON."""
    return [(k, v if isinstance(v, str) else jsonc.dumps(v)) for k, v in params.items()]


def _describe(options: Any) -> str:
    if isinstance(options, dict) and isinstance(options.get("url"), str):
        return f"HTTP {options.get('method', 'GET')} {_safe_url(options['url'])}"
    return "HTTP request"
