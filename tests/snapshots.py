"""config.save and config.upload through the real curl, as an operator does them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.serverproc import ServerProc
from tests.wsraw import Raw


async def _curl(*args: str) -> bytes:
    done = await asyncio.to_thread(
        subprocess.run, ["curl", "-sSf", *args], capture_output=True, timeout=120, check=True
    )
    return done.stdout


async def save_config(c: Raw, proc: ServerProc, dest: Path) -> None:
    """A snapshot of ``proc``'s configuration into ``dest``."""
    _, url = await c.call("core.download", "config.save", [{}], dest.name)
    await _curl("-o", str(dest), proc.url + url)


async def upload_config(c: Raw, proc: ServerProc, src: Path) -> Any:
    """Restore ``src`` into ``proc`` (as root, through /_upload); the job's result."""
    out = await _curl(
        "-u",
        f"root:{proc.password}",
        "-F",
        'data={"method": "config.upload", "params": []}',
        "-F",
        f"file=@{src}",
        f"{proc.url}/_upload",
    )
    return await c.call("core.job_wait", json.loads(out)["job_id"])
