"""Upload a local file with filesystem.put, download it back with filesystem.get, compare."""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
from pathlib import Path

from middlewared_client import Client, MiddlewareError


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("local", help="the file to upload")
    parser.add_argument("remote", help="its path on the server (must not exist)")
    parser.add_argument("--url", default=env("MIDDLEWARED_URL", "ws://127.0.0.1:6000/api/current"))
    parser.add_argument("--user", default=env("MIDDLEWARED_USER", "root"))
    parser.add_argument("--password", default=env("MIDDLEWARED_PASSWORD"))
    args = parser.parse_args()
    if args.password is None:
        parser.error("give --password or set MIDDLEWARED_PASSWORD")
    return args


def round_trip(client: Client, local: str, remote: str) -> bool:
    handle = client.upload("filesystem.put", [remote], [local])
    print(f"uploaded by job {handle.id}: {handle.result()}")
    with tempfile.TemporaryDirectory() as tmp:
        back = Path(tmp) / "back"
        client.download("filesystem.get", [remote], Path(remote).name, back)
        print(f"downloaded {back.stat().st_size} bytes")
        return filecmp.cmp(local, back, shallow=False)


def main() -> int:
    args = parse_args()
    try:
        with Client(args.url, username=args.user, password=args.password) as client:
            same = round_trip(client, args.local, args.remote)
    except (MiddlewareError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
