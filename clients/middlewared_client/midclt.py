"""``midclt``: call methods, move files, follow jobs and events of a middlewared server."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Mapping
from typing import Any

from middlewared import jsonc
from middlewared.errors import MiddlewareError
from middlewared_client import midclt_service, midclt_trigger
from middlewared_client.aclient import AsyncClient
from middlewared_client.clitext import (
    ProgressBar,
    format_error,
    format_jobs_table,
    format_os_error,
    format_result,
    job_result,
    json_array,
    json_params,
    natural,
    parse_arg,
    positive,
    progress_bar,
    transfer_progress,
)
from middlewared_client.cmdrun import parse_env, run_command
from middlewared_client.endpoints import TRUENAS_SOCKET, UNIX_SCHEME
from middlewared_client.errors import LoginFailed
from middlewared_client.options import DEFAULT_URL, ClientOptions, Credentials
from middlewared_client.transfers import TransferCallback

STATES = ("WAITING", "RUNNING", "SUCCESS", "FAILED", "ABORTED")
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midclt",
        description="Talk to middlewared. Credentials and URL also come from MIDCLT_URL, "
        "MIDCLT_USER, MIDCLT_PASSWORD and MIDCLT_API_KEY, or (inside a command run) "
        "MIDDLEWARED_URL and MIDDLEWARED_TOKEN.",
    )
    parser.add_argument("-u", "--url", help=f"WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("-U", "--username", help="user name (default root with -P)")
    parser.add_argument("-P", "--password", help="password")
    parser.add_argument("-K", "--api-key", help="API key")
    parser.add_argument("-T", "--token", help="a token (auth.generate_token, a command run's)")
    parser.add_argument(
        "--otp-token",
        help="the two-factor code, when the user has two-factor on (asked for on a terminal)",
    )
    parser.add_argument(
        "--cafile",
        help="verify wss:// against this CA file, e.g. the server's self-signed certificate "
        "(default: MIDDLEWARED_CAFILE, else the system's CAs)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    call = commands.add_parser("call", help="call a method and print its result")
    call.add_argument("-j", "--job", action="store_true", help="show the job's progress")
    call.add_argument("method")
    call.add_argument("args", nargs="*", metavar="ARG", help="a JSON value, else a string")

    sub = commands.add_parser("subscribe", help="print events as JSON lines")
    sub.add_argument("-n", "--count", type=positive, help="exit after COUNT events")
    sub.add_argument("event", help="a collection (core.get_jobs) or *")

    upload = commands.add_parser("upload", help="upload files into a job, print its result")
    upload.add_argument("-j", "--job", action="store_true", help="show the progress")
    upload.add_argument("method")
    upload.add_argument("params", type=json_params, metavar="PARAMS_JSON", help="a JSON array")
    upload.add_argument("files", nargs="+", metavar="FILE")

    download = commands.add_parser("download", help="save a job's output, print its result")
    download.add_argument("-j", "--job", action="store_true", help="show the progress")
    download.add_argument("--buffered", action="store_true", help="spooled by the server")
    download.add_argument("method")
    download.add_argument("args", type=json_array, metavar="ARGS_JSON", help="a JSON array")
    download.add_argument("filename", help="the name the server gives the file")
    download.add_argument("dest", help="where to save it (a file, or a directory)")

    commands.add_parser("ping", help="check that the server answers")

    command = commands.add_parser("command", help="run a command (command.run)")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="run it: progress on stderr, its log on stdout")
    run.add_argument("name")
    run.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for this run (repeatable)",
    )

    jobs = commands.add_parser("jobs", help="list the latest jobs")
    jobs.add_argument("--state", type=str.upper, choices=STATES)
    jobs.add_argument("--limit", type=natural, default=50, help="0 for all (default 50)")

    midclt_trigger.add_parser(commands)
    midclt_service.add_parser(commands)
    return parser


def credentials(
    args: argparse.Namespace, env: Mapping[str, str], parser: argparse.ArgumentParser
) -> Credentials:
    """Credentials from the options, else from the environment; usage errors exit 2."""
    user, password, api_key, token = args.username, args.password, args.api_key, args.token
    if user is None and password is None and api_key is None and token is None:
        user, password = env.get("MIDCLT_USER"), env.get("MIDCLT_PASSWORD")
        api_key = env.get("MIDCLT_API_KEY") if password is None else None
        if user is None and password is None and api_key is None:
            token = env.get("MIDDLEWARED_TOKEN") or None
    if sum(x is not None for x in (api_key, token, password or user)) > 1:
        parser.error("give one of -U/-P, -K or -T")
    if user is not None and password is None:
        parser.error("-U needs -P")
    if password is not None and not user:
        user = "root"
    otp = args.otp_token or env.get("MIDCLT_OTP_TOKEN") or None
    prompt = _ask_code if password is not None and otp is None and sys.stdin.isatty() else None
    return Credentials(
        username=user,
        password=password,
        api_key=api_key,
        token=token,
        otp_token=otp,
        otp_prompt=prompt,
    )


def _ask_code() -> str:
    return getpass.getpass("Two-factor code: ")


async def _call(client: AsyncClient, args: argparse.Namespace) -> int:
    params = [parse_arg(a) for a in args.args]
    if not args.job:
        result = await client.call(args.method, *params)
    else:
        bar = progress_bar()
        handle = await client.call(args.method, *params, job=True, on_progress=bar.update)
        result = await job_result(handle, bar)
    print(format_result(result), flush=True)
    return EXIT_OK


def _progress_bar(args: argparse.Namespace) -> ProgressBar | None:
    return progress_bar() if args.job else None


def _bytes_to(bar: ProgressBar | None, verb: str) -> TransferCallback | None:
    if bar is None:
        return None
    return lambda done, total: bar.update(transfer_progress(verb, done, total))


async def _upload(client: AsyncClient, args: argparse.Namespace) -> int:
    bar = _progress_bar(args)
    try:
        handle = await client.upload(
            args.method, args.params, args.files, on_progress=_bytes_to(bar, "Sent")
        )
        if bar is not None:
            bar.update(handle.progress)
            handle.add_progress_callback(bar.update)
        result = await handle.result()
    finally:
        if bar is not None:
            bar.finish()
    print(format_result(result), flush=True)
    return EXIT_OK


async def _download(client: AsyncClient, args: argparse.Namespace) -> int:
    bar = _progress_bar(args)
    try:
        result = await client.download(
            args.method,
            args.args,
            args.filename,
            args.dest,
            buffered=args.buffered,
            on_progress=_bytes_to(bar, "Received"),
        )
    finally:
        if bar is not None:
            bar.finish()
    print(format_result(result), flush=True)
    return EXIT_OK


async def _subscribe(client: AsyncClient, args: argparse.Namespace) -> int:
    queue: asyncio.Queue[dict[str, Any] | MiddlewareError | None] = asyncio.Queue()
    await client.subscribe(args.event, queue.put_nowait, on_end=queue.put_nowait)
    seen = 0
    while args.count is None or seen < args.count:
        item = await queue.get()
        if item is None:
            return EXIT_OK
        if isinstance(item, MiddlewareError):
            raise item
        print(jsonc.dumps(item), flush=True)
        seen += 1
    return EXIT_OK


async def _jobs(client: AsyncClient, args: argparse.Namespace) -> int:
    filters = [["state", "=", args.state]] if args.state else []
    if args.limit:
        jobs = await client.call(
            "core.get_jobs", filters, {"order_by": ["-id"], "limit": args.limit}
        )
    else:  # all of them: page by cursor, within what one query may hold on the server
        jobs = [job async for job in client.iter_jobs(filters, {"order_by": ["-id"]})]
    print(format_jobs_table(list(reversed(jobs))), flush=True)
    return EXIT_OK


async def _command(client: AsyncClient, args: argparse.Namespace) -> int:
    try:
        args.env = parse_env(args.env)
    except argparse.ArgumentTypeError as exc:
        print(f"midclt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return await run_command(client, args)


async def _ping(client: AsyncClient, args: argparse.Namespace) -> int:
    print(format_result(await client.call("core.ping")), flush=True)
    return EXIT_OK


COMMANDS = {
    "call": _call,
    "upload": _upload,
    "download": _download,
    "subscribe": _subscribe,
    "jobs": _jobs,
    "command": _command,
    "ping": _ping,
    "trigger": midclt_trigger.run,
    "service": midclt_service.run,
}


async def run(args: argparse.Namespace, url: str, creds: Credentials) -> int:
    # Only a long-lived subscription is worth reconnecting; a one-shot command fails fast.
    cafile = args.cafile or os.environ.get("MIDDLEWARED_CAFILE") or None
    options = ClientOptions(reconnect=args.command == "subscribe", cafile=cafile)
    async with AsyncClient(url, credentials=creds, options=options) as client:
        return await COMMANDS[args.command](client, args)


def default_url() -> str:
    """TrueNAS's local socket when it is there (as TrueNAS's midclt), else ws://127.0.0.1:6000."""
    if os.path.exists(TRUENAS_SOCKET):
        return f"{UNIX_SCHEME}://{TRUENAS_SOCKET}"
    return DEFAULT_URL


def main(argv: list[str] | None = None) -> int:
    """Run ``midclt``; the exit status: 0 ok, 1 any error, 2 bad usage, 130 interrupted."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        creds = credentials(args, os.environ, parser)
    except SystemExit as exc:  # argparse's way out: --help (0) or bad usage (2)
        return (
            exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else EXIT_USAGE
        )
    env = os.environ
    url = args.url or env.get("MIDCLT_URL") or env.get("MIDDLEWARED_URL") or default_url()
    try:
        return asyncio.run(run(args, url, creds))
    except LoginFailed as exc:
        detail = "" if exc.reason == "Login failed" else f": {format_error(exc.__cause__ or exc)}"
        print(f"midclt: login failed{detail}", file=sys.stderr)
    except MiddlewareError as exc:
        print(f"midclt: {format_error(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``midclt subscribe ... | head``): not worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError as exc:  # a local file of upload or download
        print(f"midclt: {format_os_error(exc)}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
