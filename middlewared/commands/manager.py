"""Runs commands as jobs: the room to run, the run's counter, environment and token, its
log under karajo's name, its notifications, and what a crash left behind."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, Any

from middlewared import jsonc
from middlewared.auth.credentials import Credentials
from middlewared.commands import runner
from middlewared.commands.book import CommandBook, log_failure
from middlewared.commands.logfiles import LogFiles
from middlewared.commands.model import Command, Env, parse_env
from middlewared.commands.orphans import end_orphans
from middlewared.commands.process import boot_id
from middlewared.commands.slots import Slots
from middlewared.errors import Busy
from middlewared.jobs.job import Job, JobState

if TYPE_CHECKING:
    from middlewared.app import Middleware

log = logging.getLogger(__name__)

# Server variables a command inherits (nothing else of the server's environment).
INHERITED = ("LANG", "LC_ALL", "TZ")
# A run's token outlives its timeout by this much at most (it is revoked when the run ends).
TOKEN_SLACK = 60.0
TOKEN_TTL_NO_TIMEOUT = 7 * 86400.0


class CommandManager:
    def __init__(self, app: Middleware) -> None:
        self.app = app
        self.limits = app.config.commands
        self.book = CommandBook(app.store, app.publish, self.limits.max_commands)
        self.logs = LogFiles(app.config.logs_dir)
        self.slots = Slots(self.limits.max_running)
        self.boot = boot_id()
        self._notifying: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """End what the runs a crash interrupted left running, and close those runs."""
        interrupted = await self.book.running()
        if not interrupted:
            return
        await end_orphans(interrupted, self.limits.kill_grace_seconds)
        for run in interrupted:
            await self.book.end_run(run["command"], run["counter"], "fail", JobState.FAILED)
            await asyncio.to_thread(self.logs.finish, run["command"], run["counter"], "fail", None)

    def busy(self, name: str) -> bool:
        return self.slots.running_of(name) > 0

    # -- one run ----------------------------------------------------------------------------
    async def run(
        self,
        job: Job,
        creds: Credentials,
        name: str,
        env: dict[str, Any],
        event: Any,
    ) -> dict[str, Any]:
        command = await self.book.get(name)
        return await self.run_command(job, creds, command, parse_env(env, "env"), event)

    async def run_command(
        self, job: Job, creds: Credentials, command: Command, given: Env, event: Any = None
    ) -> dict[str, Any]:
        """Run ``command``, kept in the book or not (a cron job's line): the same slots,
        process groups, token, log files and orphan records as any command's run."""
        name = command.name
        if not self.slots.free(name, command.max_concurrency):
            job.set_progress(None, "Waiting for a free slot (--max-running-commands)")
        await self.slots.acquire(name, command.max_concurrency)
        try:
            return await self._run(job, creds, command, given, event)
        finally:
            self.slots.release(name)

    async def _run(
        self, job: Job, creds: Credentials, command: Command, given: Any, event: Any
    ) -> dict[str, Any]:
        name = command.name
        counter = await self.book.begin_run(command, job.id)
        grant: str | None = None
        status, state = "fail", JobState.FAILED
        try:
            cwd = self.app.config.commands_dir / name
            await asyncio.to_thread(_prepare, cwd, job, self.logs, name, counter)
            job.set_progress(0, f"Run {counter} of {name}")
            grant, token = self._token(creds, command)
            secrets = [*command.secrets, *(v.value for v in given.values() if v.secret)]
            spec = runner.RunSpec(
                name=name,
                lines=command.commands,
                cwd=cwd,
                env=self._environment(command, given, cwd, job, counter, token, event),
                timeout=command.timeout,
                grace=self.limits.kill_grace_seconds,
                secrets=[*secrets, *([token] if token else [])],
            )
            self._notify_at_end(job, command, counter)
            await runner.run(spec, self._hooks(job, name, counter))
            status, state = "success", JobState.SUCCESS
        except asyncio.CancelledError:
            state = JobState.ABORTED
            raise
        finally:
            if grant is not None:
                self.app.end_grant(grant)
            await self._end(name, counter, status, state, job, command.log_retention)
        return {"command": name, "counter": counter}

    def _hooks(self, job: Job, name: str, counter: int) -> runner.RunHooks:
        book, boot = self.book, self.boot
        return runner.RunHooks(
            output=job.log_bytes,
            output_full=job.log_full,
            progress=lambda p: job.set_progress(
                p.get("percent"), p.get("description"), p.get("extra")
            ),
            spawned=lambda pgid, start: book.set_process(name, counter, pgid, boot, start),
            reaped=lambda pgid: book.set_process(name, counter, None, boot, None),
        )

    def _token(self, creds: Credentials, command: Command) -> tuple[str | None, str | None]:
        """A token valid for this run only, limited to the command's ``allow`` list."""
        identity = creds.identity
        if identity is None:
            return None, None
        directory = self.app.directory
        grant = directory.grants.open(command.allow)
        scoped = directory.resolve(dataclasses.replace(identity, grant=grant))
        if scoped is None:
            directory.grants.close(grant)
            return None, None
        ttl = (command.timeout or TOKEN_TTL_NO_TIMEOUT) + self.limits.kill_grace_seconds
        try:
            token = self.app.tokens.issue(scoped, ttl + TOKEN_SLACK, single_use=False)
        except Exception:
            directory.grants.close(grant)
            raise
        return grant, token

    def _environment(
        self,
        command: Command,
        given: Any,
        cwd: Path,
        job: Job,
        counter: int,
        token: str | None,
        event: Any,
    ) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED if k in os.environ}
        env["PATH"] = _path()
        env["HOME"] = str(cwd)
        env.update({k: v.value for k, v in command.env.items()})
        env.update({k: v.value for k, v in given.items()})
        env.update(
            {
                "MIDDLEWARED_URL": self.app.ws_url,
                "MIDDLEWARED_JOB_ID": str(job.id),
                "MIDDLEWARED_COUNTER": str(counter),
                "MIDDLEWARED_COMMAND": command.name,
                "MIDDLEWARED_FIELDS": jsonc.dumps({} if event is None else event),
                "MIDDLEWARED_PROGRESS_FD": str(runner.PROGRESS_FD),
            }
        )
        if token is not None:
            env["MIDDLEWARED_TOKEN"] = token
        if self.app.cafile is not None:
            env["MIDDLEWARED_CAFILE"] = str(self.app.cafile)
        return env

    async def _end(
        self, name: str, counter: int, status: str, state: JobState, job: Job, keep: int
    ) -> None:
        # Not waited for: the job's own end is stored after it, in order.
        self.book.end_run(name, counter, status, state).add_done_callback(log_failure)
        path = job.logs.path if job.logs is not None else None
        await asyncio.to_thread(self.logs.finish, name, counter, status, path)
        if counter > keep:
            await self._prune(name, counter - keep)

    async def _prune(self, name: str, last: int) -> None:
        """Keep the last ``log_retention`` runs' logs (karajo's rule): those up to ``last``
        go (by counter: this run's own row may not be readable yet)."""
        runs = await self.book.runs(name)
        old = [r["counter"] for r in runs if r["counter"] <= last and r["status"] != "running"]
        if old:
            await self.book.forget_runs(name, old)
            await asyncio.to_thread(_remove_logs, self.logs, name, old)

    # -- notifications ------------------------------------------------------------------------
    def _notify_at_end(self, job: Job, command: Command, counter: int) -> None:
        if not (command.notify_on_success or command.notify_on_failure):
            return
        task = asyncio.get_running_loop().create_task(self._notify(job, command, counter))
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _notify(self, job: Job, command: Command, counter: int) -> None:
        """Once the job ended (its record final), its notifiers are told, as a trigger's."""
        with contextlib.suppress(Exception):
            await job.wait()
        ok = job.state is JobState.SUCCESS
        names = command.notify_on_success if ok else command.notify_on_failure
        if not names:
            return
        notifiers = self.app.notifiers
        log_text = await notifiers.read_log(job.logs.path if job.logs is not None else None)
        notifiers.notify_soon(
            names, job=job.record(), counter=counter, subject_name=command.name, log_text=log_text
        )

    # -- administration -------------------------------------------------------------------------
    async def delete(self, name: str) -> Command:
        if self.busy(name):
            raise Busy(f"Command {name!r} is running: abort its jobs first")
        command = await self.book.delete(name)
        await asyncio.to_thread(self.logs.remove_all, name)
        return command


def _prepare(cwd: Path, job: Job, logs: LogFiles, name: str, counter: int) -> None:
    cwd.mkdir(mode=0o700, parents=True, exist_ok=True)
    if job.logs is not None:
        job.logs.open_now()
        logs.start(name, counter, job.logs.path)


def _remove_logs(logs: LogFiles, name: str, counters: list[int]) -> None:
    for counter in counters:
        logs.remove(name, counter)


def _path() -> str:
    """The server's PATH, with the folder of its own scripts first (``midclt``)."""
    scripts = sysconfig.get_path("scripts")
    rest = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return f"{scripts}{os.pathsep}{rest}" if scripts else rest
