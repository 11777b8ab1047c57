"""The trigger engine: one timer over a heap of next fire times, event rules fed by a bus
listener, debounce windows, webhook fires; every fire stored with the job it starts in one
transaction. It knows no sockets and no HTTP: webhooks reach it verified."""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from middlewared import jsonc
from middlewared.errors import CallError, MiddlewareError
from middlewared.events.bus import ALL, CHANGED, Event
from middlewared.events.listeners import Listener
from middlewared.jobs.job import Job, JobState
from middlewared.store.base import Op
from middlewared.triggers.clock import Clock, RealClock, Timer
from middlewared.triggers.model import ONCE_TYPES, TIME_TYPES, Trigger, date, from_row
from middlewared.triggers.store import TriggerStore

if TYPE_CHECKING:
    from middlewared.app import Middleware

log = logging.getLogger(__name__)

COLLECTION = "trigger.query"
# A job started by a trigger whose events fire another trigger, and so on: at most this
# deep (a trigger never fires on its own jobs; this bounds longer loops).
MAX_CHAIN = 8
# Jobs started by triggers remembered (for the rule above), at most.
STARTED_MEMORY = 10_000
# Events one debounce window keeps for ``pass_event``, at most (later ones are counted).
WINDOW_EVENTS = 1000


def ms(seconds: float) -> int:
    return int(seconds * 1000)


