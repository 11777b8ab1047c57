"""Job pipes: uploaded files spooled to disk for a job to read, and a job's output streamed
to one downloader (bounded in memory) or spooled to a file (buffered downloads)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from middlewared.errors import CallError
from middlewared.jobs.spool import SpoolAccount, SpoolQuota

CHUNK = 1024 * 1024
# An upload's newest bytes a job that keeps up reads from memory rather than the spool.
TAIL_BYTES = 4 * 1024 * 1024
# How long a full tail waits for a job that has been reading it before spilling to disk.
TAIL_WAIT_SECONDS = 0.25
# Unbuffered output: chunks allowed in flight between the job and its downloader.
OUTPUT_QUEUE = 8


class PipeError(CallError):
    default_errno = errno.EPIPE


class UploadedFile:
    """One file of an upload, readable while it is still arriving.

    What the job has not caught up with is spooled to disk; while it keeps up, the newest
    chunks wait in memory instead (at most ``TAIL_BYTES``), so a job reading as fast as the
    client sends never costs a disk write and a read of every byte. The order holds
    because the job reads the spool file to its end before the memory tail, and a tail that
    would grow past its bound is appended to the file whole, before the chunk that
    overflowed it.
    """

    def __init__(
        self,
        filename: str,
        path: Path,
        spool: bool = True,
        account: SpoolAccount | None = None,
    ) -> None:
        self.filename = filename
        self.path = path
        # Charged for what reaches the spool file (not the memory tail); given back on discard.
        self._account = account
        self.size = 0
        self.complete = False
        self.error: str | None = None
        self._changed = asyncio.Condition()
        self._reader: IO[bytes] | None = None
        self._file_size = 0  # bytes in the spool file
        self._file_read = 0  # of which the job has read
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._reading = False  # the job takes chunks as they come
        self._room = asyncio.Event()
        # Without spooling (nobody will read it: the job has ended) data is dropped.
        self._writer: IO[bytes] | None = path.open("xb") if spool else None
        if spool:
            self.path.chmod(0o600)

    # -- the HTTP side ------------------------------------------------------------------
    async def append(self, data: bytes) -> None:
        if self._writer is None:
            return  # the job ended or the upload failed: nobody will read it
        await self._wait_for_room(len(data))
        if self._fits_in_memory(len(data)):
            self._tail.append(data)
            self._tail_bytes += len(data)
        else:
            pieces = [*self._tail, data]
            if self._account is not None:
                self._account.charge(self._tail_bytes + len(data))  # raises SpoolFull
            self._tail.clear()
            self._tail_bytes = 0
            await asyncio.to_thread(self._write, pieces)
            self._file_size += sum(len(piece) for piece in pieces)
        self.size += len(data)
        async with self._changed:
            self._changed.notify_all()

    def _fits_in_memory(self, size: int) -> bool:
        """In order only after what the spool holds, and within the tail's bound."""
        caught_up = self._file_read >= self._file_size
        return (bool(self._tail) or caught_up) and self._tail_bytes + size <= TAIL_BYTES

    async def _wait_for_room(self, size: int) -> None:
        """While the job keeps reading, a chunk that would have to be spooled waits a moment
        for it (the upload then goes at the job's pace, through memory, with no disk write
        and read of every byte); a job that takes nothing within TAIL_WAIT_SECONDS is not
        waited for again until it reads."""
        if not self._reading:
            return
        deadline = asyncio.get_running_loop().time() + TAIL_WAIT_SECONDS
        while not self._fits_in_memory(size) and self.error is None:
            self._room.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._room.wait()
            except TimeoutError:
                self._reading = False
                return

    def _write(self, pieces: list[bytes]) -> None:
        writer = self._writer
        if writer is not None:
            writer.writelines(pieces)
            writer.flush()

    async def finish(self, error: str | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.error = error
        self.complete = error is None
        self._room.set()
        async with self._changed:
            self._changed.notify_all()

    # -- the job side -------------------------------------------------------------------
    async def read(self, size: int = CHUNK) -> bytes:
        """Up to ``size`` bytes; b"" at the end. Raises if the upload was interrupted."""
        self._reading = True
        while True:
            if self.error is not None:
                self._close_reader()
                raise PipeError(self.error)
            if self._file_read < self._file_size:
                data = await self._read_file(min(size, self._file_size - self._file_read))
                if data:
                    return data
                continue
            if self._tail:
                return self._take_tail(size)
            if self.complete:
                self._close_reader()
                return b""
            async with self._changed:
                if not (self.complete or self.error or self._tail):
                    if self._file_read >= self._file_size:
                        await self._changed.wait()

    async def _read_file(self, size: int) -> bytes:
        if self._reader is None:
            self._reader = self.path.open("rb")
        data = await asyncio.to_thread(self._reader.read, size)
        self._file_read += len(data)
        self._room.set()
        return data

    def _take_tail(self, size: int) -> bytes:
        """Up to ``size`` bytes from the tail, several chunks at once when they fit (fewer,
        larger writes for the job)."""
        chunk = self._tail.popleft()
        if len(chunk) > size:
            self._tail.appendleft(chunk[size:])
            chunk = chunk[:size]
        elif self._tail and len(chunk) + len(self._tail[0]) <= size:
            pieces = [chunk]
            taken = len(chunk)
            while self._tail and taken + len(self._tail[0]) <= size:
                pieces.append(self._tail.popleft())
                taken += len(pieces[-1])
            chunk = b"".join(pieces)
        self._tail_bytes -= len(chunk)
        self._room.set()
        return chunk

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def chunks(self, size: int = CHUNK) -> AsyncIterator[bytes]:
        while chunk := await self.read(size):
            yield chunk

    def discard(self, close_reader: bool = False) -> None:
        """Remove the spooled file. Its reader, if busy, closes itself when it sees why."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tail.clear()
        self._tail_bytes = 0
        self._reading = False
        self._room.set()
        if close_reader:
            self._close_reader()
        self.path.unlink(missing_ok=True)
        if self._account is not None:
            self._account.release()


class InputPipe:
    """The files of one upload, in order; a job iterates them as they arrive."""

    def __init__(
        self, spool_dir: Path, name: str, quota: SpoolQuota | None = None, user: str = ""
    ) -> None:
        self.spool_dir = spool_dir
        self.name = name
        self.quota = quota
        self.user = user
        self.files: list[UploadedFile] = []
        self.closed = False
        self.error: str | None = None
        self.expected_bytes: int | None = None
        self.discarded = False
        self._changed = asyncio.Condition()

    async def new_file(self, filename: str) -> UploadedFile:
        path = self.spool_dir / f"{self.name}.{len(self.files)}.upload"
        account = self.quota.account(self.user) if self.quota is not None else None
        f = await asyncio.to_thread(UploadedFile, filename, path, not self.discarded, account)
        if self.discarded:
            f.discard(close_reader=True)  # the job ended while the file was being created
        self.files.append(f)
        async with self._changed:
            self._changed.notify_all()
        return f

    async def close(self, error: str | None = None) -> None:
        """No more files. With an error, readers get it and the spooled files are removed."""
        self.closed = True
        self.error = error
        if error is not None:
            for f in self.files:
                if not f.complete and f.error is None:
                    await f.finish(error)
                f.discard()
        async with self._changed:
            self._changed.notify_all()

    def __aiter__(self) -> AsyncIterator[UploadedFile]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[UploadedFile]:
        i = 0
        while True:
            async with self._changed:
                while i >= len(self.files) and not self.closed:
                    await self._changed.wait()
            if i < len(self.files):
                yield self.files[i]
                i += 1
                continue
            if self.error is not None:
                raise PipeError(self.error)
            return

    async def first(self) -> UploadedFile:
        async for f in self:
            return f
        raise PipeError("No file was uploaded", errno.ENOENT)

    def discard(self) -> None:
        """Remove every spooled file (the job ended: nobody reads any more)."""
        self.discarded = True
        for f in self.files:
            f.discard(close_reader=True)


class OutputPipe:
    """What a job writes for download. Unbuffered: a bounded queue that the downloader
    drains (the job waits while it is full). Buffered: a spool file kept after the job."""

    def __init__(
        self,
        buffered: bool,
        spool_path: Path | None = None,
        account: SpoolAccount | None = None,
    ) -> None:
        self.buffered = buffered
        self.spool_path = spool_path
        # Buffered: charged for every byte spooled, given back when the spool is removed.
        self._account = account
        self.closed = False
        self.bytes_written = 0
        self._queue: deque[bytes] = deque()
        self._changed = asyncio.Condition()
        self._file: IO[bytes] | None = None
        # Set once a downloader has started reading.
        self.reader_attached = asyncio.Event()
        self.reader_gone = False
        # Set when the job failed: a downloader must not take a short stream for a whole one.
        self.error: str | None = None
        if buffered:
            assert spool_path is not None
            self._file = spool_path.open("xb")
            spool_path.chmod(0o600)

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise PipeError("The output pipe is closed")
        if not data:
            return
        if self._file is not None:
            if self._account is not None:
                self._account.charge(len(data))  # raises SpoolFull: the job fails with it
            self.bytes_written += len(data)
            await asyncio.to_thread(self._file.write, data)
            return
        self.bytes_written += len(data)
        async with self._changed:
            while len(self._queue) >= OUTPUT_QUEUE and not self.reader_gone:
                await self._changed.wait()
            if self.reader_gone:
                raise PipeError("The downloader went away")
            self._queue.append(data)
            self._changed.notify_all()

    async def close(self, error: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None
        async with self._changed:
            self._changed.notify_all()

    async def read(self) -> bytes:
        """The next chunk for the downloader; b"" once the job closed the pipe."""
        async with self._changed:
            while not self._queue and not self.closed:
                await self._changed.wait()
            data = self._queue.popleft() if self._queue else b""
            self._changed.notify_all()
            return data

    async def detach(self) -> None:
        """The downloader is gone: a job still writing fails instead of waiting forever."""
        self.reader_gone = True
        async with self._changed:
            self._queue.clear()
            self._changed.notify_all()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.spool_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.spool_path)
        if self._account is not None:
            self._account.release()


class Pipes:
    """The pipes opened for one job."""

    def __init__(self, input: InputPipe | None = None, output: OutputPipe | None = None) -> None:
        self.input = input
        self.output = output

    @property
    def opened(self) -> frozenset[str]:
        names = set()
        if self.input is not None:
            names.add("input")
        if self.output is not None:
            names.add("output")
        return frozenset(names)
