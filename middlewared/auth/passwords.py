"""Password and API-key hashing (stdlib scrypt / SHA-256), constant-time checks, and the
small bounded pool that password hashing runs in."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from middlewared.errors import Busy

# scrypt cost: about 30 ms here; run off the event loop.
_N, _R, _P = 2**14, 8, 1
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 << 20)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time; an unknown user is checked against a dummy hash to keep timing flat."""
    try:
        scheme, n, r, p, salt, digest = (stored or _DUMMY).split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 << 20,
        )
        expected = base64.b64decode(digest)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected) and stored is not None


class HashPool:
    """Password hashing off the event loop, in threads of its own.

    Not asyncio's default executor: that one serves file I/O too, and a flood of logins
    (each scrypt costs about 30 ms and 16 MiB) must not delay an administrator's file
    calls. At most ``max_pending`` hashes wait or run; past that a login is refused with
    EBUSY at once instead of queueing without bound.
    """

    def __init__(self, workers: int = 2, max_pending: int = 64) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash")
        self.max_pending = max_pending
        self.pending = 0

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self.pending >= self.max_pending:
            raise Busy("Too many logins in progress; try again shortly", errno.EBUSY)
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.pending -= 1

    async def verify(self, password: str, stored: str | None) -> bool:
        result: bool = await self._run(verify_password, password, stored)
        return result

    async def hash(self, password: str) -> str:
        result: str = await self._run(hash_password, password)
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def hash_key(secret: str) -> str:
    """API keys and tokens are long random strings: one SHA-256 is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_secret(nbytes: int = 32) -> str:
    """A URL-safe random string that never begins with "-".

    One in 64 would, and a command line reads such a secret as an option
    (`midclt -T -x...` fails with "expected one argument"); drawing again keeps
    the others uniformly likely.
    """
    while True:
        secret = secrets.token_urlsafe(nbytes)
        if not secret.startswith("-"):
            return secret


def generate_password() -> str:
    return new_secret(18)
