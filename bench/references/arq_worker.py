"""``python -m bench.references.arq_worker --redis URL``: an arq worker on the bench's event
loop, polling every millisecond, up to 128 jobs at a time."""

from __future__ import annotations

import sys
from typing import Any

from bench import loop
from bench.optional import load
from bench.references._serve import parser
from bench.references.tasks import QUEUE, arq_noop


async def main(url: str) -> None:
    arq: Any = load("arq")
    connections: Any = load("arq.connections")
    if arq is None or connections is None:
        raise SystemExit("arq is not installed")
    worker = arq.Worker(
        functions=[arq.func(arq_noop, name="noop")],
        redis_settings=connections.RedisSettings.from_dsn(url),
        queue_name=QUEUE,
        poll_delay=0.001,
        max_jobs=128,
        keep_result=300,
        handle_signals=True,
    )
    print("bench worker ready", flush=True)
    try:
        await worker.async_run()
    finally:
        await worker.close()


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--redis", required=True)
    loop.run(main(p.parse_args(sys.argv[1:]).redis))
