"""``python -m bench.references.rq_worker --redis URL``: rq's SimpleWorker (runs jobs in its
own process instead of forking one per job, rq's fastest mode)."""

from __future__ import annotations

import sys
from typing import Any

from bench.optional import load
from bench.references._serve import parser
from bench.references.tasks import QUEUE

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--redis", required=True)
    args = p.parse_args(sys.argv[1:])
    rq: Any = load("rq")
    redis: Any = load("redis")
    if rq is None or redis is None:
        raise SystemExit("rq is not installed")
    conn = redis.Redis.from_url(args.redis)
    worker = rq.SimpleWorker([rq.Queue(QUEUE, connection=conn)], connection=conn)
    print("bench worker ready", flush=True)
    worker.work(logging_level="WARNING")
