"""A stand-in process for the bare subprocess reference of the commands scenario: the bare
loop (``asyncio.create_subprocess_exec("true")`` awaited, one after another) runs in the
load process itself; this one only holds the contender's place until SIGTERM."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    print("bench worker ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
