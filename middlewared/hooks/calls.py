"""The call path that also tells ``on.<method>`` scripts of each call's outcome. Mounted
only with ``--trigger-on-api``: without it the server uses ``Calls`` itself, at no cost."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from middlewared.auth.credentials import Credentials
from middlewared.calls import Calls, Methods

if TYPE_CHECKING:
    from middlewared.context import ServerApi
    from middlewared.hooks.manager import Hooks
    from middlewared.jobs.engine import JobEngine


def observed(origin: str) -> bool:
    """Calls from clients (one by one, in a batch, in ``core.bulk``); not those the server
    makes itself (plugins' internal calls, triggers' jobs)."""
    return origin == "call" or origin.startswith("bulk")


class ObservedCalls(Calls):
    def __init__(
        self,
        hooks: Hooks,
        app: ServerApi,
        methods: Methods,
        engine: JobEngine,
        max_live_jobs_per_user: int,
    ) -> None:
        super().__init__(app, methods, engine, max_live_jobs_per_user)
        self.hooks = hooks

    async def call(self, name: str, params: Any, creds: Credentials | None, **options: Any) -> Any:
        """As ``Calls.call``; then, for a method that exists, its ``on.<method>`` script (a
        call to no method runs nothing: its name is the client's)."""
        # A job handed back unfinished (core.bulk's): its end runs job.<STATE> instead.
        if options.get("return_job") or not observed(options.get("origin", "call")):
            return await super().call(name, params, creds, **options)
        try:
            result = await super().call(name, params, creds, **options)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            mounted = self.methods.get(name)
            if mounted is not None:
                self.hooks.api_call(mounted, params, None, e)
            raise
        mounted = self.methods.get(name)
        if mounted is not None:
            self.hooks.api_call(mounted, params, result, None)
        return result
