"""Temporary files written beside their targets, journalled so that a crash leaves none."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.part$")


def journal_dir(data_dir: Path) -> Path:
    return data_dir / "tempfiles"


@contextlib.contextmanager
def journalled_temp(data_dir: Path, target: Path) -> Iterator[Path]:
    """A temporary name beside ``target``, recorded while it may exist."""
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
    folder = journal_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / tmp.name.removeprefix(".")
    entry.write_text(str(tmp))
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
        entry.unlink(missing_ok=True)


def sweep(data_dir: Path, roots: Sequence[Path]) -> int:
    """Remove the temporary files a crash left behind; returns how many."""
    folder = journal_dir(data_dir)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        tmp = Path(entry.read_text(errors="replace").strip())
        inside = any(tmp.parent.resolve().is_relative_to(r) for r in roots)
        if inside and _TEMP.match(tmp.name) and os.path.lexists(tmp):
            tmp.unlink()
            removed += 1
            log.warning("removed %s, left by an interrupted upload", tmp)
        entry.unlink()
    return removed
