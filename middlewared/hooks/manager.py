"""Events to hook runs: ``launch`` once the server listens, ``job.<STATE>`` as a job ends,
``upload.complete`` and ``upload.complete.json`` as an upload's job succeeds, ``on.<method>``
after a call (with ``--trigger-on-api``). Each looks its script up at that moment and hands
the run to the pool; nothing here waits for a script."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sysconfig
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from middlewared import jsonc
from middlewared.commands.manager import INHERITED
from middlewared.config import HookConfig
from middlewared.errors import MiddlewareError
from middlewared.events.bus import REMOVED, Event
from middlewared.events.listeners import Listener
from middlewared.hooks.execute import Limits, execute
from middlewared.hooks.pool import HookPool
from middlewared.hooks.record import Run, RunLog, RunRecord
from middlewared.hooks.redact import shown_params, shown_result
from middlewared.hooks.scripts import ScriptDir
from middlewared.jobs.events import COLLECTION
from middlewared.jobs.job import Job, JobState

if TYPE_CHECKING:
    from middlewared.app import Middleware
    from middlewared.calls import Mounted

log = logging.getLogger(__name__)

ENDED = frozenset({"SUCCESS", "FAILED", "ABORTED"})
# Linux refuses to exec with one argument longer than 128 KiB (MAX_ARG_STRLEN): a longer
# one is given as ``{"truncated": <its size in bytes>}``.
MAX_ARG_BYTES = 120 * 1024
# Upload jobs whose end waits for their event, and job ids already handled (a job's end
# may be announced again when the store took it late).
MAX_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class UploadEnd:
    username: str
    input_files: list[str]
    output_files: list[str]
    user_data: dict[str, Any]


class Hooks:
    """One per server; does nothing without ``--trigger-dir``."""

    def __init__(
        self, app: Middleware, config: HookConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.config = config
        self.clock = clock
        self.log = RunLog(config.log_file)
        self.scripts = (
            None if config.directory is None else ScriptDir(config.directory, self._unrunnable)
        )
        self.pool: HookPool | None = None
        self._listener: Listener | None = None
        self._uploads: OrderedDict[int, UploadEnd] = OrderedDict()
        self._handled: OrderedDict[int, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.scripts is not None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self.scripts is None:
            return
        await asyncio.to_thread(self.scripts.check)
        await asyncio.to_thread(self.log.open)
        limits = Limits(self.config.timeout_seconds, self.config.kill_grace_seconds)
        directory = self.scripts.path

        async def run(r: Run) -> RunRecord:
            return await execute(r, directory, self._env(r.event), limits, self.clock)

        self.pool = HookPool(run, self.log.add, self._dropped, self.config.concurrency)
        self._listener = self.app.listen(Listener("hooks", [COLLECTION], self._job_event))
        log.info(
            "hook scripts from %s (timeout %g s, %d at once%s)",
            directory,
            self.config.timeout_seconds,
            self.config.concurrency,
            ", on.<method> after each call" if self.config.on_api else "",
        )

    async def stop(self) -> None:
        """Scripts running are ended; those waiting never run (their count is logged)."""
        if self._listener is not None:
            self.app.bus.remove_listener(self._listener)
            await self._listener.stop()
            self._listener = None
        if self.pool is not None:
            dropped = await self.pool.close()
            if dropped:
                log.warning("hook scripts: %d runs waiting at shutdown were dropped", dropped)
            self.pool = None
        self.log.close()

    def runs(self, limit: int) -> list[dict[str, Any]]:
        return self.log.last(limit)

    def status(self) -> dict[str, Any]:
        pool = self.pool
        counters = pool.counters if pool is not None else None
        return {
            "directory": None if self.scripts is None else str(self.scripts.path),
            "on_api": self.config.on_api,
            "running": pool.running if pool is not None else 0,
            "waiting": pool.waiting if pool is not None else 0,
            "finished": counters.finished if counters is not None else 0,
            "dropped": counters.dropped if counters is not None else 0,
        }

    # -- events ---------------------------------------------------------------------------
    def launched(self, port: int) -> None:
        """The server listens on ``port``."""
        self.fire("launch", [str(port)])

    def fire(self, event: str, args: Sequence[str], stdin: bytes | None = None) -> bool:
        """Queue a run of ``event``'s script if there is one now (False: none, or dropped)."""
        if self.scripts is None or self.pool is None:
            return False
        script = self.scripts.find(event)
        if script is None:
            return False
        return self.pool.submit(Run(event, script, tuple(_arg(a) for a in args), stdin))

    async def _job_event(self, event: Event) -> None:
        fields = event.fields
        if event.msg == REMOVED or not fields or fields.get("state") not in ENDED:
            return
        job_id = event.id
        if job_id in self._handled:
            return
        _remember(self._handled, job_id, None)
        state = fields["state"]
        username = _username(fields)
        self.fire(
            f"job.{state}", [str(job_id), str(fields.get("method")), username], _record(event)
        )
        upload = self._uploads.pop(job_id, None)
        if upload is not None and state == "SUCCESS":
            self._upload_complete(job_id, upload)

    def watch_upload(self, job: Job) -> None:
        """``job`` reads an upload: when it succeeds, ``upload.complete`` runs (after its
        ``job.SUCCESS``, once its end is stored)."""
        if self.scripts is None or job.pipes.input is None:
            return
        if job.ended:
            self._upload_ended(job)
        else:
            job.on_ended.append(self._upload_ended)

    def _upload_ended(self, job: Job) -> None:
        pipe = job.pipes.input
        if job.state is not JobState.SUCCESS or pipe is None:
            return
        result = job.result
        written = (
            result if isinstance(result, list) and all(isinstance(r, str) for r in result) else []
        )
        end = UploadEnd(
            job.credentials.username,
            [f.filename for f in pipe.files],
            list(written),
            {"method": job.method, "params": job.shown_arguments},
        )
        _remember(self._uploads, job.id, end)

    def _upload_complete(self, job_id: int, upload: UploadEnd) -> None:
        args = [str(job_id), upload.username]
        outputs = upload.output_files
        lines = "".join(
            f"{_line(name)} {_line(outputs[i]) if i < len(outputs) else ''}".rstrip() + "\n"
            for i, name in enumerate(upload.input_files)
        )
        self.fire("upload.complete", args, lines.encode())
        data = {
            "inputFiles": upload.input_files,
            "outputFiles": outputs,
            "userData": upload.user_data,
        }
        self.fire("upload.complete.json", args, jsonc.dumpb(data))

    def api_call(
        self, mounted: Mounted, params: Any, result: Any, error: BaseException | None
    ) -> None:
        """A call of ``mounted`` ended (``error`` None: with ``result``)."""
        spec = mounted.spec
        if self.scripts is None or self.pool is None:
            return
        script = self.scripts.find(f"on.{spec.name}")
        if script is None:
            return
        call = {"request": spec.name, "parameters": shown_params(params, spec.params)}
        if error is None:
            status, message = "success", "OK"
            shown = _json(shown_result(result, spec.returns))
        else:
            status = "error"
            if isinstance(error, MiddlewareError):
                data = error.error_data()
                message = error.reason
            else:
                message = str(error) or type(error).__name__
                data = {"error": None, "errname": None, "reason": message, "extra": None}
            data.pop("trace", None)
            shown = _json({"error": data})
        run = Run(
            f"on.{spec.name}", script, (_arg(_json(call)), status, _arg(message), _arg(shown))
        )
        self.pool.submit(run)

    # -- what scripts are given -------------------------------------------------------------
    def _env(self, event: str) -> dict[str, str]:
        env = {k: os.environ[k] for k in ("HOME", *INHERITED) if k in os.environ}
        env["PATH"] = _path()
        env["MIDDLEWARED_URL"] = self.app.ws_url
        env["MIDDLEWARED_HOOK_EVENT"] = event
        return env

    def _unrunnable(self, event: str, path: Path, why: str) -> None:
        self.log.note(event, path, f"{why}: not run (reported once)")

    def _dropped(self, run: Run, why: str, count: int) -> None:
        self.log.note(run.event, run.script, f"run dropped ({why}); {count} dropped so far")


