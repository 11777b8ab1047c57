"""``midclt trigger ...``: create, list, launch, pause, resume and delete triggers, and list
their jobs (PROTOCOL.md section 9), as a person types them."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from middlewared import jsonc
from middlewared_client.aclient import AsyncClient
from middlewared_client.clitext import (
    format_jobs_table,
    format_result,
    job_result,
    json_array,
    json_object,
    positive,
    progress_bar,
)
from middlewared_client.triggertext import (
    format_trigger,
    format_triggers_table,
    next_run_text,
    state_text,
)

ABOUT = """\
A trigger starts a job by itself: on a schedule, on events, on a signed webhook, or only
when launched. Each run is an ordinary job, in `midclt jobs` and `midclt trigger jobs ID`,
run with its owner's rights."""

EXAMPLES = """\
examples:
  midclt trigger create @every 1h archive.zip '["/data"]' --name hourly-archive
  midclt trigger create @cron '0 3 * * *' backup.run --tz Europe/Paris --missed once
  midclt trigger create @event core.get_jobs:UPDATED:FAILED:state notify.failed
  midclt trigger list
  midclt trigger launch --wait 3
  midclt trigger pause 3 --reason 'disk replaced, back on Monday'"""

TYPES = """\
TYPE and ARG (quote an ARG that has spaces):
  @at 2026-07-01T08:00:00Z     once, at that time (RFC 3339, with its offset)
  @in 1h30m                    once, that long from now (units s, m, h, d)
  @every 10m                   every 10 minutes from now
  @cron '0 3 * * *'            cron: 5 fields, or 6 with seconds first, in --tz
  @hourly, @daily, @weekly, @monthly [WINDOW]
                               once a period, at a random but stable time in WINDOW:
                               'between 8am and 6pm', 'before 5am', 'after 10pm',
                               'on weekday', 'on mon,wed', 'on the 1-5' (combinable)
  @schedule daily@03:00,15:00  karajo: minutely, hourly@M, daily@HH:MM, weekly@Day@HH:MM,
                               monthly@D@HH:MM (UTC unless --tz)
  @interval 5m                 karajo's interval (at least 1m)
  @event 'RULE [RULE...]'      on events, any rule matching: collection[:VERBS[:values
                               [:selector]]], VERBS of CREATED,UPDATED,DELETED; e.g.
                               core.get_jobs:UPDATED:FAILED:state, filesystem.files:CREATED
  @webhook                     on POST /hooks/ID; give --json '{"auth": {"kind":
                               "hmac-sha256", "secret": "..."}}'
  @client                      only when launched
PARAMS_JSON is the method's arguments as a JSON array: '["/data", 2]'. The server checks
everything now and says what is wrong (exit status 1)."""

Command = Callable[[AsyncClient, argparse.Namespace], Awaitable[None]]


