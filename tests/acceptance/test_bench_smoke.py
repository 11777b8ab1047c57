"""The benchmark suite runs end to end at smoke sizes. Timings are never asserted here: the
suite only checks that every scenario ran and was recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {
    "rpc",
    "jobs",
    "fanout",
    "files",
    "idle",
    "store",
    "commands",
    "output",
    "triggers",
    "hooks",
    "thumbnails",
    "archives",
    "thumbload",
    "mail",
}


@pytest.mark.slow
def test_bench_smoke_records_every_scenario(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["smoke"] is True
    assert set(results["scenarios"]) == SCENARIOS
    for name, scenario in results["scenarios"].items():
        assert scenario["status"] == "ok", (name, scenario["contenders"])
        assert scenario["contenders"]["middlewared"] == "ok", name
        for contender, status in scenario["contenders"].items():
            # A reference may be skipped when its package or service is missing, with why.
            assert status == "ok" or (status.startswith("skipped: ") and len(status) > 12), (
                name,
                contender,
                status,
            )
        assert any(c["contender"] == "middlewared" for c in scenario["cells"]), name
        assert scenario["targets"], name
        assert f"== {name}:" in done.stdout
    # Scratch data dirs and logs are removed; only the results stay.
    assert not list(tmp_path.glob("bench-*"))
