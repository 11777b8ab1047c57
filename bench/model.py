"""What a scenario produces: per-run metrics of each case and contender, their medians, the
ratios between contenders and the targets, all serialisable to JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.stats import median

Metrics = dict[str, float]

PROJECT = "middlewared"


@dataclass
class Target:
    """A goal shown beside a measurement: a pass/short mark, never an assertion."""

    label: str
    value: float | None
    op: str  # ">=", "<=" or "<"
    limit: float
    unit: str = ""
    # The same figure before this round of work (the audit's), where there is one.
    before: float | None = None

    @property
    def status(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "n/a"
        ok = {
            ">=": self.value >= self.limit,
            "<=": self.value <= self.limit,
            "<": self.value < self.limit,
        }[self.op]
        return "pass" if ok else "short"

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": _finite(self.value),
            "op": self.op,
            "limit": self.limit,
            "unit": self.unit,
            "before": _finite(self.before),
            "status": self.status,
        }


@dataclass
class Result:
    """One scenario's outcome."""

    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    # contender -> "ok", "skipped: why" or "failed: why"
    contenders: dict[str, str] = field(default_factory=dict)
    # (case, contender) -> one metrics dict per run
    runs: dict[tuple[str, str], list[Metrics]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    # How the table lists cases (default: the order they were first measured in).
    case_order: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, case: str, contender: str, metrics: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        self.runs.setdefault((case, contender), []).append(numbers)
        self.contenders.setdefault(contender, "ok")

    def skip(self, contender: str, reason: str) -> None:
        self.contenders[contender] = f"skipped: {reason}"

    def fail(self, contender: str, reason: str) -> None:
        """Recorded with the last line of the reason (the whole is printed as it happens)."""
        lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
        self.contenders[contender] = f"failed: {(lines or ['?'])[-1][:300]}"

    def ok(self, contender: str) -> bool:
        return self.contenders.get(contender, "ok") == "ok"

    def median(self, case: str, contender: str, metric: str) -> float | None:
        runs = self.runs.get((case, contender))
        if not runs or not self.ok(contender):
            return None
        value = median([r[metric] for r in runs if metric in r])
        return None if math.isnan(value) else value

    def ratio(self, case: str, metric: str, reference: str, of: str = PROJECT) -> float | None:
        ours = self.median(case, of, metric)
        theirs = self.median(case, reference, metric)
        if ours is None or theirs is None or theirs == 0:
            return None
        return ours / theirs

    def target(
        self,
        label: str,
        value: float | None,
        op: str,
        limit: float,
        unit: str = "",
        before: float | None = None,
    ) -> None:
        self.targets.append(Target(label, value, op, limit, unit, before))

    @property
    def failed(self) -> bool:
        return any(s.startswith("failed") for s in self.contenders.values())

    def cases(self) -> list[tuple[str, str]]:
        return list(self.runs)

    def as_json(self) -> dict[str, Any]:
        cells = []
        for (case, contender), runs in self.runs.items():
            keys = sorted({k for r in runs for k in r})
            cells.append(
                {
                    "case": case,
                    "contender": contender,
                    "runs": [{k: _finite(v) for k, v in r.items()} for r in runs],
                    "median": {k: _finite(self.median(case, contender, k)) for k in keys},
                }
            )
        return {
            "title": self.title,
            "status": "failed" if self.failed else "ok",
            "params": self.params,
            "contenders": self.contenders,
            "columns": self.columns,
            "cells": cells,
            "targets": [t.as_json() for t in self.targets],
            "notes": self.notes,
        }


def _finite(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, 6)
