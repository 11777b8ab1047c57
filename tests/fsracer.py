"""The attacker of the confinement tests: a process swapping two names in a tight loop.

Run as ``python tests/fsracer.py A B``: it exchanges A and B atomically
(``renameat2(RENAME_EXCHANGE)``) until SIGTERM, then prints how many times it did. Used
through ``racing(a, b)``, which starts it, waits until it runs and stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

AT_FDCWD = -100
RENAME_EXCHANGE = 2
# renameat2 by number where the libc has no wrapper (glibc < 2.28).
SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}


def exchanger(a: bytes, b: bytes) -> Callable[[], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    args = (
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(a),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(b),
        ctypes.c_uint(RENAME_EXCHANGE),
    )
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        return lambda: int(renameat2(*args))
    number = ctypes.c_long(SYS_RENAMEAT2[platform.machine()])
    return lambda: int(libc.syscall(number, *args))


def main(a: str, b: str) -> int:
    swap = exchanger(os.fsencode(a), os.fsencode(b))
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    count = 0
    while not stop:
        if swap() != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), a)
        count += 1
        if count == 1:
            print("ready", flush=True)
    print(count, flush=True)
    return 0


@contextlib.contextmanager
def racing(a: Path, b: Path) -> Iterator[list[int]]:
    """Swap ``a`` and ``b`` in another process while the block runs; the list it gives
    holds, once the block ends, how many swaps were made."""
    proc = subprocess.Popen(
        [sys.executable, __file__, str(a), str(b)],
        stdout=subprocess.PIPE,
        text=True,
    )
    swaps: list[int] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "the racer did not start"
        yield swaps
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"the racer failed: {proc.returncode}"
    swaps.append(int(out.strip()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
