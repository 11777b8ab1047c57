"""``python -m bench.references.huey_worker --db PATH``: a huey consumer (thread workers)
on SQLite, polling every millisecond when idle so latency is not set by its back-off."""

from __future__ import annotations

import sys

from bench.references._serve import parser
from bench.references.tasks import huey_app

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--db", required=True)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(sys.argv[1:])
    huey, _task = huey_app(args.db)
    consumer = huey.create_consumer(
        workers=args.workers, initial_delay=0.001, backoff=1.0, max_delay=0.001, periodic=False
    )
    print("bench worker ready", flush=True)
    consumer.run()
