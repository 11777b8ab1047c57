"""Worker limits per job method, as cozy-stack's ``jobs.workers`` has them: ``concurrency``
(jobs of the method running at once; 0 disables the method), ``max_exec_count`` (attempts,
retried with exponential backoff and jitter, never after a validation error or an abort),
``timeout`` (seconds an attempt may run) and ``rate`` (calls per user per hour).

A method's limits are, in order: what its ``JobOptions`` declare, cozy's defaults for the
workers cozy has, and what an administrator set with ``worker.update`` (the ``worker``
settings, carried by ``config.save``)."""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from middlewared.errors import Busy, CallError
from middlewared.registry import JobOptions, MethodSpec, RetryPolicy

NAMESPACE = "worker"
HOUR = 3600.0
# Calls remembered per user and method for the rate (beyond it the rate is refused anyway).
_MAX_RATE = 1_000_000
FIELDS = ("concurrency", "max_exec_count", "timeout", "rate")


@dataclass(frozen=True)
class WorkerLimits:
    # None: no bound of its own; 0: the method is disabled.
    concurrency: int | None = None
    max_exec_count: int = 1
    timeout: float | None = None
    # Calls per user per hour; None: no bound.
    rate: int | None = None

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CPUS = os.cpu_count() or 1
# cozy-stack's defaults for its workers (config.yaml's jobs.workers and worker definitions).
COZY_DEFAULTS: dict[str, WorkerLimits] = {
    "image.thumbnail": WorkerLimits(_CPUS, 2, 30.0, 20_000),
    "archive.zip": WorkerLimits(_CPUS, 2, 600.0, 100),
    "archive.unzip": WorkerLimits(_CPUS, 2, 600.0, 100),
    "mail.send": WorkerLimits(_CPUS, 3, 60.0, 200),
    "push.send": WorkerLimits(_CPUS, 1, 10.0, 30),
    "data.export": WorkerLimits(4, 1, 3600.0, None),
    "log.print": WorkerLimits(_CPUS, 1, 1.0, None),
}


def declared(options: JobOptions) -> WorkerLimits:
    attempts = options.retry.max_attempts if options.retry is not None else 1
    return WorkerLimits(options.max_concurrency, attempts, options.timeout, None)


class WorkerTable:
    """Each job method's limits, and the job options they make; refreshed when the
    ``worker`` settings change (``revision``)."""

    def __init__(
        self,
        overrides: Callable[[], dict[str, Any]],
        revision: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._overrides = overrides
        self._revision = revision
        self._clock = clock
        self._seen = -1
        self._options: dict[str, tuple[JobOptions, WorkerLimits]] = {}
        self._calls: dict[tuple[int, str], deque[float]] = {}

    def limits(self, spec: MethodSpec) -> WorkerLimits:
        return self._resolve(spec)[1]

    def prepare(self, spec: MethodSpec, user_id: int | None) -> MethodSpec:
        """``spec`` with its job options as its limits make them; refused when the method
        is disabled or the caller is past its rate."""
        options, limits = self._resolve(spec)
        if limits.concurrency == 0:
            raise CallError(
                f"{spec.name} is disabled (worker.update set its concurrency to 0)", errno.ENOTSUP
            )
        if limits.rate is not None and user_id is not None:
            self._take(spec.name, user_id, limits.rate)
        return spec if options is spec.job else dataclasses.replace(spec, job=options)

    def _take(self, method: str, user_id: int, rate: int) -> None:
        now = self._clock()
        calls = self._calls.setdefault((user_id, method), deque())
        while calls and calls[0] <= now - HOUR:
            calls.popleft()
        if len(calls) >= min(rate, _MAX_RATE):
            wait = calls[0] + HOUR - now
            raise Busy(f"{method}: at most {rate} calls an hour; retry in {wait:.0f} seconds")
        calls.append(now)

    def _resolve(self, spec: MethodSpec) -> tuple[JobOptions, WorkerLimits]:
        assert spec.job is not None
        revision = self._revision()
        if revision != self._seen:
            self._options.clear()
            self._seen = revision
        found = self._options.get(spec.name)
        if found is None:
            found = self._build(spec)
            self._options[spec.name] = found
        return found

    def _build(self, spec: MethodSpec) -> tuple[JobOptions, WorkerLimits]:
        assert spec.job is not None
        limits = COZY_DEFAULTS.get(spec.name, declared(spec.job))
        override = self._overrides().get(spec.name)
        if override:
            limits = dataclasses.replace(limits, **override)
        if limits == declared(spec.job):
            return spec.job, limits
        retry = spec.job.retry
        if limits.max_exec_count <= 1:
            retry = None
        elif retry is None:
            retry = RetryPolicy(max_attempts=limits.max_exec_count)
        else:
            retry = dataclasses.replace(retry, max_attempts=limits.max_exec_count)
        options = dataclasses.replace(
            spec.job,
            max_concurrency=limits.concurrency,
            timeout=limits.timeout,
            retry=retry,
        )
        return options, limits
