"""Delegated tasks: their lifecycle on a task store, the handlers that run them, and the limits.

No gRPC here. The servicer calls :class:`TaskManager` with the caller's peer and
session; everything a peer can do to a task goes through it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import json
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peer_grpc.core.clock import Clock, SystemClock
from peer_grpc.core.errors import (
    InternalError,
    InvalidArgument,
    InvalidTransition,
    PeerError,
    ShuttingDown,
    StoreUnavailable,
    TaskLimitReached,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotWaitingForInput,
)
from peer_grpc.core.task import Task, TaskChange, TaskState
from peer_grpc.stores.memory.tasks import MemoryTaskStore
from peer_grpc.stores.protocols import Enqueued, QueueLimits, TaskQueue, TaskStore
from peer_grpc.tasks.execution import deadline_exceeded, run_handler, start_task
from peer_grpc.tasks.registry import (
    DEFAULT_MAX_RESULT_BYTES,
    TaskContext,
    TaskRegistry,
)
from peer_grpc.tasks.reporting import DEFAULT_PROGRESS_INTERVAL, TaskReporter
from peer_grpc.tasks.runner import DEFAULT_TASK_LEASE, TaskRunner

__all__ = [
    "DEFAULT_MAX_QUEUED_TASKS",
    "DEFAULT_MAX_RUNNING_TASKS",
    "DEFAULT_MAX_TASKS_PER_SESSION",
    "DEFAULT_MAX_TASK_TIMEOUT",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_TASK_TIMEOUT",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_SIZE",
    "TaskLimits",
    "TaskManager",
    "TaskPage",
    "decode_page_token",
]

log = logging.getLogger(__name__)

#: ListTasks page size when the request gives none, and the largest it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: A ListTasks page holds at most this many bytes of tasks (and always one task), so
#: that a page of large results stays under gRPC's default 4 MiB message limit.
MAX_PAGE_BYTES = 2 * 1024 * 1024
#: What a task costs on the wire besides its strings and its result, generously.
_TASK_OVERHEAD_BYTES = 128
#: Units of store work per sweep batch; the sweep yields to the event loop between batches.
SWEEP_BATCH = 1000
#: Defaults of :class:`TaskLimits` (and of the ``serve`` flags that set them).
DEFAULT_TASK_TIMEOUT = 300.0
DEFAULT_MAX_TASK_TIMEOUT = 3600.0
DEFAULT_MAX_RUNNING_TASKS = 64
DEFAULT_MAX_TASKS_PER_SESSION = 8
DEFAULT_MAX_QUEUED_TASKS = 1024
#: Seconds a task's change is retried while the store is unavailable.
_RECORD_PATIENCE = 60.0
#: Pauses between the tries of an answer while the store is unavailable (the same answer,
#: at the same time, so that a try whose reply was lost is recognised, not repeated).
_ANSWER_RETRIES = (0.05, 0.2, 0.5)
#: How long a shutdown waits for canceled tasks to record their end before leaving them.
_SHUTDOWN_SETTLE = 1.0


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """How long tasks may run and how many may run at once."""

    #: Seconds a task may run when its request names no timeout.
    default_timeout: float = DEFAULT_TASK_TIMEOUT
    #: The longest timeout a request may ask for.
    max_timeout: float = DEFAULT_MAX_TASK_TIMEOUT
    #: Tasks running at once: in this server process with the memory store; over
    #: every runner together with a shared queue (Redis). Also this process's threads.
    max_running: int = DEFAULT_MAX_RUNNING_TASKS
    #: Tasks running at once for one session (with a shared queue: queued or running).
    max_running_per_session: int = DEFAULT_MAX_TASKS_PER_SESSION
    #: With a shared queue: tasks that may wait SUBMITTED beyond ``max_running``.
    max_queued: int = DEFAULT_MAX_QUEUED_TASKS
    #: With a shared queue: seconds a runner holds a task without renewing its lease.
    lease: float = DEFAULT_TASK_LEASE
    #: Seconds a caller over a limit is told to wait (``google.rpc.RetryInfo``).
    retry_after: float = 1.0
    #: The largest result kept (compact JSON bytes); a larger one fails RESULT_TOO_LARGE.
    #: Partial results and questions are held to it too.
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    #: Seconds between two stored progress reports of one task, at least: a handler
    #: that reports more often has its reports coalesced (the latest wins).
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL

    def __post_init__(self) -> None:
        if not 0 < self.default_timeout <= self.max_timeout:
            raise ValueError("the default task timeout must be positive and at most the maximum")
        if self.max_running < 1 or self.max_running_per_session < 1:
            raise ValueError("task limits must be at least 1")
        if self.retry_after <= 0:
            raise ValueError("retry_after must be positive")
        if self.max_result_bytes < 2:
            raise ValueError("max_result_bytes must leave room for {} (2 bytes)")
        if self.max_queued < 0:
            raise ValueError("max_queued must not be negative")
        if self.lease <= 0:
            raise ValueError("the task lease must be positive")
        if self.progress_interval < 0:
            raise ValueError("the progress interval must not be negative")

    def for_queue(self) -> QueueLimits:
        """The limits a shared queue counts."""
        return QueueLimits(
            max_running=self.max_running,
            max_per_session=self.max_running_per_session,
            max_queued=self.max_queued,
            retry_after=self.retry_after,
        )


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a peer's tasks, oldest first."""

    tasks: tuple[Task, ...]
    #: Where the next page starts (see :meth:`TaskManager.list_tasks`); empty on the last page.
    next_page_token: str = ""


