"""The rate window of worker limits, against an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from middlewared.errors import Busy, CallError
from middlewared.jobs.limits import COZY_DEFAULTS, WorkerTable
from middlewared.registry import JobOptions, MethodSpec, RetryPolicy


def spec(name: str, options: JobOptions) -> MethodSpec:
    return MethodSpec(name, lambda: None, (), {}, "", job=options)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(overrides: dict[str, Any], clock: Clock) -> WorkerTable:
    return WorkerTable(lambda: overrides, lambda: 1, clock)


def test_the_rate_is_a_sliding_hour_per_user() -> None:
    clock = Clock()
    workers = table({"x.run": {"rate": 2}}, clock)
    s = spec("x.run", JobOptions())
    workers.prepare(s, 1)
    clock.now += 1000
    workers.prepare(s, 1)
    with pytest.raises(Busy, match="retry in 2600 seconds"):
        workers.prepare(s, 1)
    workers.prepare(s, 2)  # another user
    clock.now += 2600  # the first call is an hour old
    workers.prepare(s, 1)


def test_limits_make_the_job_options() -> None:
    s = spec("x.run", JobOptions(retry=RetryPolicy(max_attempts=3, base_delay=0.5)))
    prepared = table({"x.run": {"max_exec_count": 5, "timeout": 9}}, Clock()).prepare(s, 1)
    assert prepared.job is not None and prepared.job.retry is not None
    assert (prepared.job.retry.max_attempts, prepared.job.retry.base_delay) == (5, 0.5)
    assert prepared.job.timeout == 9
    once = table({"x.run": {"max_exec_count": 1}}, Clock()).prepare(s, 1)
    assert once.job is not None and once.job.retry is None
    # Nothing set: the spec itself, not a copy.
    assert table({}, Clock()).prepare(s, 1) is s


def test_cozys_defaults_and_disabling() -> None:
    thumbs = spec("image.thumbnail", JobOptions())
    workers = table({}, Clock())
    limits = workers.limits(thumbs)
    assert (limits.max_exec_count, limits.timeout, limits.rate) == (2, 30.0, 20_000)
    assert set(COZY_DEFAULTS) >= {"archive.zip", "mail.send", "push.send", "data.export"}
    with pytest.raises(CallError, match="disabled"):
        table({"image.thumbnail": {"concurrency": 0}}, Clock()).prepare(thumbs, 1)
