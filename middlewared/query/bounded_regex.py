"""``~`` patterns whose matching cannot stall the server.

Python's ``re`` backtracks without bound: ``(a|a)+$`` against forty ``a`` and a ``b`` runs
for longer than the universe, on the event loop. The ``regex`` module speaks the same
syntax and stops a match at a deadline, so one query gets a fixed budget across all the
values it tests, and a pattern that spends it fails the query with a reason.
"""

from __future__ import annotations

import errno
import time
from typing import Final

import regex

from middlewared.errors import ValidationErrors

# Matching time one query may spend on one ``~`` condition, over all the values it tests.
BUDGET_SECONDS: Final = 0.1

Error = regex.error


class BoundedRegex:
    """A compiled pattern, ``re.match`` semantics, with a time budget that only goes down."""

    __slots__ = ("pattern", "remaining")

    def __init__(self, source: str) -> None:
        self.pattern = regex.compile(source)
        self.remaining = BUDGET_SECONDS

    def match(self, text: str) -> bool:
        start = time.perf_counter()
        try:
            return self.pattern.match(text, timeout=max(self.remaining, 1e-6)) is not None
        except TimeoutError:
            self.remaining = 0.0
            raise ValidationErrors(
                [
                    (
                        "filters",
                        f"regular expression {self.pattern.pattern!r} took longer than "
                        f"{BUDGET_SECONDS * 1000:.0f} ms to match: simplify it (nested "
                        "repetition backtracks exponentially)",
                        errno.EINVAL,
                    )
                ]
            ) from None
        finally:
            self.remaining -= time.perf_counter() - start
