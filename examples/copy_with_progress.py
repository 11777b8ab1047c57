"""Copy a file on the server with filesystem.copy, printing the job's progress as it goes."""

from __future__ import annotations

import argparse
import os
import sys

from middlewared_client import Client, JobProgress, MiddlewareError


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src", help="a path on the server")
    parser.add_argument("dst", help="the copy's path on the server (must not exist)")
    parser.add_argument("--url", default=env("MIDDLEWARED_URL", "ws://127.0.0.1:6000/api/current"))
    parser.add_argument("--user", default=env("MIDDLEWARED_USER", "root"))
    parser.add_argument("--password", default=env("MIDDLEWARED_PASSWORD"))
    args = parser.parse_args()
    if args.password is None:
        parser.error("give --password or set MIDDLEWARED_PASSWORD")
    return args


def show(progress: JobProgress) -> None:
    percent = "  --" if progress.percent is None else f"{progress.percent:5.1f}%"
    print(f"{percent} {progress.description or ''}", flush=True)


def main() -> int:
    args = parse_args()
    try:
        with Client(args.url, username=args.user, password=args.password) as client:
            result = client.call("filesystem.copy", args.src, args.dst, on_progress=show)
    except MiddlewareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"result: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