@functools.cache
def _path() -> str:
    """The server's PATH, with the folder of its own scripts (``midclt``) first."""
    scripts = sysconfig.get_path("scripts")
    rest = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return f"{scripts}{os.pathsep}{rest}" if scripts else rest


def _arg(text: str) -> str:
    """An argument exec takes: no NUL, at most MAX_ARG_BYTES."""
    text = text.replace("\0", "\ufffd")
    size = len(text.encode("utf-8", "surrogateescape"))
    return text if size <= MAX_ARG_BYTES else jsonc.dumps({"truncated": size})


def _line(name: str) -> str:
    """A file name on one line of ``upload.complete``'s stdin."""
    return name.replace("\n", "?").replace("\r", "?")


def _json(value: Any) -> str:
    try:
        return jsonc.dumps(value)
    except jsonc.EncodeError:
        return "null"


def _record(event: Event) -> bytes:
    """The job's record as administrators see it, as JSON."""
    if event.encoded_fields is not None:
        return event.encoded_fields.encode()
    fields = {**(event.fields or {}), **(event.admin_fields or {})}
    return jsonc.dumpb(fields)


def _username(fields: dict[str, Any]) -> str:
    creds = fields.get("credentials") or {}
    data = creds.get("data") if isinstance(creds, dict) else None
    name = data.get("username") if isinstance(data, dict) else None
    return str(name or "")


def _remember(seen: OrderedDict[int, Any], key: int, value: Any) -> None:
    seen[key] = value
    if len(seen) > MAX_TRACKED:
        seen.popitem(last=False)
