"""Confine user-given paths to the configured roots: no ``..``, symlink or NUL escapes."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from middlewared.errors import ValidationErrors

MAX_PATH = 4096


def confine(field: str, path: str, roots: Sequence[Path], must_exist: bool = True) -> Path:
    """The real path of ``path`` if it lies within one of ``roots``; else a validation error.

    Symlinks are resolved before the check, so a link cannot lead outside a root. A path
    that need not exist yet is checked through its parent.
    """

    def bad(message: str, code: int = errno.EINVAL) -> ValidationErrors:
        return ValidationErrors([(field, message, code)])

    if "\x00" in path:
        raise bad("Path contains a NUL byte")
    if len(path) > MAX_PATH:
        raise bad("Path is too long", errno.ENAMETOOLONG)
    if not os.path.isabs(path):
        raise bad("Path must be absolute")
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise bad("Path is outside the allowed roots", errno.EACCES)
    if must_exist and not os.path.lexists(real):
        raise bad("Path does not exist", errno.ENOENT)
    return real
