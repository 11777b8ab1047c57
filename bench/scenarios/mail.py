"""Scenario 14, mail: ``mail.send`` to a local SMTP sink (aiosmtpd, in its own process), one
mail after another, against aiosmtplib in a bare loop sending one mail per connection, and
the same loop reusing one connection for every mail. Ratios are reported, not judged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.context import AUTH, Context
from bench.loads.mail import CASE
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all

PER_CONNECTION = "bare aiosmtplib, one connection per mail"
REUSE = "bare aiosmtplib, one connection reused"


def run(ctx: Context) -> Result:
    warmup, seconds = (0.1, 0.5) if ctx.smoke else (1.0, 5.0)
    result = Result(
        "mail",
        "Mail: mail.send to a local aiosmtpd, one mail at a time",
        {"warmup_s": warmup, "seconds": seconds},
        columns=["mails_per_s", "p50_ms", "p99_ms", "server_us_per_op", "client_busy", "sink_busy"],
    )
    result.notes.append(
        "the sink is aiosmtpd in its own process (accepts and drops, plain SMTP, no login); "
        "the bare loops run in the load process and build the same one-part text mail each "
        "time; mail.send is called by a user with an email (from mode), each call a persisted "
        "job with a log, answered when the mail is accepted; the bench lifts mail.send's "
        "hourly rate for that user with worker.update('mail.send', {'rate': null}) (cozy's "
        "default is 200 an hour); middlewared opens one SMTP connection per mail"
    )

    def go(mode: str) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            spec: dict[str, Any] = {"mode": mode, "warmup": warmup, "seconds": seconds}
            if mode != "server":
                spec |= {"smtp_port": proc.port, "sink_pid": proc.pid}
                cases: Cases = ctx.load("mail", spec, timeout=300)["cases"]
                return cases
            sink = ctx.reference("smtp_sink")
            try:
                spec |= {"smtp_port": sink.port, "sink_pid": sink.pid}
                spec |= {"url": proc.url(), "auth": AUTH}
                spec["server_pid"] = proc.pid
                cases = ctx.load("mail", spec, timeout=300)["cases"]
            finally:
                sink.stop()
            return cases

        return measure

    def sink() -> Proc:
        return ctx.reference("smtp_sink")

    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, lambda: ctx.middlewared(ctx.data_dir("mail")), go("server")),
            Contender(PER_CONNECTION, sink, go("per_connection")),
            Contender(REUSE, sink, go("reuse")),
        ],
    )
    for reference in (PER_CONNECTION, REUSE):
        ratio = result.ratio(CASE, "mails_per_s", reference)
        if ratio is not None:
            result.notes.append(f"mails/s {ratio:.2f}x the {reference} (report only)")
    result.target(
        "harness: mail: load client busy with middlewared",
        result.median(CASE, PROJECT, "client_busy"),
        "<=",
        0.8,
        " cores",
    )
    result.target(
        "harness: mail: SMTP sink busy (bare, one connection reused)",
        result.median(CASE, REUSE, "sink_busy"),
        "<=",
        0.9,
        " cores",
    )
    return result
