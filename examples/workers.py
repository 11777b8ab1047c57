"""The built-in workers: thumbnails of an image, zipped, the zip unzipped elsewhere."""

from __future__ import annotations

import argparse
import os
import sys

from middlewared_client import Client, MiddlewareError


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", help="an image on the server")
    parser.add_argument("folder", help="an existing folder on the server to unzip into")
    parser.add_argument("--url", default=env("MIDDLEWARED_URL", "ws://127.0.0.1:6000/api/current"))
    parser.add_argument("--user", default=env("MIDDLEWARED_USER", "root"))
    parser.add_argument("--password", default=env("MIDDLEWARED_PASSWORD"))
    args = parser.parse_args()
    if args.password is None:
        parser.error("give --password or set MIDDLEWARED_PASSWORD")
    return args


def main() -> int:
    args = parse_args()
    try:
        with Client(args.url, username=args.user, password=args.password) as client:
            client.call("log.print", f"making thumbnails of {args.image}")
            thumbs = client.call("image.thumbnail", args.image)
            for size, path in thumbs.items():
                print(f"{size}: {path}")
            folder = os.path.dirname(thumbs["tiny"])
            archive = client.call(
                "archive.zip",
                {"files": {"thumbs": folder}, "dir": args.folder, "filename": "thumbs.zip"},
            )
            print(f"zip: {archive}")
            written = client.call("archive.unzip", {"zip": archive, "destination": args.folder})
            print(f"unzipped: {len(written)} entries")
    except MiddlewareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
