"""``python -m bench.load KIND``: the load process. Reads a JSON spec on stdin, drives the
contender named in it over loopback, prints one JSON line of results."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from bench import loop
from bench.procstat import raise_nofile

KINDS = (
    "rpc",
    "jobs",
    "queues",
    "fanout",
    "files",
    "idle",
    "store",
    "commands",
    "triggers",
    "hooks",
    "thumbnails",
    "archives",
    "thumbload",
    "mail",
)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in KINDS:
        print(f"usage: python -m bench.load {{{','.join(KINDS)}}} < spec.json", file=sys.stderr)
        return 2
    spec: dict[str, Any] = json.load(sys.stdin)
    raise_nofile()
    module = importlib.import_module(f"bench.loads.{argv[0]}")
    result: dict[str, Any] = loop.run(module.main(spec))
    result["loop"] = loop.name()
    print(json.dumps(_clean(result), allow_nan=False))
    return 0


def _clean(value: Any) -> Any:
    """NaN (a percentile of nothing) becomes null: the JSON stays standard."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
