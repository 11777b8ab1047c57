"""Where a job's files live in the data dir: its log and, when too large for its record,
its result. One place builds these paths."""

from __future__ import annotations

from pathlib import Path


class JobFiles:
    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir

    def log(self, job_id: int) -> Path:
        return self.logs_dir / f"{job_id}.log"

    def result(self, job_id: int) -> Path:
        return self.logs_dir / f"{job_id}.result.json"

    def remove(self, job_id: int) -> None:
        self.log(job_id).unlink(missing_ok=True)
        self.result(job_id).unlink(missing_ok=True)
