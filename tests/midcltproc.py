"""``midclt`` run as a real process, as a user would, with none of the caller's MIDCLT_* or
MIDDLEWARED_* variables (only those given), stdin not a terminal; ``as_uid`` runs it as
another uid through setpriv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

SETPRIV = shutil.which("setpriv")


def midclt(
    *args: str, env: dict[str, str] | None = None, as_uid: int | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MIDCLT_", "MIDDLEWARED_"))}
    argv = [sys.executable, "-m", "middlewared_client.midclt", *args]
    if as_uid is not None:
        assert SETPRIV is not None, "setpriv (util-linux) is not installed"
        argv = [SETPRIV, f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )
