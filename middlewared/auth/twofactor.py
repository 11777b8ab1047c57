"""Two-factor codes (TOTP, RFC 6238, with ``pyotp``) in TrueNAS's model: a secret per user,
a system-wide switch and window, and codes that are good once: a code (or an earlier one)
already used to log in is refused, so a code seen over a shoulder or in a log is worth
nothing afterwards."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import pyotp

ISSUER = "middlewared"


@dataclass(frozen=True)
class TwoFactor:
    """A user's TOTP secret, its period and digits, and the last time step used."""

    secret: str
    interval: int = 30
    digits: int = 6
    last_step: int = -1

    @classmethod
    def new(cls, interval: int, digits: int) -> TwoFactor:
        return cls(pyotp.random_base32(), interval, digits)

    def totp(self) -> pyotp.TOTP:
        return pyotp.TOTP(self.secret, digits=self.digits, interval=self.interval)

    def uri(self, username: str) -> str:
        """``otpauth://totp/...``: what an authenticator app scans."""
        return self.totp().provisioning_uri(name=username, issuer_name=ISSUER)

    def check(self, code: str, window: int, now: float | None = None) -> TwoFactor | None:
        """This, with ``code``'s time step marked used, when ``code`` is right within
        ``window`` steps either side and newer than the last one used; else None."""
        moment = time.time() if now is None else now
        totp = self.totp()
        current = int(moment // self.interval)
        for step in range(current - window, current + window + 1):
            if step <= self.last_step:
                continue
            if _same(totp.at(step * self.interval), code):
                return replace(self, last_step=step)
        return None

    def record(self) -> dict[str, Any]:
        return {
            "secret": self.secret,
            "interval": self.interval,
            "digits": self.digits,
            "last_step": self.last_step,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> TwoFactor:
        return cls(data["secret"], data["interval"], data["digits"], data["last_step"])


def _same(expected: str, given: str) -> bool:
    return pyotp.utils.strings_equal(expected, given)
