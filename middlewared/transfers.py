"""Downloads and uploads in flight: which job's output a URL serves, with which token, until
when; deadlines for unbuffered downloads; expiry of buffered output."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from middlewared.config import ServerConfig
from middlewared.jobs.engine import JobEngine
from middlewared.jobs.job import Job, JobState
from middlewared.jobs.pipes import InputPipe, OutputPipe
from middlewared.jobs.spool import SpoolQuota

log = logging.getLogger(__name__)

# How long an expired download id still answers 410 rather than 404.
TOMBSTONE_SECONDS = 24 * 3600.0


@dataclass
class Download:
    job_id: int
    # None for a file that is already complete (a job's log file).
    job: Job | None
    filename: str
    buffered: bool
    pipe: OutputPipe | None
    # A log file download serves this file instead of a pipe.
    path: Path | None = None
    started: bool = False
    expires: float = field(default=0.0)
    timer: asyncio.TimerHandle | None = None
    # Buffered: a request is sending (one at a time), and the byte the last one reached.
    active: bool = False
    stopped_at: int | None = None

    def begin(self, start: int, end: int) -> bool:
        """Take the download for one request of bytes [start, end). True when that request
        is the token's last use: it does not continue where the previous request stopped
        (it starts past that byte, or asks for nothing beyond it)."""
        previous = self.stopped_at
        self.active = True
        self.stopped_at = start
        return previous is not None and not start <= previous < end

    def sent(self, nbytes: int) -> None:
        self.stopped_at = (self.stopped_at or 0) + nbytes


class Transfers:
    def __init__(self, config: ServerConfig, jobs: JobEngine) -> None:
        self.config = config
        self.jobs = jobs
        self.downloads: dict[int, Download] = {}
        self._expired: dict[int, float] = {}
        self.spool_dir = config.spool_dir
        self.quota = SpoolQuota(config.transfers.spool_quota_per_user, config.transfers.spool_quota)

    def prepare(self) -> None:
        """Start empty: what a previous run left in the spool belongs to ended jobs."""
        if self.spool_dir.exists():
            shutil.rmtree(self.spool_dir, ignore_errors=True)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_dir.chmod(0o700)

    # -- uploads ------------------------------------------------------------------------
    def input_pipe(self, user: str) -> InputPipe:
        return InputPipe(self.spool_dir, secrets.token_hex(8), self.quota, user)

    # -- downloads ----------------------------------------------------------------------
    def output_pipe(self, buffered: bool, user: str) -> OutputPipe:
        if not buffered:
            return OutputPipe(False)
        path = self.spool_dir / f"{secrets.token_hex(8)}.download"
        return OutputPipe(True, path, self.quota.account(user))

    def register(self, job: Job, filename: str, buffered: bool, pipe: OutputPipe) -> Download:
        dl = Download(job.id, job, filename, buffered, pipe)
        self.downloads[job.id] = dl
        if buffered:
            # Kept until an hour after the job ends.
            job.done.add_done_callback(lambda _: self._job_ended(dl))
        else:
            deadline = self.config.transfers.download_start_seconds
            dl.expires = time.monotonic() + deadline
            dl.timer = asyncio.get_running_loop().call_later(deadline, self._not_started, dl)
        return dl

    def register_file(self, job_id: int, filename: str, path: Path) -> Download:
        """A finished file (a job's log) served like buffered output."""
        self.expire(job_id, tombstone=False)
        dl = Download(job_id, None, filename, True, None, path)
        self.downloads[job_id] = dl
        self._keep(dl)
        return dl

    def _job_ended(self, dl: Download) -> None:
        if dl.job is not None and dl.job.state is not JobState.SUCCESS and dl.pipe is not None:
            # Only a job that succeeded is served (409 otherwise): give the space back now.
            dl.pipe.discard()
        self._keep(dl)

    def used_up(self, dl: Download) -> None:
        """The token is spent: remove the spool (the URL answers 401 until it expires)."""
        if dl.pipe is not None:
            dl.pipe.discard()

    def _keep(self, dl: Download) -> None:
        if dl.timer is not None:
            return
        keep = self.config.transfers.download_keep_seconds
        dl.expires = time.monotonic() + keep
        dl.timer = asyncio.get_running_loop().call_later(keep, self.expire, dl.job_id)

    def _not_started(self, dl: Download) -> None:
        if dl.started or dl.job is None:
            return
        seconds = self.config.transfers.download_start_seconds
        log.warning(
            "job %d: download not started within %g s; aborting the job", dl.job_id, seconds
        )
        if dl.job.task is not None and not dl.job.ended:
            dl.job.task.cancel(f"Job aborted: the download did not start within {seconds:g} s")
        self.expire(dl.job_id)

    def expire(self, job_id: int, tombstone: bool = True) -> None:
        dl = self.downloads.pop(job_id, None)
        if dl is None:
            return
        if dl.timer is not None:
            dl.timer.cancel()
        if dl.pipe is not None:
            dl.pipe.discard()
        if tombstone:
            now = time.monotonic()
            self._expired = {k: v for k, v in self._expired.items() if v > now}
            self._expired[job_id] = now + TOMBSTONE_SECONDS

    def is_expired(self, job_id: int) -> bool:
        return self._expired.get(job_id, 0.0) > time.monotonic()

    def start(self, dl: Download) -> None:
        """An unbuffered download began: the deadline no longer applies."""
        dl.started = True
        if dl.pipe is not None:
            dl.pipe.reader_attached.set()
        if dl.timer is not None and not dl.buffered and dl.path is None:
            dl.timer.cancel()
            dl.timer = None

    def close(self) -> None:
        for job_id in list(self.downloads):
            self.expire(job_id)
