"""A runner: takes tasks from a shared queue and runs their handlers in this process.

Every ``peer-grpc serve`` on Redis has one unless started with ``--no-run-tasks``,
and ``peer-grpc worker`` is nothing else. A runner claims as many tasks as it has
free slots, holds each under a lease, renews all its leases in one store step per
tick, and learns at that tick which of its tasks ended elsewhere (canceled, or
taken over after its lease lapsed) and stops their handlers. Each tick it also
reclaims tasks whose runner died: see :class:`~peer_grpc.stores.protocols.TaskQueue`.
No gRPC here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from peer_grpc.core.clock import Clock, SystemClock
from peer_grpc.core.errors import StoreUnavailable
from peer_grpc.core.task import Task, TaskChange, TaskState
from peer_grpc.stores.protocols import Claim, TaskQueue
from peer_grpc.tasks.execution import deadline_exceeded, run_handler
from peer_grpc.tasks.registry import DEFAULT_MAX_RESULT_BYTES, TaskContext, TaskRegistry
from peer_grpc.tasks.reporting import DEFAULT_PROGRESS_INTERVAL, TaskReporter

__all__ = ["DEFAULT_TASK_LEASE", "TaskRunner", "new_runner_id"]

log = logging.getLogger(__name__)

#: Seconds a runner holds a task without renewing before anyone may take it over.
DEFAULT_TASK_LEASE = 10.0
#: Leases are renewed this many times per lease, so that one late tick loses nothing.
_TICKS_PER_LEASE = 4
#: The longest an idle runner waits before it looks at the queue again.
_IDLE_POLL = 1.0
#: Tasks reclaimed per tick at most.
_RECLAIM_BATCH = 100
#: Seconds a stop waits for the runner's own loops to end after cancelling them.
_STOP_SETTLE = 1.0
#: Seconds a task's end is retried while the store is unavailable.
_RECORD_PATIENCE = 60.0


def new_runner_id() -> str:
    """A name for a runner that no other has: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(slots=True)
class _Held:
    """A task this runner claimed and runs."""

    #: The claim, its task kept at the latest snapshot this runner wrote or saw.
    claim: Claim
    context: TaskContext
    #: Resolved with the task as its end was recorded, or None if another end won.
    finished: asyncio.Future[Task | None] = field(repr=False)
    #: The asyncio task that runs the handler and records the end.
    lifecycle: asyncio.Task[None] | None = None
    #: While the handler runs (and may be stopped by cancelling the lifecycle).
    in_handler: bool = False
    #: Set when the store says another attempt or an end holds the task now.
    lost: bool = False
    #: Recording DEADLINE_EXCEEDED, once the timeout passed.
    expiry: asyncio.Task[Task | None] | None = None

    @property
    def task(self) -> Task:
        return self.claim.task

    def ended_elsewhere(self) -> None:
        """Called from inside the handler (its ask) on learning that the task ended."""
        self.lost = True
        self.context.cancel()

    def stop(self) -> None:
        """Stop the handler: the task is not this runner's to end any more."""
        self.lost = True
        self.context.cancel()
        if self.in_handler and self.lifecycle is not None:
            self.lifecycle.cancel()


