"""``~`` patterns whose matching cannot stall the server.

Python's ``re`` backtracks without bound: ``(a|a)+$`` against forty ``a`` and a ``b`` runs
for longer than the universe, on the event loop. The ``regex`` module speaks the same
syntax and stops a match at a deadline, so one query gets one fixed budget shared by all its
``~`` conditions over all the values they test (a budget per condition let a hundred
conditions stall the loop for ten seconds), and a pattern that spends it fails the query with
a reason. Matching releases the GIL, so a query matching in another thread leaves the event
loop free.
"""

from __future__ import annotations

import errno
import time
from typing import Final

import regex

from middlewared.errors import ValidationErrors

# Matching time one query may spend on all its ``~`` conditions together.
BUDGET_SECONDS: Final = 0.1

Error = regex.error
_SPECIAL: Final = frozenset(".^$*+?{}[]()|\\")


class RegexBudget:
    """Matching time left to one query; shared by its patterns, it only goes down."""

    __slots__ = ("remaining", "seconds")

    def __init__(self, seconds: float = BUDGET_SECONDS) -> None:
        self.seconds = seconds
        self.remaining = seconds


class BoundedRegex:
    """A compiled pattern, ``re.match`` semantics, matching within its query's budget."""

    __slots__ = ("budget", "pattern")

    def __init__(self, source: str, budget: RegexBudget | None = None) -> None:
        self.pattern = regex.compile(source)
        self.budget = budget or RegexBudget()

    def match(self, text: str) -> bool:
        budget = self.budget
        start = time.perf_counter()
        try:
            found = self.pattern.match(text, timeout=max(budget.remaining, 1e-6), concurrent=True)
            return found is not None
        except TimeoutError:
            budget.remaining = 0.0
            raise ValidationErrors(
                [
                    (
                        "filters",
                        f"regular expression {self.pattern.pattern!r} took longer than the "
                        f"{budget.seconds * 1000:.0f} ms a query's ~ conditions may spend "
                        "matching: simplify it (nested repetition backtracks exponentially)",
                        errno.EINVAL,
                    )
                ]
            ) from None
        finally:
            budget.remaining -= time.perf_counter() - start


def literal_prefix(source: str) -> str:
    """Text every match of ``source`` begins with (matches are anchored at the start): its
    leading literal characters. "" when unsure (alternatives, inline flags)."""
    if "|" in source or "(?" in source:
        return ""
    prefix: list[str] = []
    for char in source:
        if char in _SPECIAL:
            if char in "*?{" and prefix:  # that last character may be absent
                prefix.pop()
            break
        prefix.append(char)
    text = "".join(prefix)
    return "" if "\0" in text else text
