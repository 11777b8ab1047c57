"""``midclt command run NAME``: run a command with its progress bar on stderr and its log
streamed to stdout as the server writes it."""

from __future__ import annotations

import argparse
import asyncio
import codecs
import sys
from typing import Any, TextIO

from middlewared.errors import MiddlewareError
from middlewared_client.aclient import AsyncClient
from middlewared_client.clitext import ProgressBar, job_result, progress_bar

# Bytes of log asked for at once.
LOG_CHUNK = 1 << 20


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"not NAME=VALUE: {pair!r}")
        env[name] = value
    return env


class LogFollower:
    """Reads a run's log from where it last stopped, and writes it out as text."""

    def __init__(self, client: AsyncClient, name: str, out: TextIO, bar: ProgressBar) -> None:
        self.client = client
        self.name = name
        self.out = out
        self.bar = bar
        self.counter: int | None = None
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    async def pull(self, job_id: int) -> None:
        if self.counter is None and not await self._find(job_id):
            return
        while True:
            options = {"offset": self.offset, "limit": LOG_CHUNK}
            text = await self.client.call("command.log", self.name, self.counter, options)
            # The server sends bytes that are not UTF-8 as surrogate escapes: counted exactly.
            data = text.encode("utf-8", "surrogateescape")
            self.offset += len(data)
            self._write(self._decoder.decode(data))
            if len(data) < LOG_CHUNK:
                return

    async def _find(self, job_id: int) -> bool:
        runs: list[dict[str, Any]] = await self.client.call("command.logs", self.name)
        for run in runs:
            if run.get("job_id") == job_id:
                self.counter = int(run["counter"])
                return True
        return False  # still waiting for a free slot

    def finish(self) -> None:
        self._write(self._decoder.decode(b"", final=True))

    def _write(self, text: str) -> None:
        if text:
            self.bar.clear()
            self.out.write(text)
            self.out.flush()


async def run_command(client: AsyncClient, args: argparse.Namespace) -> int:
    bar = progress_bar()
    handle = await client.call("command.run", args.name, args.env, job=True)
    changed = asyncio.Event()
    handle.add_change_callback(lambda fields: changed.set())
    follower = LogFollower(client, args.name, sys.stdout, bar)

    async def follow(job_id: int) -> None:
        while not handle.done():
            await changed.wait()
            changed.clear()
            try:
                await follower.pull(job_id)
            except MiddlewareError:
                # The run's log is being moved to its final name as the run ends: the pull
                # after the end reads the rest.
                continue
            bar.update(handle.progress)

    following = asyncio.create_task(follow(await handle.wait_id()))
    try:
        failure: MiddlewareError | None = None
        try:
            await job_result(handle, bar)  # on Ctrl-C it says how to stop the run
        except MiddlewareError as e:
            failure = e
        await following
        await follower.pull(await handle.wait_id())
        follower.finish()
        if failure is not None:
            raise failure
    finally:
        following.cancel()
    return 0