class TriggerEngine:
    def __init__(self, app: Middleware, clock: Clock | None = None) -> None:
        self.app = app
        self.clock = clock or RealClock()
        self.store = TriggerStore(app.store)
        self.triggers: dict[int, Trigger] = {}
        self._by_path: dict[str, int] = {}
        self._heap: list[tuple[int, int]] = []
        self._timer: Timer | None = None
        self._timer_at: int | None = None
        self._windows: dict[int, Timer] = {}
        # Job id -> (trigger id, chain depth) of jobs triggers started.
        self._started: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._listener: Listener | None = None
        self._running = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rules: Any = None
        self._next_id = 1

    # -- life ---------------------------------------------------------------------------
    def allocate_id(self) -> int:
        """Trigger ids are never reused (the counter is raised with each insert)."""
        trigger_id = self._next_id
        self._next_id += 1
        return trigger_id

    async def start(self) -> None:
        """Load the triggers, apply the missed-runs policy, open what was open."""
        self._next_id = max(self._next_id, await self.store.next_id())
        for row in await self.store.all():
            trigger = from_row(row)
            try:
                self._derive(trigger)
            except MiddlewareError as e:
                # A trigger stored by an older version that this one no longer reads.
                trigger.paused = True
                trigger.state["last_error"] = f"Cannot be loaded: {e}"
                log.warning("trigger %d cannot be loaded: %s", trigger.id, e)
            self._add(trigger)
        self._running = True
        now = ms(self.clock.now())
        for trigger in list(self.triggers.values()):
            if trigger.type in TIME_TYPES and not trigger.paused:
                await self._catch_up(trigger, now)
        for window in await self.store.windows():
            self._reopen_window(window)
        self._reschedule()

    async def reload(self) -> None:
        """Take the triggers as the store now has them (a restored snapshot): timers,
        windows and fires in progress of the old ones are dropped, then loaded again."""
        await self.stop()
        self.triggers.clear()
        self._by_path.clear()
        self._heap.clear()
        self._timer_at = None
        self._windows.clear()
        self._rules = None
        await self.start()
        if self._listener is not None:
            self._listener.start()
        log.info("triggers reloaded: %d", len(self.triggers))

    async def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
        for timer in self._windows.values():
            timer.cancel()
        if self._listener is not None:
            await self._listener.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- registry -----------------------------------------------------------------------
    @property
    def rules(self) -> Any:
        """The index of every @event trigger's rules (made when the first one comes)."""
        if self._rules is None:
            from middlewared.triggers.rules import RuleIndex

            self._rules = RuleIndex()
        return self._rules

    def _derive(self, trigger: Trigger) -> None:
        """What the engine computes from a trigger's data (parsed once)."""
        from middlewared.triggers import parse

        parse.derive(trigger, self.app.config.triggers.allow_unsigned_webhooks)

    def _add(self, trigger: Trigger) -> None:
        self.triggers[trigger.id] = trigger
        if trigger.hook_path:
            self._by_path[trigger.hook_path] = trigger.id
        if trigger.rules is not None:
            self.rules.add(trigger.id, trigger.rules)
            self._listen()

    def _forget(self, trigger: Trigger) -> None:
        self.triggers.pop(trigger.id, None)
        if trigger.hook_path:
            self._by_path.pop(trigger.hook_path, None)
        if trigger.rules is not None and self._rules is not None:
            self._rules.remove(trigger.id)
        timer = self._windows.pop(trigger.id, None)
        if timer is not None:
            timer.cancel()

    def _listen(self) -> None:
        """The bus listener exists once some trigger has event rules."""
        if self._listener is None:
            self._listener = self.app.listen(Listener("triggers", [ALL], self._on_event))

    def find_hook(self, key: str) -> Trigger | None:
        """The webhook trigger ``/hooks/{key}`` names: by id, or by its ``auth.path``."""
        trigger_id = int(key) if key.isdigit() else self._by_path.get(key.strip("/"))
        trigger = self.triggers.get(trigger_id) if trigger_id is not None else None
        return trigger if trigger is not None and trigger.type == "@webhook" else None

    # -- time ---------------------------------------------------------------------------
    def _next_after(self, trigger: Trigger, after_ms: int) -> int | None:
        after = datetime.fromtimestamp(after_ms / 1000, UTC)
        nxt = trigger.schedule.next_after(after)
        return None if nxt is None else ms(nxt.timestamp())

    async def _catch_up(self, trigger: Trigger, now: int) -> None:
        """At start: a due time that passed while the server was down fires once now when
        the trigger says ``missed: once`` (an ``@at`` always does); else it is skipped."""
        due = trigger.next_run
        if due is None or due > now:
            if due is None and trigger.type not in ONCE_TYPES:
                trigger.next_run = self._next_after(trigger, now)
            self._push(trigger)
            return
        if trigger.type == "@at" or trigger.data["options"].get("missed") == "once":
            log.info(
                "trigger %d: a run was missed while the server was down; running it", trigger.id
            )
            trigger.next_run = due
            self._push(trigger)
            return
        skipped = due
        trigger.next_run = self._next_after(trigger, now)
        log.info("trigger %d: runs missed since %d skipped (missed: skip)", trigger.id, skipped)
        await self.store.save(trigger)
        self._push(trigger)

    def _push(self, trigger: Trigger) -> None:
        if trigger.next_run is not None and not trigger.paused:
            heapq.heappush(self._heap, (trigger.next_run, trigger.id))

    def _reschedule(self) -> None:
        """One timer, for the earliest next run (stale heap entries are skipped when due)."""
        while self._heap:
            due, trigger_id = self._heap[0]
            trigger = self.triggers.get(trigger_id)
            if trigger is None or trigger.paused or trigger.next_run != due:
                heapq.heappop(self._heap)
                continue
            break
        if not self._heap or not self._running:
            return
        due = self._heap[0][0]
        if self._timer is not None and self._timer_at == due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = self.clock.call_at(due / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = ms(self.clock.now())
        while self._heap and self._heap[0][0] <= now:
            due, trigger_id = heapq.heappop(self._heap)
            trigger = self.triggers.get(trigger_id)
            if trigger is None or trigger.paused or trigger.next_run != due:
                continue
            nxt = None if trigger.type in ONCE_TYPES else self._next_after(trigger, max(due, now))
            trigger.next_run = nxt
            self._spawn(self._fire_scheduled(trigger, due))
            self._push(trigger)
        self._reschedule()

    async def _fire_scheduled(self, trigger: Trigger, due: int) -> None:
        job = await self.fire(trigger, due=due)
        if trigger.type in ONCE_TYPES and trigger.id in self.triggers:
            if job is not None or trigger.paused:
                await self.delete(trigger)

    # -- events -------------------------------------------------------------------------
    async def _on_event(self, event: Event) -> None:
        matched = self.rules.match(event) if self._rules is not None else ()
        if not matched:
            return
        parent = self._started.get(event.cause) if event.cause is not None else None
        for trigger_id in matched:
            trigger = self.triggers.get(trigger_id)
            if trigger is None or trigger.paused:
                continue
            if parent is not None and parent[0] == trigger_id:
                continue  # never on what its own jobs did
            if not self._may_see(trigger, event):
                continue  # its owner could not have subscribed to this event
            depth = 0 if parent is None else parent[1] + 1
            if depth >= MAX_CHAIN:
                log.warning(
                    "trigger %d: not fired on %s %s: a chain of %d triggers",
                    trigger_id,
                    event.collection,
                    event.id,
                    depth,
                )
                continue
            payload = {
                "collection": event.collection,
                "verb": _verb(event.msg),
                "id": event.id,
                "fields": event.fields,
            }
            await self._arrive(trigger, payload, depth)

    def _may_see(self, trigger: Trigger, event: Event) -> bool:
        """A trigger hears what its owner could hear on a subscription, no more."""
        creds = self.app.directory.resolve(trigger.identity)
        if creds is None or not self.app.collections.may_subscribe(event.collection, creds):
            return False
        return self.app.visibility.event(creds, event)

    async def webhook(self, trigger: Trigger, request: dict[str, Any]) -> dict[str, Any]:
        """A verified webhook request: ``{"job_id"}`` or ``{"debounced", "fires_at"}``.
        Raises CallError with errno EBUSY when the overlap policy leaves no room."""
        if trigger.debounce is None and not self._overlap_allows(trigger):
            policy = trigger.data["options"].get("overlap", "queue")
            raise CallError(f"The trigger's previous job still runs (overlap: {policy})", 16)
        answer = await self._arrive(trigger, request, 0)
        if answer is None:
            raise CallError(trigger.state.get("last_error") or "The trigger did not start", 5)
        return answer

    async def _arrive(
        self, trigger: Trigger, payload: dict[str, Any], depth: int
    ) -> dict[str, Any] | None:
        """An event or a request for ``trigger``: into its debounce window, or a fire."""
        if trigger.debounce is not None:
            return await self._absorb(trigger, payload)
        due = self._event_due(trigger)
        events = [payload] if trigger.data.get("pass_event") else None
        job = await self.fire(trigger, due=due, events=events, depth=depth)
        return None if job is None else {"job_id": job.id}

    def _event_due(self, trigger: Trigger) -> int:
        due = max(ms(self.clock.now()), trigger.last_due + 1)
        trigger.last_due = due
        return due

    # -- debounce -----------------------------------------------------------------------
    async def _absorb(self, trigger: Trigger, payload: dict[str, Any]) -> dict[str, Any]:
        """The first event opens a window of ``debounce`` (stored, so that it survives a
        restart); later ones are absorbed and do not extend it; it fires when it closes."""
        window = trigger.state.get("window")
        if window is None:
            assert trigger.debounce is not None
            fires_at = ms(self.clock.now() + trigger.debounce.total_seconds())
            window = {"fires_at": fires_at, "events": [payload], "dropped": 0}
            trigger.state["window"] = window
            await self.store.open_window(trigger.id, fires_at, [payload])
            self._windows[trigger.id] = self.clock.call_at(
                fires_at / 1000, lambda: self._close_soon(trigger.id)
            )
        elif len(window["events"]) < WINDOW_EVENTS:
            window["events"].append(payload)
        else:
            window["dropped"] += 1
        return {"debounced": True, "fires_at": date(window["fires_at"])}

    def _reopen_window(self, row: dict[str, Any]) -> None:
        trigger = self.triggers.get(int(row["trigger_id"]))
        if trigger is None:
            return
        events = jsonc.loads(row["events"])
        trigger.state["window"] = {
            "fires_at": row["fires_at"],
            "events": events,
            "dropped": 0,
            "restored": True,
        }
        self._windows[trigger.id] = self.clock.call_at(
            row["fires_at"] / 1000, lambda: self._close_soon(trigger.id)
        )

    def _close_soon(self, trigger_id: int) -> None:
        self._windows.pop(trigger_id, None)
        trigger = self.triggers.get(trigger_id)
        if trigger is not None:
            self._spawn(self._close(trigger))

    async def _close(self, trigger: Trigger) -> None:
        window = trigger.state.pop("window", None)
        if window is None:
            return
        events = window["events"] if trigger.data.get("pass_event") else None
        job = await self.fire(trigger, due=window["fires_at"], events=events, closing_window=True)
        if job is None:
            await self.store.close_window(trigger.id)

    # -- firing -------------------------------------------------------------------------
    def _overlap_allows(self, trigger: Trigger) -> bool:
        """``overlap``: while its previous job runs, ``queue`` keeps one more waiting
        (karajo's rule), ``skip`` drops the fire, ``allow`` runs both."""
        policy = trigger.data["options"].get("overlap", "queue")
        if policy == "allow" or not trigger.running:
            return True
        if policy == "skip":
            return False
        return len(trigger.running) < 2  # the one that runs (or is about to), one waiting

    async def fire(
        self,
        trigger: Trigger,
        *,
        due: int,
        events: list[dict[str, Any]] | None = None,
        depth: int = 0,
        manual: bool = False,
        closing_window: bool = False,
    ) -> Job | None:
        """Start the trigger's job: the fire row, the trigger's new state and the job's
        insert in one transaction. None when it did not start (and why is logged)."""
        creds = self.app.directory.resolve(trigger.identity)
        if creds is None:
            await self.pause(trigger, "Its owner was deleted or locked, or its API key revoked")
            return None
        if not manual and not self._overlap_allows(trigger):
            log.info("trigger %d: fire at %d dropped: its previous job still runs", trigger.id, due)
            return None
        params = list(trigger.data.get("params") or [])
        if events is not None:
            params.append({"trigger_id": trigger.id, "fired_at": date(due), "events": events})
        now = ms(self.clock.now())
        state = trigger.state
        before = dict(state)
        state["status"] = "running"
        state["last_execution"] = now
        state["runs"] = int(state.get("runs") or 0) + 1
        if manual:
            state["last_manual_execution"] = now

        def ops(job_id: int) -> list[Op]:
            state["last_executed_job_id"] = job_id
            if manual:
                state["last_manual_job_id"] = job_id
            writes = [
                Op("insert_trigger_fire", {"trigger_id": trigger.id, "due": due, "job_id": job_id}),
                Op("update_trigger", trigger.row(), ("trigger", trigger.id)),
            ]
            if closing_window:
                writes.append(Op("close_trigger_window", {"trigger_id": trigger.id}))
            return writes

        # Its jobs wait for one another (overlap "queue") under a lock of the trigger's own,
        # unless their method has a lock of its own.
        policy = trigger.data["options"].get("overlap", "queue")
        lock = f"trigger:{trigger.id}" if policy != "allow" else None
        try:
            job: Job = await self.app.calls.call(
                trigger.data["method"],
                params,
                creds,
                origin=f"trigger:{trigger.id}",
                return_job=True,
                extra_ops=ops,
                lock_key=lock,
            )
        except MiddlewareError as e:
            trigger.state = before
            if e.errno in (1, 13, 201, 207):  # EPERM, EACCES, ENOMETHOD, not authenticated
                await self.pause(trigger, f"Cannot start {trigger.data['method']}: {e.reason}")
            else:
                log.warning("trigger %d: fire at %d failed: %s", trigger.id, due, e)
                trigger.state["last_error"] = e.reason
                self._publish(trigger)
            return None
        self._remember(job.id, trigger.id, depth)
        trigger.running.add(job.id)
        job.on_ended.append(lambda j: self._ended(trigger, j))
        self._publish(trigger)
        return job

    def _remember(self, job_id: int, trigger_id: int, depth: int) -> None:
        self._started[job_id] = (trigger_id, depth)
        while len(self._started) > STARTED_MEMORY:
            self._started.popitem(last=False)

    def _ended(self, trigger: Trigger, job: Job) -> None:
        """Its job ended: the trigger's state says how, notifiers hear of it. The trigger as
        it is now (changed or reloaded since it fired), not the one that fired."""
        current = self.triggers.get(trigger.id)
        if current is None:
            return  # deleted meanwhile
        trigger = current
        trigger.running.discard(job.id)
        now = ms(self.clock.now())
        state = trigger.state
        if job.state is JobState.SUCCESS:
            state.update(status="done", last_success=now, last_successful_job_id=job.id)
        else:
            state.update(
                status="errored", last_failure=now, last_failed_job_id=job.id, last_error=job.error
            )
        self._spawn(self._save_and_notify(trigger, job))

    async def _save_and_notify(self, trigger: Trigger, job: Job) -> None:
        await self.store.save(trigger)
        self._publish(trigger)
        names = trigger.data.get(
            "notify_on_success" if job.state is JobState.SUCCESS else "notify_on_failure"
        )
        if names:
            notifiers = self.app.notifiers
            record = job.record(admin=True)
            self.app.notifiers.notify_soon(
                names,
                job=record,
                counter=int(trigger.state.get("runs") or 0),
                subject_name=trigger.data.get("description") or f"trigger {trigger.id}",
                log_text=await notifiers.read_log(record.get("logs_path")),
            )

    # -- control ------------------------------------------------------------------------
    async def add(self, trigger: Trigger) -> None:
        """A trigger just created (validated, ``_derive``d): stored, scheduled, announced."""
        if trigger.type in TIME_TYPES:
            trigger.next_run = self._first_run(trigger)
        await self.store.insert(trigger)
        self._add(trigger)
        self._push(trigger)
        self._reschedule()
        self._publish(trigger, added=True)

    def _first_run(self, trigger: Trigger) -> int | None:
        return self._next_after(
            trigger, ms(self.clock.now()) if trigger.type != "@in" else trigger.created - 1
        )

    async def replace(self, trigger: Trigger, new: Trigger) -> None:
        """``trigger.update``: the new data, the state and history kept."""
        self._forget(trigger)
        new.state = trigger.state
        new.paused = trigger.paused
        new.running = trigger.running
        new.last_due = trigger.last_due
        if new.type in TIME_TYPES:
            new.next_run = self._first_run(new)
        await self.store.save(new)
        self._add(new)
        self._push(new)
        self._reschedule()
        self._publish(new)

    async def delete(self, trigger: Trigger) -> None:
        self._forget(trigger)
        await self.store.delete(trigger.id)
        self._publish(trigger, removed=True)

    async def pause(self, trigger: Trigger, reason: str | None = None) -> None:
        trigger.paused = True
        if reason is not None:
            trigger.state["last_error"] = reason
            log.warning("trigger %d paused: %s", trigger.id, reason)
        await self.store.save(trigger)
        self._reschedule()
        self._publish(trigger)

    async def resume(self, trigger: Trigger) -> None:
        trigger.paused = False
        if trigger.type in TIME_TYPES:
            trigger.next_run = self._next_after(trigger, ms(self.clock.now()))
        await self.store.save(trigger)
        self._push(trigger)
        self._reschedule()
        self._publish(trigger)

    async def launch(self, trigger: Trigger) -> Job:
        """Run it once now, paused or not (a manual run)."""
        job = await self.fire(trigger, due=self._event_due(trigger), manual=True)
        if job is None:
            raise CallError(trigger.state.get("last_error") or "The trigger did not start")
        return job

    async def check_owners(self) -> None:
        """Users or keys changed: triggers whose owner is gone are paused with the reason."""
        for trigger in list(self.triggers.values()):
            if not trigger.paused and self.app.directory.resolve(trigger.identity) is None:
                await self.pause(trigger, "Its owner was deleted or locked, or its API key revoked")

    # -- events of trigger.query --------------------------------------------------------
    def record(self, trigger: Trigger) -> dict[str, Any]:
        """As trigger.query shows it: its params as its method's job records show them."""
        mounted = self.app.methods.get(trigger.data["method"])
        params = list(trigger.data.get("params") or [])
        shown = mounted.binder.redact(params) if mounted is not None else params
        return trigger.record(self.app.directory.username_of(trigger.owner_id), shown)

    def _publish(self, trigger: Trigger, added: bool = False, removed: bool = False) -> None:
        if not self.app.bus.has_consumers(COLLECTION):
            return
        msg = "added" if added else "removed" if removed else CHANGED
        fields = None if removed else self.record(trigger)
        self.app.bus.publish(
            Event(
                COLLECTION, msg, trigger.id, fields, trigger.owner_id, owner_key=trigger.owner_key
            )
        )

    async def drain(self) -> None:
        """Return once every fire, window and state save started so far is done (tests;
        shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("trigger task failed", exc_info=task.exception())


def _verb(msg: str) -> str:
    return {"added": "CREATED", "changed": "UPDATED", "removed": "DELETED"}.get(msg, msg)
