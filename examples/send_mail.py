"""Send a mail with mail.send (cozy's sendmail worker), a file of the server attached: from
the caller to the recipients given, in the caller's name, Reply-To the caller's email."""

from __future__ import annotations

import argparse
import os
import sys

from middlewared_client import Client, MiddlewareError


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("to", nargs="+", help="recipients' addresses")
    parser.add_argument("--subject", default="Report")
    parser.add_argument("--attach", help="a path on the server to attach")
    parser.add_argument("--url", default=env("MIDDLEWARED_URL", "ws://127.0.0.1:6000/api/current"))
    parser.add_argument("--user", default=env("MIDDLEWARED_USER", "root"))
    parser.add_argument("--password", default=env("MIDDLEWARED_PASSWORD"))
    args = parser.parse_args()
    if args.password is None:
        parser.error("give --password or set MIDDLEWARED_PASSWORD")
    return args


def main() -> int:
    args = parse_args()
    options = {
        "mode": "from",
        "to": [{"email": address} for address in args.to],
        "subject": args.subject,
        "parts": [
            {"type": "text/plain", "body": "The report is attached."},
            {"type": "text/html", "body": "<p>The report is <b>attached</b>.</p>"},
        ],
        "attachments": [{"path": args.attach}] if args.attach else [],
    }
    try:
        with Client(args.url, username=args.user, password=args.password) as client:
            client.call("mail.send", options)
    except MiddlewareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"sent to {', '.join(args.to)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