class Operands(argparse.Action):
    """``[ARG] METHOD [PARAMS_JSON]`` after TYPE: PARAMS_JSON is the last operand when it is
    JSON, ARG the first when two remain."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items = [str(v) for v in values or []]
        params: list[Any] = []
        if len(items) > 1 and items[-1].lstrip()[:1] in ("[", "{"):
            try:
                params = json_array(items.pop())
            except argparse.ArgumentTypeError as e:
                parser.error(f"PARAMS_JSON: {e}")
        if len(items) > 2:
            parser.error(
                f"too many operands {items}: expected TYPE [ARG] METHOD [PARAMS_JSON]; "
                "quote an ARG that has spaces, e.g. '0 3 * * *'"
            )
        namespace.arguments = items[0] if len(items) == 2 else None
        namespace.method = items[-1]
        namespace.params = params


def add_parser(commands: Any) -> None:
    """``midclt trigger`` and its subcommands, under midclt's ``commands``."""
    trigger = commands.add_parser(
        "trigger",
        help="manage triggers: jobs that start by themselves",
        description=ABOUT,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = trigger.add_subparsers(dest="trigger_command", required=True, metavar="SUBCOMMAND")

    create = sub.add_parser(
        "create",
        help="create a trigger and print its id",
        usage="midclt trigger create [options] TYPE [ARG] METHOD [PARAMS_JSON]",
        description="Create a trigger that runs METHOD(*PARAMS_JSON) as you; print its id.",
        epilog=TYPES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("type", metavar="TYPE", help="@every, @cron, @event, ... (below)")
    create.add_argument(
        "operands",
        nargs="+",
        action=Operands,
        metavar="[ARG] METHOD [PARAMS_JSON]",
        help="ARG when TYPE takes one; PARAMS_JSON a JSON array",
    )
    create.add_argument("--name", help="what to call it (in tables and notifications)")
    create.add_argument("--tz", metavar="ZONE", help="IANA time zone (default the server's)")
    create.add_argument("--debounce", metavar="DUR", help="@event/@webhook: gather for DUR")
    create.add_argument("--missed", choices=("skip", "once"), help="runs missed while down")
    create.add_argument(
        "--overlap", choices=("queue", "skip", "allow"), help="when the last job still runs"
    )
    create.add_argument(
        "--pass-event", action="store_true", help="give the job the events as a last argument"
    )
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.add_argument(
        "--json", type=json_object, metavar="OBJECT", help="more fields: auth, notify_on_..."
    )

    listing = sub.add_parser(
        "list",
        help="a table of triggers: next run (local time), last run, state",
        description="List triggers; FILTERS_JSON is a query filter list.",
        epilog='example: midclt trigger list \'[["type", "=", "@cron"]]\'',
    )
    listing.add_argument("filters", nargs="?", type=json_array, default=[], metavar="FILTERS_JSON")
    listing.add_argument("--json", action="store_true", help="the raw records, a JSON array")

    get = sub.add_parser("get", help="one trigger in full")
    get.add_argument("id", type=positive, metavar="ID")
    get.add_argument("--json", action="store_true", help="the raw record")

    launch = sub.add_parser(
        "launch",
        help="run a trigger's job now (even paused) and print the job id",
        description="Run the trigger's job now, whatever its schedule; print the job id. "
        "With --wait, show its progress, print its result, exit 1 if it fails.",
    )
    launch.add_argument("id", type=positive, metavar="ID")
    launch.add_argument("-w", "--wait", action="store_true", help="follow the job to its end")

    pause = sub.add_parser("pause", help="stop a trigger firing (launch still runs it)")
    pause.add_argument("id", type=positive, metavar="ID")
    pause.add_argument("--reason", help="why; shown in its state until resumed")

    resume = sub.add_parser("resume", help="let a paused trigger fire again (from now on)")
    resume.add_argument("id", type=positive, metavar="ID")

    delete = sub.add_parser("delete", help="delete a trigger (the jobs it started stay)")
    delete.add_argument("id", type=positive, metavar="ID")

    jobs = sub.add_parser("jobs", help="a table of the jobs a trigger started")
    jobs.add_argument("id", type=positive, metavar="ID")
    jobs.add_argument("--limit", type=positive, default=50, help="the latest LIMIT (default 50)")
    jobs.add_argument("--json", action="store_true", help="the raw job records")


def create_data(args: argparse.Namespace) -> dict[str, Any]:
    """``trigger.create``'s data: ``--json``'s fields, then the operands and options over
    them (``options`` merged)."""
    extra: dict[str, Any] = dict(args.json or {})
    data = {**extra, "type": args.type, "method": args.method, "params": args.params}
    fields = {
        "arguments": args.arguments,
        "description": args.name,
        "debounce": args.debounce,
        "pass_event": args.pass_event or None,
        "paused": args.paused or None,
    }
    data.update({k: v for k, v in fields.items() if v is not None})
    options = {"timezone": args.tz, "missed": args.missed, "overlap": args.overlap}
    options = {k: v for k, v in options.items() if v is not None}
    if options:
        given = extra.get("options")
        data["options"] = {**(given if isinstance(given, dict) else {}), **options}
    return data


def _say(text: str) -> None:
    print(text, flush=True)


async def _create(client: AsyncClient, args: argparse.Namespace) -> None:
    record = await client.call("trigger.create", create_data(args))
    _say(str(record["id"]))


async def _list(client: AsyncClient, args: argparse.Namespace) -> None:
    pages = client.query_pages("trigger.query", args.filters, {"order_by": ["id"]})
    records = [record async for page in pages for record in page]
    _say(jsonc.dumps(records) if args.json else format_triggers_table(records))


async def _get(client: AsyncClient, args: argparse.Namespace) -> None:
    record = await client.call("trigger.get_instance", args.id)
    _say(jsonc.dumps(record) if args.json else format_trigger(record))


async def _launch(client: AsyncClient, args: argparse.Namespace) -> None:
    job_id = await client.call("trigger.launch", args.id)
    _say(str(job_id))
    if args.wait:
        bar = progress_bar()
        handle = await client.follow_job(job_id, on_progress=bar.update)
        _say(format_result(await job_result(handle, bar)))


async def _pause(client: AsyncClient, args: argparse.Namespace) -> None:
    record = await client.call("trigger.pause", args.id, args.reason)
    _say(f"trigger {args.id}: {state_text(record)}")


async def _resume(client: AsyncClient, args: argparse.Namespace) -> None:
    record = await client.call("trigger.resume", args.id)
    when = next_run_text(record)
    _say(f"trigger {args.id}: {state_text(record)}" + (f", next run {when}" if when != "-" else ""))


async def _delete(client: AsyncClient, args: argparse.Namespace) -> None:
    await client.call("trigger.delete", args.id)
    _say(f"trigger {args.id}: deleted")


async def _jobs(client: AsyncClient, args: argparse.Namespace) -> None:
    jobs = await client.call("trigger.jobs", args.id, {"limit": args.limit})
    _say(jsonc.dumps(jobs) if args.json else format_jobs_table(list(reversed(jobs))))


SUBCOMMANDS: dict[str, Command] = {
    "create": _create,
    "list": _list,
    "get": _get,
    "launch": _launch,
    "pause": _pause,
    "resume": _resume,
    "delete": _delete,
    "jobs": _jobs,
}


async def run(client: AsyncClient, args: argparse.Namespace) -> int:
    """Run ``midclt trigger SUBCOMMAND``; errors propagate to midclt's handler (exit 1)."""
    await SUBCOMMANDS[args.trigger_command](client, args)
    return 0
