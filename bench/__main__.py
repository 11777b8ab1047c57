"""``python -m bench``: run the scenarios, print the table, write the JSON and the chart."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import loop, report
from bench.context import Context
from bench.model import Result
from bench.procs import ROOT
from bench.procstat import OtherLoad
from bench.scenarios import NAMES, runner
from bench.scenarios._common import say

# Cores' worth of CPU other processes may use before a scenario's numbers are called noisy.
NOISY = 0.15


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--scenario",
        action="append",
        choices=NAMES,
        help="run only this scenario (repeatable; default: all)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run: checks it works")
    p.add_argument("--runs", type=int, default=None, help="runs per contender (default 3; smoke 1)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
        help="Redis for the arq and rq references; the bench empties this database",
    )
    p.add_argument("--keep-scratch", action="store_true", help="keep data dirs and logs")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout with its own .venv (say, the commit before a change): its "
        "server runs beside this one in the rpc and jobs scenarios, same run, same load",
    )
    return p


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loop": loop.name(),
    }


def revision() -> dict[str, Any]:
    """The commit measured, and server files that differ from it (uncommitted work)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout

    # Porcelain lines are "XY path": the status takes the first three characters.
    changed = git("status", "--porcelain", "--", "middlewared", "plugins")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "uncommitted_server_files": [line[3:] for line in changed.splitlines() if line],
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = args.scenario or list(NAMES)
    runs = args.runs or (1 if args.smoke else 3)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-", dir=args.out))
    ctx = Context(args.out, scratch, args.smoke, runs, args.redis_url, args.baseline)
    started = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    results: list[Result] = []
    try:
        for name in names:
            t0 = time.perf_counter()
            other = OtherLoad()
            result = runner(name)(ctx)
            result.params["elapsed_s"] = round(time.perf_counter() - t0, 1)
            result.params["other_load_cores"] = round(other.cores(), 2)
            if other.cores() > NOISY:
                result.notes.append(
                    f"other processes used {other.cores():.2f} cores during this scenario: "
                    "its numbers are noisy"
                )
            results.append(result)
    finally:
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            say(f"scratch kept in {scratch}")
    meta = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "started": started_at,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "smoke": args.smoke,
        "runs": runs,
        "machine": machine(),
        # Other engineers share the machine: a run is quiet only under 0.5.
        "loadavg": {"start": load_at_start, "end": round(os.getloadavg()[0], 2)},
        "revision": revision(),
    }
    print(report.table(results, meta))
    json_path = report.write_json(results, meta, args.out / "results.json")
    png = report.write_chart(results, meta, args.out / "results.png")
    say(f"wrote {json_path}" + (f" and {png}" if png else " (no chart: matplotlib missing)"))
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