class TaskRunner:
    """Claims queued tasks and runs them, up to ``concurrency`` at a time.

    Args:
        registry: the handlers; a claimed task of a type not registered here fails
            with ``UNKNOWN_TASK_TYPE``.
        queue: the shared queue.
        concurrency: tasks this runner runs at once (and threads for plain handlers).
        lease: seconds a task stays claimed without a renewal.
        clock: the time source for the task's times.
        max_result_bytes: the largest result kept (and partial result, and question).
        progress_interval: seconds between two stored progress reports of a task.
        reached: counts tasks by the state this runner moved them to (for metrics).
        runner_id: this runner's name in the queue; a fresh one when omitted.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        queue: TaskQueue,
        *,
        concurrency: int,
        lease: float = DEFAULT_TASK_LEASE,
        clock: Clock | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        reached: Counter[TaskState] | None = None,
        runner_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease <= 0:
            raise ValueError("the lease must be positive")
        self.registry = registry
        self.queue = queue
        self.concurrency = concurrency
        self.lease = lease
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.max_result_bytes = max_result_bytes
        self.progress_interval = progress_interval
        self.reached: Counter[TaskState] = reached if reached is not None else Counter()
        self.runner_id = runner_id or new_runner_id()
        self._held: dict[str, _Held] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="peer-grpc-runner"
        )
        self._slot_freed = asyncio.Event()
        self._accepting = True
        self._stopped = False
        self._loops: list[asyncio.Task[None]] = []
        #: Tasks running in the background, held here so that none is collected early.
        self._background: set[asyncio.Task[None]] = set()
        #: Whether the last look at the store succeeded (for a health signal).
        self.healthy = True

    @property
    def free(self) -> int:
        """Slots free for more tasks now (0 once stopping)."""
        return self.concurrency - len(self._held) if self._accepting else 0

    @property
    def running(self) -> int:
        """Tasks this runner holds."""
        return len(self._held)

    def start(self) -> None:
        """Start claiming, renewing and reclaiming in the background."""
        if not self._loops:
            self._loops = [
                asyncio.create_task(self._claim_forever(), name="peer-grpc-runner-claim"),
                asyncio.create_task(self._tick_forever(), name="peer-grpc-runner-tick"),
            ]

    def adopt(self, claims: Sequence[Claim]) -> None:
        """Run tasks claimed for this runner (by itself, or by a DelegateTask here).

        Once stopping, it runs none: never having run, they go back to the queue, at
        the stop's hand back or the next renewal, whichever comes first."""
        if not self._accepting:
            return
        for claim in claims:
            self._start(claim)

    def finished(self, task_id: str) -> asyncio.Future[Task | None] | None:
        """The future of a task this runner holds (see :class:`_Held`), else None."""
        held = self._held.get(task_id)
        return held.finished if held is not None else None

    def held_sessions(self) -> set[str]:
        """The sessions of the tasks this runner holds."""
        return {held.task.session_id for held in self._held.values()}

    def stop_task(self, task_id: str) -> None:
        """Stop the handler of a task that ended elsewhere (canceled, say)."""
        held = self._held.get(task_id)
        if held is not None:
            held.stop()

    async def stop(self, grace: float) -> None:
        """Claim no more; let held tasks finish within ``grace`` seconds; hand back the rest."""
        self._accepting = False
        claiming = self._loops[:1]
        for loop in claiming:
            loop.cancel()
        if claiming:  # a claim in flight lands before the hand back, not after it
            await asyncio.wait(claiming, timeout=_STOP_SETTLE)
        # Their lifecycles, not the futures callers wait on: a caller that went away
        # cancelled its future, and its task deserves the grace all the same.
        running = [held.lifecycle for held in self._held.values() if held.lifecycle]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        left = list(self._held.values())
        for held in left:
            held.stop()
        try:
            handed = await self.queue.hand_back(
                self.runner_id, [held.task.task_id for held in left], self.clock.now()
            )
        except StoreUnavailable as error:
            log.warning("tasks not handed back (their leases will lapse instead): %s", error)
        else:
            if handed:
                log.info("handed back %d tasks still running at the stop", handed)
        self._stopped = True
        for loop in self._loops:
            loop.cancel()
        # Bounded: a cancellation that a library swallowed mid-command ends the loop at
        # its next turn (it looks at _stopped), not here.
        if self._loops:
            _, pending = await asyncio.wait(self._loops, timeout=_STOP_SETTLE)
            self._background.update(pending)  # held on to until they do end
        self._loops = []
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _start(self, claim: Claim) -> None:
        task = claim.task
        self.reached[TaskState.WORKING] += 1
        finished: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        if task.task_type not in self.registry:
            self._in_background(self._refuse(claim, finished), "refuse")
            return
        context = TaskContext(
            task.task_id,
            task.task_type,
            task.owner_peer_id,
            task.timeout,
            attempt=task.attempt,
            may_ask=self.registry.type_of(task.task_type).asks_for_input,
            max_bytes=self.max_result_bytes,
        )
        held = _Held(claim, context, finished)
        earlier = self._held.get(task.task_id)
        if earlier is not None:  # an attempt of ours whose lease lapsed: it must stop
            earlier.stop()
        self._held[task.task_id] = held
        held.lifecycle = self._in_background(self._run(held, claim.payload), task.task_type)

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        background = asyncio.create_task(work, name=f"peer-grpc-task-{name}")
        self._background.add(background)
        background.add_done_callback(self._background.discard)
        return background

    async def _run(self, held: _Held, payload: Mapping[str, Any]) -> None:
        """Run the handler, record its end (fenced by the claim), free the slot."""
        ended: Task | None = None
        reporter = held.context._reporter = self._reporter_of(held)
        try:
            if held.lost:
                return  # canceled before its handler could start
            held.in_handler = True
            loop = asyncio.get_running_loop()
            timer = loop.call_later(held.task.timeout, self._expire, held)
            try:
                change = await run_handler(
                    self.registry,
                    held.task,
                    payload,
                    held.context,
                    executor=self._executor,
                    max_result_bytes=self.max_result_bytes,
                )
            finally:
                timer.cancel()
                held.in_handler = False
            if not held.lost:
                # Its last report, and no question left, before its end.
                await reporter.finish()
                ended = await self._write(held, change)
        except asyncio.CancelledError:
            if not held.lost:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # stopped because the task is not ours any more
        except Exception:
            log.exception("task %s: recording its end failed", held.task.task_id)
        finally:
            reporter.close()
            held.context._reporter = None  # it refers back to the holding: no cycle left
            try:
                if held.expiry is not None:
                    ended = await held.expiry
            except Exception:
                log.exception("task %s: recording its timeout failed", held.task.task_id)
            finally:
                if not held.finished.done():
                    held.finished.set_result(ended)
                try:
                    # The slot stays taken until a plain handler's thread has returned.
                    await held.context.worker_done()
                finally:
                    self._release(held)

    def _reporter_of(self, held: _Held) -> TaskReporter:
        """Carries the held task's reports and questions, fenced by its claim."""
        task_id = held.task.task_id

        async def follow(version: int) -> Sequence[Task]:
            seen = await self.queue.changes_after(task_id, version)
            if seen:
                held.claim = replace(held.claim, task=seen[-1])
            return seen

        return TaskReporter(
            lambda change: self._write(held, change),
            follow,
            held.ended_elsewhere,
            lambda: held.lost,
            interval=self.progress_interval,
        )

    async def _write(self, held: _Held, change: TaskChange) -> Task | None:
        """Write a change of a held task (fenced by its claim), keeping its latest snapshot."""
        written = await self._record(held.claim, change)
        if written is not None:
            held.claim = replace(held.claim, task=written)
        return written

    def _release(self, held: _Held) -> None:
        # Only this holding: the same task may have come back to this runner since, at
        # a later attempt (its lease lapsed while this one ran on).
        if self._held.get(held.task.task_id) is held:
            del self._held[held.task.task_id]
        self._slot_freed.set()

    def _expire(self, held: _Held) -> None:
        """The task ran past its timeout: record DEADLINE_EXCEEDED and stop its handler."""
        held.stop()
        held.expiry = asyncio.create_task(self._record_expiry(held))

    async def _record_expiry(self, held: _Held) -> Task | None:
        ended = await self._write(held, deadline_exceeded(held.task))
        # The caller waiting for the end learns it now, while the handler still stops.
        if not held.finished.done():
            held.finished.set_result(ended)
        return ended

    async def _refuse(self, claim: Claim, finished: asyncio.Future[Task | None]) -> None:
        task_type = claim.task.task_type
        change = TaskChange(
            TaskState.FAILED,
            error_code="UNKNOWN_TASK_TYPE",
            error_message=f"the runner that took the task has no handler for {task_type!r}",
        )
        ended = None
        with contextlib.suppress(StoreUnavailable):
            ended = await self._record(claim, change)
        if not finished.done():
            finished.set_result(ended)

    async def _record(self, claim: Claim, change: TaskChange) -> Task | None:
        """Write the task's end; retried while the store is away, for a while."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _RECORD_PATIENCE
        delay = 0.05
        # One time for every try: a try whose reply was lost wrote exactly what the next
        # would, which the store recognises as done.
        now = self.clock.now()
        while True:
            try:
                ended = await self.queue.finish(claim, change, now)
            except StoreUnavailable:
                if loop.time() + delay > give_up:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if ended is not None and not change.report:
                self.reached[ended.state] += 1
            return ended

    async def _claim_forever(self) -> None:
        delay = 0.05
        while self._accepting:
            free = self.free
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                claims = await self.queue.claim(self.runner_id, free, self.clock.now())
            except Exception as error:  # StoreUnavailable, or a bug: never stop claiming
                if not isinstance(error, StoreUnavailable):
                    log.exception("claiming tasks failed; trying again")
                self.healthy = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.healthy, delay = True, 0.05
            if claims:
                self.adopt(claims)
            else:
                await self.queue.wait_for_work(_IDLE_POLL)

    async def _tick_forever(self) -> None:
        tick = self.lease / _TICKS_PER_LEASE
        while not self._stopped:
            await asyncio.sleep(tick)
            try:
                await self.tick()
            except StoreUnavailable as error:
                self.healthy = False
                log.warning("task leases not renewed: %s", error)
            except Exception:
                log.exception("task lease tick failed; trying again at the next")

    async def tick(self) -> None:
        """Renew the leases of held tasks, stop those lost, reclaim lapsed ones elsewhere."""
        # Every holding, stopped ones too: one still recording its end (a timeout, say)
        # holds the task, and must not look like a claim nobody knows of.
        held = list(self._held.values())
        lost = await self.queue.renew(
            self.runner_id, [h.claim for h in held], self.clock.now(), self.lease / 2
        )
        for task_id in lost:
            holding = self._held.get(task_id)
            if holding is not None and not holding.lost:
                log.info("task %s ended elsewhere or was taken over; stopping it", task_id)
                holding.stop()
        result = await self.queue.reclaim(
            self.runner_id, self.lease, self.clock.now(), _RECLAIM_BATCH
        )
        if result.requeued or result.ended:
            log.warning(
                "reclaimed tasks whose runner stopped renewing: %d queued again, %d failed",
                result.requeued,
                result.ended,
            )
        self.healthy = True
