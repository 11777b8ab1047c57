"""Temporary files written beside their targets, journalled so that a crash leaves none."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from middlewared.errors import ValidationErrors
from middlewared.roots import Dir, Roots

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.part$", re.DOTALL)
_STEM = 200


def is_temp(name: str) -> bool:
    """Whether ``name`` has the form of the temporary files ``journalled_temp`` names."""
    return _TEMP.match(name) is not None


def journal_dir(data_dir: Path) -> Path:
    return data_dir / "tempfiles"


@contextlib.contextmanager
def journalled_temp(data_dir: Path, folder: Dir, target: str) -> Iterator[str]:
    """A temporary name in ``folder`` beside ``target``, recorded while it may exist; the
    file of that name is removed on the way out (after a rename it no longer exists)."""
    token = secrets.token_hex(6)
    # Cut to leave room for the dots and the token within NAME_MAX (255 bytes).
    tmp = f".{os.fsdecode(os.fsencode(target)[:_STEM])}.{token}.part"
    journal = journal_dir(data_dir)
    journal.mkdir(parents=True, exist_ok=True)
    entry = journal / token
    entry.write_bytes(os.fsencode(folder.join(tmp)))
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            folder.unlink(tmp)
        entry.unlink(missing_ok=True)


def sweep(data_dir: Path, roots: Sequence[Path]) -> int:
    """Remove the temporary files a crash left behind; returns how many."""
    folder = journal_dir(data_dir)
    if not folder.is_dir():
        return 0
    removed = 0
    confined = Roots(roots)
    for entry in folder.iterdir():
        removed += _remove(confined, os.fsdecode(entry.read_bytes().strip()))
        entry.unlink()
    return removed


def _remove(roots: Roots, text: str) -> int:
    """Remove the temporary file ``text`` names, through the directory it is in."""
    try:
        tmp = roots.locate("journal", text)
        if not _TEMP.match(tmp.name):
            return 0
        with tmp.parent() as parent:
            parent.unlink(tmp.name)
    except (ValidationErrors, OSError):
        return 0
    log.warning("removed %s, left by an interrupted upload", text)
    return 1
