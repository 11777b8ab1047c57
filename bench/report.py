"""The results: a text table for the terminal, a JSON file, and a PNG chart of the targets."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.model import Result, Target
from bench.optional import load

MARK = {"pass": "PASS", "short": "SHORT", "n/a": "n/a"}


def number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "error"  # a measurement that failed (a query answered with an error)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def target_text(t: Target) -> str:
    before = "" if t.before is None else f", before {number(t.before)}{t.unit}"
    value = number(t.value) + ("" if t.value is not None and math.isinf(t.value) else t.unit)
    return f"{value} (target {t.op} {number(t.limit)}{t.unit}{before})"


def target_line(t: Target) -> str:
    return f"  {MARK[t.status]:<5}  {t.label}: {target_text(t)}{_miss(t)}"


def _miss(t: Target) -> str:
    """How far a short measurement is from its target, as a factor."""
    if t.status != "short" or t.value is None or math.isinf(t.value) or t.value <= 0:
        return ""
    off = t.limit / t.value if t.op == ">=" else t.value / t.limit
    return f"  [{number(off)}x off]"


def targets_table(results: list[Result]) -> str:
    """Every target of a run, one line each: the summary docs/performance.md shows."""
    lines = ["targets (measured; target; before = the audit's figure where there is one)"]
    for r in results:
        lines += [target_line(t) for t in r.targets]
    passed = sum(t.status == "pass" for r in results for t in r.targets)
    total = sum(t.status != "n/a" for r in results for t in r.targets)
    lines.append(f"  {passed} of {total} measured targets met")
    return "\n".join(lines)


def scenario_table(r: Result, runs: int) -> str:
    lines = [f"== {r.name}: {r.title}  [median of {runs} run(s)]"]
    # Grouped by case, contenders in the order they ran.
    cells = r.cases()
    known = list(dict.fromkeys([*r.case_order, *(case for case, _ in cells)]))
    order = {c: i for i, c in enumerate(known)}
    cases = sorted(cells, key=lambda cell: order[cell[0]])
    if cases:
        rows = [["case", "contender", *r.columns]]
        for case, contender in cases:
            if not r.ok(contender):
                continue
            rows.append(
                [case, contender, *(number(r.median(case, contender, c)) for c in r.columns)]
            )
        lines += _grid(rows)
    for name, status in r.contenders.items():
        if status != "ok":
            lines.append(f"  {name}: {status}")
    lines += [f"  note: {n}" for n in r.notes]
    if r.targets:
        lines.append("  targets:")
        lines += [target_line(t) for t in r.targets]
    return "\n".join(lines)


def table(results: list[Result], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    head = (
        f"middlewared bench: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, {m['loop']}; {meta['runs']} run(s)"
        + (" [smoke sizes]" if meta["smoke"] else "")
        + f", {meta['elapsed_s']} s"
    )
    rev = meta.get("revision") or {}
    if rev.get("commit"):
        dirty = rev.get("uncommitted_server_files") or []
        head += f"\ncommit {rev['commit']}" + (
            f" with uncommitted changes to {', '.join(dirty)}" if dirty else ""
        )
    load = meta.get("loadavg")
    if load:
        head += f"\nload average (1 min) at start {load['start']}, at end {load['end']}"
    scenarios = [scenario_table(r, meta["runs"]) for r in results]
    return "\n\n".join([head, *scenarios, targets_table(results)])


def as_json(results: list[Result], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "scenarios": {r.name: r.as_json() for r in results}}


def write_json(results: list[Result], meta: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(as_json(results, meta), indent=1, allow_nan=False) + "\n")
    return path


# Margins are drawn within 1/CAP..CAP (a loss of 0% is "infinitely" within its target).
CAP = 100.0


def margin(t: Target) -> float | None:
    """How far past its target a measurement is: above 1 passes, below 1 falls short."""
    if t.value is None or math.isnan(t.value) or t.value < 0 or t.limit <= 0:
        return None
    if t.op == ">=":
        m = t.value / t.limit
    else:
        m = t.limit / t.value if t.value > 0 else CAP
    return min(max(m, 1 / CAP), CAP)


def write_chart(results: list[Result], meta: dict[str, Any], path: Path) -> Path | None:
    """One bar per target, measured against it (log scale; the line at 1 is the target)."""
    mpl = load("matplotlib")
    if mpl is None:
        return None
    mpl.use("Agg")
    plt: Any = load("matplotlib.pyplot")
    targets = [(t, m) for r in results for t in r.targets if (m := margin(t)) is not None]
    if not targets:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(targets) + 1.3), dpi=72)
    labels = [t.label for t, _ in reversed(targets)]
    values = [m for _, m in reversed(targets)]
    colors = ["#3a7d44" if v >= 1 else "#c0392b" for v in values]
    ax.barh(labels, values, color=colors)
    for y, (t, m) in enumerate(reversed(targets)):
        was = margin(Target(t.label, t.before, t.op, t.limit, t.unit))
        if was is not None:
            # The audit's figure on the same scale: where the bar started from.
            ax.plot([was], [y], marker="D", color="black", markersize=4)
        ax.text(max(m, was or 0) * 1.15, y, target_text(t), va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    # Room left of 1/CAP, so a bar clamped there (an error, a miss past 100x) still shows.
    ax.set_xlim(1 / CAP / 2, CAP * 12)
    ax.set_xlabel(
        "measured ÷ target (≥ 1 meets the target; log scale); ◆ the audit's figure (before)"
    )
    ax.tick_params(axis="y", labelsize=8)
    m = meta["machine"]
    ax.set_title(
        f"middlewared bench, {m['cores']} cores, {m['loop']}, median of {meta['runs']} run(s)"
        + (" [smoke]" if meta["smoke"] else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    # A 64-colour palette keeps the file small enough to commit (Pillow comes with matplotlib).
    image: Any = load("PIL.Image")
    if image is not None:
        image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)
    return path


def results_from_json(data: dict[str, Any]) -> list[Result]:
    """The targets of a results file, enough to draw its chart again."""
    results = []
    for name, scenario in data["scenarios"].items():
        r = Result(name, scenario["title"])
        r.targets = [
            Target(
                t["label"],
                math.inf if t["value"] is None and t["status"] == "short" else t["value"],
                t["op"],
                t["limit"],
                t["unit"],
                t.get("before"),
            )
            for t in scenario["targets"]
        ]
        results.append(r)
    return results


def main(argv: list[str]) -> int:
    """``python -m bench.report RESULTS.json [OUT.png]``: print the targets of a run
    against their goals and the audit's figures, and redraw its chart (docs/performance.png)."""
    if len(argv) not in (1, 2):
        print("usage: python -m bench.report RESULTS.json [OUT.png]")
        return 2
    data = json.loads(Path(argv[0]).read_text())
    results = results_from_json(data)
    print(targets_table(results))
    if len(argv) == 2:
        print(f"chart: {write_chart(results, data['meta'], Path(argv[1]))}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