@dataclass(slots=True)
class _Running:
    """This process's hold on a task it runs: its slot under the limits and its handler."""

    task_id: str
    session_id: str
    context: TaskContext
    #: Resolved with the task once it reaches a final state (None if that went unrecorded).
    finished: asyncio.Future[Task | None]
    #: The one asyncio task that runs the handler and records the task's end.
    lifecycle: asyncio.Task[None] | None = None
    #: While the handler runs (and may be stopped by cancelling the lifecycle).
    in_handler: bool = False
    #: Set once the task ended another way (canceled, say) and the handler must stop.
    stopped: bool = False
    #: Recording DEADLINE_EXCEEDED, once the timeout passed.
    expiry: asyncio.Task[Task | None] | None = None
    failure: BaseException | None = field(default=None, repr=False)

    def ended_elsewhere(self) -> None:
        """Called from inside the handler (its ask) on learning that the task ended."""
        self.stopped = True
        self.context.cancel()

    def stop(self) -> bool:
        """Stop the handler of a task that ended another way; whether it was running."""
        self.stopped = True
        self.context.cancel()
        if self.in_handler and self.lifecycle is not None and not self.lifecycle.done():
            self.lifecycle.cancel()
            return True
        return False


def new_task_id() -> str:
    """A fresh task id: 128 bits from the OS's CSPRNG, hex encoded."""
    return secrets.token_hex(16)


