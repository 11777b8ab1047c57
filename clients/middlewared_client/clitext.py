"""What ``midclt`` reads and writes as text: arguments, results, progress bar, job table."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from middlewared import jsonc
from middlewared.errors import MiddlewareError, ValidationErrors, errname
from middlewared_client.jobs import JobHandle, JobProgress

BAR_WIDTH = 30
JOB_COLUMNS = ("ID", "METHOD", "STATE", "PERCENT", "DESCRIPTION")


def parse_arg(text: str) -> Any:
    """A command-line argument: its JSON value when it parses as JSON, else the string itself."""
    try:
        return jsonc.loads(text)
    except jsonc.JSONDecodeError:
        return text


def positive(text: str) -> int:
    """An option's whole number of at least 1 (argparse ``type``)."""
    value = natural(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def natural(text: str) -> int:
    """An option's whole number of at least 0 (argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def json_array(text: str) -> list[Any]:
    value = json_params(text)
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"not a JSON array: {text!r}")
    return value


def json_object(text: str) -> dict[str, Any]:
    value = json_params(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def json_params(text: str) -> list[Any] | dict[str, Any]:
    try:
        value = jsonc.loads(text)
    except jsonc.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    if not isinstance(value, list | dict):
        raise argparse.ArgumentTypeError(f"not a JSON array or object: {text!r}")
    return value


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

    def clear(self) -> None:
        """Blank the line (before other output); the next update draws it again."""
        if self._last:
            self._stream.write("\r" + " " * len(self._last) + "\r")
            self._stream.flush()
            self._last = ""

    def finish(self) -> None:
        if self._last:
            self._stream.write("\n")
            self._stream.flush()
            self._last = ""


def progress_bar() -> ProgressBar:
    """A progress bar on stderr, as wide as the terminal."""
    return ProgressBar(sys.stderr, shutil.get_terminal_size((80, 24)).columns)


async def job_result(handle: JobHandle, bar: ProgressBar) -> Any:
    """The job's result, its progress drawn on ``bar``; on Ctrl-C, say how to stop the job,
    which goes on without us."""
    try:
        return await handle.result()
    except asyncio.CancelledError:
        bar.finish()
        if handle.id is not None:
            print(
                f"midclt: job {handle.id} goes on; stop it with: "
                f"midclt call core.job_abort {handle.id}",
                file=sys.stderr,
            )
        raise
    finally:
        bar.finish()


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
    return format_table(JOB_COLUMNS, [_job_row(job) for job in jobs])


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: columns aligned two spaces apart, the last one left ragged."""
    lines = [header, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header) - 1)]
    out = []
    for row in lines:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(out)
