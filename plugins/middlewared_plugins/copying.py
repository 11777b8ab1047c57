"""filesystem.copy's work: a tree copied through directory descriptors, undone on failure."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat as st
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from middlewared.errors import CallError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.roots import Dir, Roots, copy_metadata, in_thread, refusal

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
Names = tuple[str, ...]
# Told of each path the copy wrote or removed (filesystem.files).
Announce = Callable[[str], Awaitable[None]]


@dataclass
class Created:
    """An entry this copy made, known by inode: only that entry is ever removed."""

    names: Names
    dev: int
    ino: int
    is_dir: bool


@dataclass
class Tree:
    """A copy's two ends, held open for the whole job, and the plan of what to copy."""

    src: Dir  # holds the source entry
    src_name: str
    dst: Dir  # holds the destination entry
    dst_name: str
    # Every entry below the source (names from it, lstat), parents first; () is the source.
    entries: list[tuple[Names, os.stat_result]]
    total: int
    created: list[Created] = field(default_factory=list)

    @classmethod
    def prepare(cls, roots: Roots, src: str, dst: str) -> Tree:
        source = roots.locate("src", src)
        target = roots.locate("dst", dst)
        with contextlib.ExitStack() as stack:
            src_dir = stack.enter_context(source.parent())
            try:
                top = src_dir.lstat(source.name)
            except OSError as e:
                raise refusal("src", e) from None
            dst_dir = stack.enter_context(target.parent())
            try:
                dst_dir.lstat(target.name)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise refusal("dst", e) from None
            else:
                raise ValidationErrors([("dst", "Destination already exists", errno.EEXIST)])
            if source.contains(target):
                raise ValidationErrors([("dst", "Destination is inside the source", errno.EINVAL)])
            entries: list[tuple[Names, os.stat_result]] = [((), top)]
            if st.S_ISDIR(top.st_mode):
                try:
                    with src_dir.subdir([source.name], readable=True) as folder:
                        entries += folder.walk()
                except OSError as e:
                    raise refusal("src", e) from None
            total = sum(s.st_size for _, s in entries if st.S_ISREG(s.st_mode))
            stack.pop_all()
        return cls(src_dir, source.name, dst_dir, target.name, entries, total)

    def close(self) -> None:
        self.src.close()
        self.dst.close()

    def make(self, rel: Names) -> tuple[BinaryIO, BinaryIO] | None:
        """Create the entry ``rel`` at the destination; the two files when it is a regular
        file whose bytes are still to copy. A symlink is copied as a link, never followed;
        what is neither a file, a directory nor a link is skipped."""
        src_names, dst_names = (self.src_name, *rel), (self.dst_name, *rel)
        try:
            with (
                self.src.subdir(src_names[:-1]) as sdir,
                self.dst.subdir(dst_names[:-1]) as ddir,
            ):
                return self._make(sdir, src_names[-1], ddir, dst_names)
        except FileExistsError as e:
            path = self.dst.join("/".join(dst_names))
            raise CallError(f"{path} already exists", errno.EEXIST) from e
        except OSError as e:
            path = self.src.join("/".join(src_names))
            raise CallError(f"Cannot copy {path}: {e.strerror}", e.errno or errno.EIO) from e

    def _make(
        self, sdir: Dir, name: str, ddir: Dir, dst_names: Names
    ) -> tuple[BinaryIO, BinaryIO] | None:
        kind = sdir.lstat(name).st_mode
        if st.S_ISLNK(kind):
            ddir.symlink(sdir.readlink(name), dst_names[-1])
        elif st.S_ISDIR(kind):
            ddir.mkdir(dst_names[-1])
        elif st.S_ISREG(kind):
            fin = sdir.open_read(name)
            try:
                fout = ddir.create(dst_names[-1])
            except BaseException:
                fin.close()
                raise
            s = os.fstat(fout.fileno())
            self.created.append(Created(dst_names, s.st_dev, s.st_ino, False))
            return fin, fout
        else:
            return None
        s = ddir.lstat(dst_names[-1])
        self.created.append(Created(dst_names, s.st_dev, s.st_ino, st.S_ISDIR(kind)))
        return None

    def path(self, rel: Names) -> str:
        """The destination path of the entry ``rel``."""
        return self.dst.join("/".join((self.dst_name, *rel)))

    def undo(self) -> list[str]:
        """Remove what this copy created, last first, each only if it is still the entry
        made (same inode) and, for a directory, empty; returns the paths removed."""
        removed: list[str] = []
        for entry in reversed(self.created):
            try:
                with self.dst.subdir(entry.names[:-1]) as folder:
                    s = folder.lstat(entry.names[-1])
                    if (s.st_dev, s.st_ino) != (entry.dev, entry.ino):
                        continue
                    if entry.is_dir:
                        folder.rmdir(entry.names[-1])
                    else:
                        folder.unlink(entry.names[-1])
                removed.append(self.dst.join("/".join(entry.names)))
            except OSError as e:
                # Not ours any more, or holding what is not ours: left in place.
                log.info("copy left %s in place: %s", "/".join(entry.names), e.strerror)
        return removed


class _Progress:
    def __init__(self, job: Job, total: int) -> None:
        self.job = job
        self.total = total
        self.done = 0

    def report(self) -> None:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        self.job.set_progress(percent, f"Copied {self.done} of {self.total} bytes")

    async def copy_file(self, fin: BinaryIO, fout: BinaryIO) -> None:
        with fin, fout:
            while chunk := await asyncio.to_thread(fin.read, CHUNK):
                await asyncio.to_thread(fout.write, chunk)
                self.done += len(chunk)
                self.report()
            # On descriptors: must end before the files close, even on an abort.
            await in_thread(_finish, fin, fout)


def _finish(fin: BinaryIO, fout: BinaryIO) -> None:
    fout.flush()  # before the times are set: a later write would change them
    copy_metadata(fin.fileno(), fout.fileno())


async def copy_tree(job: Job, tree: Tree, written: Announce) -> None:
    """Copy every entry of ``tree``, calling ``written(path)`` once each is complete; on any
    failure or abort, undo what was created (``written`` told of each removal too)."""
    progress = _Progress(job, tree.total)
    progress.report()
    try:
        for rel, _ in tree.entries:
            made = len(tree.created)
            files = await in_thread(tree.make, rel)
            if files is not None:
                await progress.copy_file(*files)
            if len(tree.created) > made:
                await written(tree.path(rel))
    except BaseException:
        removed = await in_thread(tree.undo)
        dst = tree.dst.join(tree.dst_name)
        log.info("copy to %s failed: removed %d of the entries it made", dst, len(removed))
        for path in removed:
            await asyncio.shield(written(path))
        raise
    src, dst = tree.src.join(tree.src_name), tree.dst.join(tree.dst_name)
    job.log(f"copied {progress.done} bytes in {len(tree.entries)} entries from {src} to {dst}")
