"""What ``midclt`` reads and writes as text: arguments, results, progress bar, job table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from middlewared import jsonc
from middlewared.errors import MiddlewareError, ValidationErrors, errname
from middlewared_client.jobs import JobProgress

BAR_WIDTH = 30
JOB_COLUMNS = ("ID", "METHOD", "STATE", "PERCENT", "DESCRIPTION")


def parse_arg(text: str) -> Any:
    """A command-line argument: its JSON value when it parses as JSON, else the string itself."""
    try:
        return jsonc.loads(text)
    except jsonc.JSONDecodeError:
        return text


def format_result(value: Any) -> str:
    """A result for stdout: strings raw (so ``$(midclt call ...)`` is usable), the rest as JSON."""
    if isinstance(value, str):
        return value
    return jsonc.dumps(value)


def format_error(exc: BaseException) -> str:
    """The message for stderr: ``[ERRNAME] reason``, then one line per validation error."""
    if not isinstance(exc, MiddlewareError):
        return f"{type(exc).__name__}: {exc}"
    lines = [f"[{errname(exc.errno)}] {exc.reason}"]
    if isinstance(exc, ValidationErrors) and len(exc.errors) > 1:
        lines += [f"  {field or '(params)'}: {message}" for field, message, _ in exc.errors]
    return "\n".join(lines)


def format_os_error(exc: OSError) -> str:
    """A local file error for stderr: ``No such file or directory: a.txt``."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def transfer_progress(verb: str, done: int, total: int | None) -> JobProgress:
    """Bytes of a transfer as a progress: ``Sent 1024 of 4096 bytes`` at 25%."""
    if total is None:
        return JobProgress(None, f"{verb} {done} bytes")
    percent = 100.0 * done / total if total else 100.0
    return JobProgress(percent, f"{verb} {done} of {total} bytes")


def render_progress(progress: JobProgress, width: int = BAR_WIDTH, columns: int = 80) -> str:
    """One line: ``[#####.....]  50.0% description``, cut to fit ``columns``."""
    percent = progress.percent
    if percent is None:
        filled, number = 0, " --.-%"
    else:
        percent = min(max(float(percent), 0.0), 100.0)
        filled, number = round(percent * width / 100), f"{percent:5.1f}%"
    line = f"[{'#' * filled}{'.' * (width - filled)}] {number}"
    if progress.description:
        line += " " + " ".join(progress.description.split())
    # One column short of the terminal: a full line would wrap and break the in-place redraw.
    return line[: max(columns - 1, 0)]


class ProgressBar:
    """A progress line on ``stream``, redrawn in place on each change."""

    def __init__(self, stream: TextIO, columns: int = 80) -> None:
        self._stream = stream
        self._columns = columns
        self._last = ""

    def update(self, progress: JobProgress) -> None:
        line = render_progress(progress, columns=self._columns)
        if line == self._last:
            return
        padding = " " * max(len(self._last) - len(line), 0)
        self._stream.write(f"\r{line}{padding}")
        self._stream.flush()
        self._last = line

    def finish(self) -> None:
        if self._last:
            self._stream.write("\n")
            self._stream.flush()
            self._last = ""


def _job_row(job: dict[str, Any]) -> tuple[str, ...]:
    progress = JobProgress.from_record(job.get("progress"))
    percent = "-" if progress.percent is None else f"{progress.percent:g}"
    description = progress.description or job.get("description") or ""
    if job.get("state") == "FAILED" and job.get("error"):
        description = str(job["error"])
    return (
        str(job.get("id", "")),
        str(job.get("method", "")),
        str(job.get("state", "")),
        percent,
        " ".join(str(description).split()),
    )


def format_jobs_table(jobs: Sequence[dict[str, Any]]) -> str:
    """Jobs as a plain text table, one row each, columns aligned."""
    rows = [JOB_COLUMNS, *(_job_row(job) for job in jobs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(JOB_COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
