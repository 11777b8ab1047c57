"""Verifying a webhook request for a trigger: HMAC-SHA256 (ours, karajo's), GitHub's, and
sourcehut's Ed25519, with an optional signed timestamp and a replay window. Pure: it gets
headers and the raw body, never a socket; comparisons are constant-time."""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from middlewared.errors import ValidationErrors

KINDS = ("hmac-sha256", "github", "sourcehut", "none")
DEFAULT_HEADER = "X-Middlewared-Sign"
DEFAULT_TOLERANCE = 300
# sr.ht's published key for the webhooks it sends (man.sr.ht/api-conventions.md).
SOURCEHUT_KEY = "uX7KWyyDNMaBma4aVbJ/cbUQpdjqczuCyK/HxzV/u+4="
# Accepted signatures remembered for replay checks, at most.
REPLAY_MEMORY = 100_000


class WebhookRefused(Exception):
    """The request is refused with ``status`` (a JSON body says ``reason``)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WebhookAuth:
    kind: str
    secret: str | None = None
    header: str = DEFAULT_HEADER
    timestamp_header: str | None = None
    tolerance: int = DEFAULT_TOLERANCE
    path: str | None = None
    public_key: str | None = None

    def shown(self) -> dict[str, Any]:
        """As a trigger's record shows it: the secret never."""
        return {
            "kind": self.kind,
            "secret": None if self.secret is None else "********",
            "header": self.header,
            "timestamp_header": self.timestamp_header,
            "tolerance": self.tolerance,
            "path": self.path,
            "public_key": self.public_key,
        }


def parse_auth(raw: Mapping[str, Any] | None, allow_unsigned: bool) -> WebhookAuth:
    """Validate a webhook trigger's ``auth`` at create time (-32602 naming the field)."""
    raw = dict(raw or {})
    kind = raw.get("kind", "hmac-sha256")
    errors = ValidationErrors()
    if kind not in KINDS:
        errors.add("auth.kind", f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if kind == "none" and not allow_unsigned:
        errors.add(
            "auth.kind",
            "unsigned webhooks are refused unless the server runs with --allow-unsigned-webhooks",
            errno.EACCES,
        )
    secret = raw.get("secret")
    if kind in ("hmac-sha256", "github") and not (isinstance(secret, str) and len(secret) >= 16):
        errors.add("auth.secret", f"a {kind} webhook needs a secret of at least 16 characters")
    public_key = raw.get("public_key")
    if kind == "sourcehut" and public_key is not None and _ed25519_key(public_key) is None:
        errors.add("auth.public_key", "not a base64 Ed25519 public key (32 bytes)")
    tolerance = raw.get("tolerance", DEFAULT_TOLERANCE)
    if not isinstance(tolerance, int) or isinstance(tolerance, bool) or not 1 <= tolerance <= 86400:
        errors.add("auth.tolerance", "seconds between 1 and 86400")
    path = raw.get("path")
    if path is not None and not _good_path(path):
        errors.add("auth.path", "letters, digits, '-', '_', '.' and '/' only, not all digits")
    if errors:
        raise errors
    return WebhookAuth(
        kind=kind,
        secret=secret,
        header=raw.get("header") or ("X-Hub-Signature-256" if kind == "github" else DEFAULT_HEADER),
        timestamp_header=raw.get("timestamp_header"),
        tolerance=tolerance,
        path=path.strip("/") if isinstance(path, str) else None,
        public_key=public_key,
    )


def _good_path(path: Any) -> bool:
    if not isinstance(path, str):
        return False
    stripped = path.strip("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")
    return (
        0 < len(stripped) <= 200
        and set(stripped) <= allowed
        and not stripped.isdigit()
        and ".." not in stripped
    )


def _ed25519_key(text: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        return None


class ReplayGuard:
    """Signatures accepted within their tolerance window; a second use is a replay."""

    def __init__(self, memory: int = REPLAY_MEMORY) -> None:
        self._seen: OrderedDict[tuple[int, str], float] = OrderedDict()
        self._memory = memory

    def check_and_remember(self, trigger_id: int, signature: str, until: float, now: float) -> None:
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        key = (trigger_id, signature)
        if key in self._seen:
            raise WebhookRefused(403, "This signature was already used: a replayed request")
        self._seen[key] = until
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def verify(
    auth: WebhookAuth,
    trigger_id: int,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    replays: ReplayGuard,
) -> None:
    """Raise WebhookRefused (403) unless the request is signed as ``auth`` says."""
    if auth.kind == "none":
        return
    signed = body
    stamp = None
    if auth.timestamp_header:
        stamp = _timestamp(headers, auth, now)
        signed = f"{stamp}.".encode() + body
    if auth.kind == "sourcehut":
        signature = _sourcehut(auth, headers, signed)
    else:
        signature = _hmac(auth, headers, signed)
    if stamp is not None:
        replays.check_and_remember(trigger_id, signature, stamp + auth.tolerance, now)


def _timestamp(headers: Mapping[str, str], auth: WebhookAuth, now: float) -> int:
    assert auth.timestamp_header is not None
    value = _header(headers, auth.timestamp_header)
    if value is None or not value.strip().isdigit():
        raise WebhookRefused(403, f"Missing or malformed {auth.timestamp_header} (Unix seconds)")
    stamp = int(value.strip())
    if abs(now - stamp) > auth.tolerance:
        raise WebhookRefused(
            403, f"Stale request: its timestamp is outside the {auth.tolerance} s window"
        )
    return stamp


def _hmac(auth: WebhookAuth, headers: Mapping[str, str], signed: bytes) -> str:
    assert auth.secret is not None
    given = _header(headers, auth.header)
    if auth.kind == "github" and given is None and _header(headers, "X-Hub-Signature"):
        raise WebhookRefused(
            403, "SHA-1 signatures (X-Hub-Signature) are refused: sign with SHA-256"
        )
    if given is None:
        raise WebhookRefused(403, f"Missing signature header {auth.header}")
    value = given.strip()
    if auth.kind == "github" or value.startswith("sha256="):
        value = value.removeprefix("sha256=")
    expected = hmac.new(auth.secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), value.lower().encode()):
        raise WebhookRefused(403, "Bad signature")
    return expected


def _sourcehut(auth: WebhookAuth, headers: Mapping[str, str], signed: bytes) -> str:
    from cryptography.exceptions import InvalidSignature

    given = _header(headers, "X-Payload-Signature")
    nonce = _header(headers, "X-Payload-Nonce")
    if given is None or nonce is None:
        raise WebhookRefused(403, "Missing X-Payload-Signature or X-Payload-Nonce")
    key = _ed25519_key(auth.public_key or SOURCEHUT_KEY)
    try:
        signature = base64.b64decode(given, validate=True)
        key.verify(signature, signed + nonce.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError, InvalidSignature):
        raise WebhookRefused(403, "Bad signature") from None
    return given