class TaskManager:
    """Delegates, runs, cancels, lists and watches tasks.

    With a store of this process alone (memory), handlers run in this process:
    async ones on the event loop, plain ones on a pool of
    :attr:`TaskLimits.max_running` threads. With a store that has a queue (Redis),
    a task is queued and any runner sharing the store runs it: this process's own
    (unless ``run_tasks`` is false) or a ``peer-grpc worker``'s. Either way the task
    records live in the store, so that any process sharing it can answer for them.

    Args:
        registry: the handlers tasks may run.
        store: where tasks live; in memory when omitted.
        clock: the time source; the system clock when omitted.
        limits: timeouts and running limits; the defaults when omitted.
        run_tasks: with a queue, whether this process runs queued tasks too.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        store: TaskStore | None = None,
        *,
        clock: Clock | None = None,
        limits: TaskLimits | None = None,
        run_tasks: bool = True,
    ) -> None:
        self.registry = registry
        self.store: TaskStore = store if store is not None else MemoryTaskStore()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.limits = limits = limits if limits is not None else TaskLimits()
        self._running: dict[str, _Running] = {}
        self._per_session: Counter[str] = Counter()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.max_running, thread_name_prefix="peer-grpc-task"
        )
        self._accepting = True
        #: Tasks of this manager that reached each state, for metrics.
        self.reached: Counter[TaskState] = Counter()
        #: The shared queue tasks go through, if the store has one.
        self.queue: TaskQueue | None = getattr(self.store, "queue", None)
        #: This process's runner of queued tasks, if it runs any.
        self.runner: TaskRunner | None = None
        if self.queue is not None and run_tasks:
            self.runner = TaskRunner(
                registry,
                self.queue,
                concurrency=limits.max_running,
                lease=limits.lease,
                clock=self.clock,
                max_result_bytes=limits.max_result_bytes,
                progress_interval=limits.progress_interval,
                reached=self.reached,
            )

    def start(self) -> None:
        """Start this process's runner of queued tasks, if it has one."""
        if self.runner is not None:
            self.runner.start()

    @property
    def running(self) -> int:
        """Tasks this process holds a slot for (running, or a canceled thread still returning)."""
        return len(self._running) + (self.runner.running if self.runner is not None else 0)

    async def delegate(
        self,
        *,
        peer_id: str,
        session_id: str,
        task_type: str,
        payload: Mapping[str, Any],
        timeout: float | None = None,  # noqa: ASYNC109 - the task's own timeout, not this call's
        wait: bool = True,
        max_wait: float | None = None,
        on_created: Callable[[Task], object] | None = None,
    ) -> Task:
        """Create a task and start its handler.

        Returns the task once it reaches a final state, or after ``max_wait``
        seconds as it stands then, or at once (SUBMITTED or WORKING) when ``wait``
        is false. The task runs on if the waiting caller goes away; ``on_created``
        is called with it as soon as it exists, before any waiting.

        Raises:
            InvalidArgument: an unknown task type, or a timeout out of range.
            TaskLimitReached: too many tasks run on this server or for this
                session; no task was created.
            ShuttingDown: the server is stopping; no task was created.
        """
        if task_type not in self.registry:
            raise InvalidArgument.of("task_type", f"unknown task type {task_type[:64]!r}")
        self.registry.check_payload(task_type, payload)
        seconds = self.resolve_timeout(timeout)
        if self.queue is not None:
            return await self._delegate_to_queue(
                self.queue,
                self._new_task(peer_id, session_id, task_type, seconds, new_task_id()),
                payload,
                wait=wait,
                max_wait=max_wait,
                on_created=on_created,
            )
        record = self._reserve(peer_id, session_id, task_type, seconds)
        try:
            task = await self.store.create(
                self._new_task(peer_id, session_id, task_type, seconds, record.task_id)
            )
        except BaseException:
            self._release(record)
            raise
        self.reached[TaskState.SUBMITTED] += 1
        if not self._accepting:  # a shutdown began while the task was being stored
            with contextlib.suppress(InvalidTransition):
                task = await self._cancel(
                    task.task_id, "SHUTDOWN", "the server stopped before the task started"
                )
            self._release(record)
            return task
        record.lifecycle = start_task(
            self._lifecycle(record, task, dict(payload)), name=f"peer-grpc-task-{task_type}"
        )
        if on_created is not None:
            on_created(task)
        if not wait:
            return task
        try:
            finished = await _until_resolved(record.finished, max_wait)
        except TimeoutError:
            return await self.get(peer_id, task.task_id)
        if finished is None:
            raise _unrecorded(record.failure)
        return finished

    def _new_task(
        self, peer_id: str, session_id: str, task_type: str, timeout: float, task_id: str
    ) -> Task:
        now = self.clock.now()
        return Task(
            task_id=task_id,
            task_type=task_type,
            owner_peer_id=peer_id,
            session_id=session_id,
            state=TaskState.SUBMITTED,
            created_at=now,
            updated_at=now,
            timeout=timeout,
            max_attempts=self.registry.retry_of(task_type).max_attempts,
        )

    async def _delegate_to_queue(
        self,
        queue: TaskQueue,
        task: Task,
        payload: Mapping[str, Any],
        *,
        wait: bool,
        max_wait: float | None,
        on_created: Callable[[Task], object] | None,
    ) -> Task:
        """Queue the task; when this process's runner has room, it claims the task (or an
        older one waiting) in the same store step and runs it here."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down and takes no new tasks")
        runner = self.runner
        if runner is not None:
            runner.start()  # at once if the manager's owner did not
        room = runner.free if runner is not None else 0
        enqueued: Enqueued = await queue.enqueue(
            task,
            payload,
            self.limits.for_queue(),
            runner_id=runner.runner_id if runner is not None and room else "",
            claim=room,
        )
        self.reached[TaskState.SUBMITTED] += 1
        task = enqueued.task
        if on_created is not None:
            on_created(task)
        if enqueued.claims and runner is not None:
            runner.adopt(enqueued.claims)
        if not wait:
            return task
        finished = runner.finished(task.task_id) if runner is not None else None
        if finished is None:
            return await self._until_final(task, max_wait)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            ended = await _until_resolved(finished, max_wait)
        except TimeoutError:
            return await self.get(task.owner_peer_id, task.task_id)
        if ended is not None:
            return ended
        # Not ended by this runner (its lease lapsed, or it stopped): follow the task to
        # its end wherever it runs, within what is left of the wait.
        left = None if max_wait is None else max(max_wait - (loop.time() - started), 0)
        return await self._until_final(task, left)

    async def _until_final(self, task: Task, max_wait: float | None) -> Task:
        """The task once final (it runs elsewhere), or as it stands after ``max_wait``."""
        latest = task

        async def follow() -> None:
            nonlocal latest
            async for change in self.watch(task.owner_peer_id, task.task_id):
                latest = change

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(), max_wait)
        return latest

    def resolve_timeout(self, timeout: float | None) -> float:
        """The timeout a task gets when its request asks for ``timeout`` (None: the default).

        Raises:
            InvalidArgument: not positive, or above the maximum.
        """
        if timeout is None:
            return self.limits.default_timeout
        if not 0 < timeout <= self.limits.max_timeout:
            raise InvalidArgument.of(
                "timeout", f"must be positive and at most {self.limits.max_timeout:g}s"
            )
        return timeout

    async def get(self, peer_id: str, task_id: str) -> Task:
        """The peer's task ``task_id``.

        Raises:
            TaskNotFound: no such task, or it is another peer's (the two look alike).
        """
        task = await self.store.get(task_id)
        if task is None or task.owner_peer_id != peer_id:
            raise TaskNotFound(f"no task {task_id} of peer {peer_id}")
        return task

    async def cancel(self, peer_id: str, task_id: str) -> Task:
        """Cancel the peer's task ``task_id``; returns it CANCELED.

        Raises:
            TaskNotFound: as for :meth:`get`.
            TaskNotCancelable: the task already reached a final state.
        """
        task = await self.get(peer_id, task_id)
        try:
            return await self._cancel(task_id, "CANCELED", "canceled by its owner")
        except InvalidTransition:
            task = await self.get(peer_id, task_id)  # it ended first; say how
            raise TaskNotCancelable(
                f"task {task_id} already ended {task.state.name}", task.state.name
            ) from None

    async def provide_input(
        self, peer_id: str, task_id: str, answer: Mapping[str, Any], *, question: int = 0
    ) -> Task:
        """Answer the question the peer's task ``task_id`` waits on; returns it WORKING.

        The task's handler, wherever it runs, resumes with ``answer``. With
        ``question``, only that question (see :attr:`Task.questions_asked`) is answered.

        Raises:
            TaskNotFound: as for :meth:`get`.
            TaskNotWaitingForInput: the task is not INPUT_REQUIRED, or waits on
                another question; nothing changed.
        """
        await self.get(peer_id, task_id)
        change = TaskChange.answered(answer, question)
        now = self.clock.now()
        for delay in (*_ANSWER_RETRIES, None):
            try:
                return await self.store.change(task_id, change, now)
            except InvalidTransition:
                break
            except StoreUnavailable:
                if delay is None:
                    raise
                await asyncio.sleep(delay)
        task = await self.get(peer_id, task_id)
        if task.state is TaskState.WORKING and task.updated_at == now and task.answer == answer:
            return task  # a try whose reply was lost gave the answer: not a second time
        raise _not_waiting(task, question)

    async def list_tasks(
        self,
        peer_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        state: TaskState | None = None,
    ) -> TaskPage:
        """A page of the peer's tasks, oldest first, optionally only those in ``state``.

        ``page_size`` 0 means :data:`DEFAULT_PAGE_SIZE`; above :data:`MAX_PAGE_SIZE`
        it is taken as that. A page also ends before :data:`MAX_PAGE_BYTES` of tasks
        (but holds one task at least), so large results cannot make a reply too big.

        Raises:
            InvalidArgument: a negative page size, or a page token not from here.
        """
        if page_size < 0:
            raise InvalidArgument.of("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(page_token)
        found = await self.store.list_owned(peer_id, after=after, limit=size + 1, state=state)
        page = _within_bytes(found[:size], MAX_PAGE_BYTES)
        more = len(found) > len(page)
        return TaskPage(page, _page_token(page[-1].ordinal) if more else "")

    async def watch(self, peer_id: str, task_id: str) -> AsyncIterator[Task]:
        """The peer's task as it stands, then after every change, ending at a final state.

        Raises:
            TaskNotFound: as for :meth:`get`.
        """
        latest = await self.get(peer_id, task_id)
        yield latest
        while not latest.state.is_final:
            for change in await self.store.changes_after(task_id, latest.version):
                latest = change
                yield change

    async def cancel_session(self, session_id: str, reason: str = "its session ended") -> int:
        """Cancel the unfinished tasks of a session that ended, wherever they run;
        returns how many."""
        if self.queue is not None:
            task_ids: Sequence[str] = await self.queue.unfinished(session_id)
        else:
            task_ids = [r.task_id for r in self._running.values() if r.session_id == session_id]
        canceled = 0
        for task_id in task_ids:
            with contextlib.suppress(InvalidTransition, TaskNotFound):
                await self._cancel(task_id, "SESSION_ENDED", reason)
                canceled += 1
        if canceled:
            log.info("canceled %d running tasks: %s", canceled, reason)
        return canceled

    async def cancel_orphans(self, session_is_live: Callable[[str], Awaitable[bool]]) -> int:
        """Cancel running tasks whose session is no longer live (expired, say); returns how many.

        Costs one session look-up per session with running tasks, which the
        running limit bounds.
        """
        sessions = {r.session_id for r in self._running.values()}
        if self.runner is not None:
            sessions |= self.runner.held_sessions()
        canceled = 0
        for session_id in sessions:
            if not await session_is_live(session_id):
                canceled += await self.cancel_session(session_id, "its session expired")
        return canceled

    async def stop_ended_elsewhere(self) -> int:
        """Stop the handlers of tasks that ended through another replica; returns how many.

        A CancelTask that reaches another replica sharing the store ends the task
        there; this replica learns of it here, at its next sweep. A store of this
        process alone has no other replica: nothing to do.
        """
        if not getattr(self.store, "shared", True) or self.queue is not None:
            return 0  # alone, nothing ends elsewhere; a runner learns at its lease tick
        stopped = 0
        for record in list(self._running.values()):
            task = await self.store.get(record.task_id)
            if task is not None and not task.state.is_final:
                continue
            if record.stop():
                stopped += 1
            if task is not None:
                self._resolve(task)
        if stopped:
            log.info("stopped %d tasks that ended on another replica", stopped)
        return stopped

    async def sweep(self, batch: int = SWEEP_BATCH) -> int:
        """Forget tasks that ended longer ago than the retention; returns how many.

        Works in bounded batches and yields to the event loop between them. With a
        shared queue and no runner here, also reclaims tasks whose runner was lost
        (a runner does that at every lease tick itself).
        """
        if self.queue is not None and self.runner is None:
            await self.queue.reclaim("sweeper", self.limits.lease, self.clock.now(), batch)
        purged = 0
        while True:
            result = await self.store.sweep(self.clock.now(), batch)
            purged += result.purged
            if not result.more:
                return purged
            await asyncio.sleep(0)

    async def shutdown(self, grace: float) -> None:
        """Take no new tasks, let running ones finish within ``grace`` seconds, cancel the rest.

        A plain handler that never looks at :meth:`TaskContext.cancelled` keeps
        its thread until it returns; the shutdown does not wait for it.
        """
        self._accepting = False
        if self.runner is not None:
            await self.runner.stop(grace)
        lifecycles = self._lifecycles()
        if lifecycles and grace > 0:
            await asyncio.wait(lifecycles, timeout=grace)
        for record in list(self._running.values()):
            with contextlib.suppress(InvalidTransition, TaskNotFound):
                await self._cancel(
                    record.task_id, "SHUTDOWN", "the server stopped before the task finished"
                )
        lifecycles = self._lifecycles()
        if lifecycles:
            _, pending = await asyncio.wait(lifecycles, timeout=_SHUTDOWN_SETTLE)
            for lifecycle in pending:
                lifecycle.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _lifecycles(self) -> list[asyncio.Task[None]]:
        return [
            r.lifecycle for r in self._running.values() if r.lifecycle and not r.lifecycle.done()
        ]

    def _reserve(self, peer_id: str, session_id: str, task_type: str, timeout: float) -> _Running:
        """Take a slot under the limits, in one step with no await so that none is oversold."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down and takes no new tasks")
        limits = self.limits
        if len(self._running) >= limits.max_running:
            raise TaskLimitReached("server", limits.max_running, limits.retry_after)
        if self._per_session[session_id] >= limits.max_running_per_session:
            raise TaskLimitReached("session", limits.max_running_per_session, limits.retry_after)
        task_id = new_task_id()
        record = _Running(
            task_id=task_id,
            session_id=session_id,
            context=TaskContext(
                task_id,
                task_type,
                peer_id,
                timeout,
                may_ask=self.registry.type_of(task_type).asks_for_input,
                max_bytes=limits.max_result_bytes,
            ),
            finished=asyncio.get_running_loop().create_future(),
        )
        self._running[task_id] = record
        self._per_session[session_id] += 1
        return record

    def _release(self, record: _Running) -> None:
        if self._running.pop(record.task_id, None) is None:
            return
        self._per_session[record.session_id] -= 1
        if self._per_session[record.session_id] <= 0:
            del self._per_session[record.session_id]
        if not record.finished.done():
            record.finished.set_result(None)

    async def _lifecycle(self, record: _Running, task: Task, payload: dict[str, Any]) -> None:
        """Run the task's handler under its timeout and record how it ended."""
        try:
            await self._run(record, task, payload)
        except asyncio.CancelledError:
            if not record.stopped:
                raise  # the shutdown gave up on it
            # Stopped because the task ended another way, which was recorded.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception as error:  # the store failed: the task's fate goes unrecorded
            record.failure = error
            log.exception("task %s: recording its state failed", task.task_id)
        finally:
            try:
                if record.expiry is not None:
                    await record.expiry
                # The slot stays taken until a plain handler's thread has returned.
                await record.context.worker_done()
            finally:
                self._release(record)

    async def _run(self, record: _Running, task: Task, payload: dict[str, Any]) -> None:
        working = await self._change(task.task_id, TaskChange(TaskState.WORKING))
        if working is None or record.stopped:
            return  # it ended before it started (canceled)
        record.context.attempt = working.attempt
        reporter = record.context._reporter = TaskReporter(
            lambda change: self._change(task.task_id, change),
            lambda version: self.store.changes_after(task.task_id, version),
            record.ended_elsewhere,
            lambda: record.stopped,
            interval=self.limits.progress_interval,
        )
        record.in_handler = True
        # The timeout is recorded when it passes, whatever the handler does about it.
        timer = asyncio.get_running_loop().call_later(
            working.timeout, self._expire, record, working
        )
        try:
            try:
                change = await run_handler(
                    self.registry,
                    working,
                    payload,
                    record.context,
                    executor=self._executor,
                    max_result_bytes=self.limits.max_result_bytes,
                )
            finally:
                timer.cancel()
                record.in_handler = False
            if record.stopped:
                return  # it ended another way, which was recorded
            await reporter.finish()  # its last report, and no question left, before its end
        finally:
            reporter.close()
            # The reporter refers back to the record: let both go without the cycle
            # collector (a task a delegation costs it otherwise).
            record.context._reporter = None
        await self._change(task.task_id, change)

    def _expire(self, record: _Running, task: Task) -> None:
        """The task ran past its timeout: record DEADLINE_EXCEEDED and stop its handler."""
        record.stop()
        record.expiry = asyncio.create_task(self._change(task.task_id, deadline_exceeded(task)))

    async def _change(self, task_id: str, change: TaskChange) -> Task | None:
        """Apply ``change``; None if the task ended another way first.

        While the store is unavailable the change is tried again, with backoff, for
        up to :data:`_RECORD_PATIENCE` seconds: a handler's result is not given up
        for a store that is restarting or failing over.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _RECORD_PATIENCE
        delay = 0.05
        retried = False
        # One time for every try: a try whose reply was lost wrote exactly what the next
        # would, which the store recognises as done.
        now = self.clock.now()
        while True:
            try:
                task = await self.store.change(task_id, change, now)
            except InvalidTransition:
                if not retried:
                    return None
                # A try whose answer was lost may have made the change already.
                current = await self.store.get(task_id)
                if current is None or current.state is not change.state:
                    return None
                task = current
            except StoreUnavailable:
                if loop.time() + delay > give_up:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                retried = True
                continue
            if not change.report:
                self.reached[task.state] += 1
            self._resolve(task)
            return task

    async def _cancel(self, task_id: str, code: str, message: str) -> Task:
        """End the task CANCELED and stop its handler.

        Raises:
            InvalidTransition: it already ended.
        """
        task = await self.store.change(
            task_id,
            TaskChange(TaskState.CANCELED, error_code=code, error_message=message),
            self.clock.now(),
        )
        self.reached[task.state] += 1
        self._resolve(task)
        record = self._running.get(task_id)
        if record is not None:
            record.stop()
        if self.runner is not None:
            self.runner.stop_task(task_id)  # one running elsewhere learns at its lease tick
        return task

    def _resolve(self, task: Task) -> None:
        record = self._running.get(task.task_id)
        if task.state.is_final and record is not None and not record.finished.done():
            record.finished.set_result(task)


async def _until_resolved(
    finished: asyncio.Future[Task | None], max_wait: float | None
) -> Task | None:
    """What ``finished`` resolves to, waiting at most ``max_wait`` (TimeoutError after).

    A caller that goes away cancels only its wait: ``finished`` is this caller's alone
    (whoever resolves it checks that it is not done), and the task runs on.
    """
    if finished.done():
        return finished.result()
    if max_wait is None:
        return await finished
    return await asyncio.wait_for(asyncio.shield(finished), max_wait)


def _unrecorded(failure: BaseException | None) -> PeerError:
    """Why a waited-on task has no recorded end."""
    if isinstance(failure, PeerError):
        return failure
    if failure is None:  # its lifecycle was cut short by a shutdown
        return ShuttingDown("the server stopped before the task's end was recorded")
    return InternalError("the task's end could not be recorded")


def _not_waiting(task: Task, question: int) -> TaskNotWaitingForInput:
    """Why an answer to ``question`` of ``task`` was refused."""
    waiting = task.state is TaskState.INPUT_REQUIRED
    if waiting:
        why = f"it waits on question {task.questions_asked}, not {question}"
    else:
        why = f"it is {task.state.name}, not waiting for input"
    return TaskNotWaitingForInput(
        f"task {task.task_id} takes no answer: {why}", task.state.name, task.questions_asked
    )


def _within_bytes(tasks: Sequence[Task], budget: int) -> tuple[Task, ...]:
    """The first of ``tasks`` that fit ``budget`` bytes on the wire, one at least."""
    used = 0
    for count, task in enumerate(tasks):
        used += _wire_bytes(task)
        if used > budget and count:
            return tuple(tasks[:count])
    return tuple(tasks)


def _wire_bytes(task: Task) -> int:
    """About what ``task`` takes in a reply: its strings, its result's JSON, a margin."""
    strings = (task.task_id, task.task_type, task.owner_peer_id, task.error_message)
    result = json.dumps(task.result, separators=(",", ":")) if task.result is not None else ""
    return _TASK_OVERHEAD_BYTES + sum(len(text) for text in strings) + len(result.encode())


_TOKEN_PREFIX = "after:"


def _page_token(ordinal: int) -> str:
    raw = f"{_TOKEN_PREFIX}{ordinal}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The ordinal a ListTasks page token continues after (0 for the first page).

    Raises:
        InvalidArgument: the token did not come from ListTasks.
    """
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    digits = raw.removeprefix(_TOKEN_PREFIX)
    if (
        len(token) > 64
        or not raw.startswith(_TOKEN_PREFIX)
        or not (digits.isascii() and digits.isdigit())
    ):
        raise InvalidArgument.of("page_token", "is not a next_page_token from ListTasks")
    return int(digits)
