"""``python -m bench.serverwrap ARGS``: middlewared with its open-file limit raised to the
hard maximum (thousands of connections need more than the usual 1,024)."""

from __future__ import annotations

import os
import sys

from bench.procstat import raise_nofile

if __name__ == "__main__":
    raise_nofile()
    os.execv(sys.executable, [sys.executable, "-m", "middlewared", *sys.argv[1:]])
