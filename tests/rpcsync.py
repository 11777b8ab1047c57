"""A synchronous JSON-RPC client for acceptance tests, and polling helpers."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from websockets.sync.client import ClientConnection, connect

TIMEOUT = 30.0
POLL = 0.05
ENDED = ("SUCCESS", "FAILED", "ABORTED")


class Rpc:
    """A plain synchronous JSON-RPC connection (notifications are skipped)."""

    def __init__(self, url: str, password: str | None = None) -> None:
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(
                url,
                max_size=None,
                max_queue=None,
                open_timeout=10,
                close_timeout=2,
                ping_interval=None,
            )
        )
        self._ids = itertools.count(1)
        if password is not None:
            assert self.result("auth.login", "root", password) is True

    def call(self, method: str, *params: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)})
        )
        while True:
            msg = json.loads(self.ws.recv(timeout=timeout))
            if isinstance(msg, dict) and msg.get("id") == msg_id:
                return msg

    def result(self, method: str, *params: Any) -> Any:
        reply = self.call(method, *params)
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.result("core.stats")
        return stats

    def start(self, method: str, *params: Any) -> int:
        """Start a job and return its id at once (legacy_jobs)."""
        self.result("core.set_options", {"legacy_jobs": True})
        try:
            job_id: int = self.result(method, *params)
        finally:
            self.result("core.set_options", {"legacy_jobs": False})
        return job_id

    def job(self, job_id: int) -> dict[str, Any]:
        record: dict[str, Any] = self.result("core.get_jobs", [["id", "=", job_id]], {"get": True})
        return record

    def close(self) -> None:
        self._stack.close()


def wait_ended(admin: Rpc, ids: list[int], timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records: list[dict[str, Any]] = admin.result(
            "core.get_jobs", [["id", "in", ids]], {"order_by": ["id"]}
        )
        if len(records) == len(ids) and all(r["state"] in ENDED for r in records):
            return records
        assert time.monotonic() < deadline, [(r["id"], r["state"]) for r in records]
        time.sleep(POLL)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)
    return value
