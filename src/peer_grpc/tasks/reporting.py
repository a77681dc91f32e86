"""What a running handler tells of its task while it runs: progress, partial results,
and questions for the peer that delegated it. No gRPC here.

A handler may report as often as it likes. Its task's store sees at most one report
per :data:`DEFAULT_PROGRESS_INTERVAL` (the latest wins: a report replaces the one
before, so nothing a watcher needs is lost by skipping one), and the last report is
written before the task asks a question or ends, so watchers see reports in the
order they were made and before the end.

A question is written as the task's move to INPUT_REQUIRED; the handler then follows
the task in the store until an answer (a move back to WORKING, which ProvideInput
makes on any replica) or an end (canceled, timed out, reclaimed) comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from peer_grpc.core.errors import StoreUnavailable, TaskNotFound
from peer_grpc.core.task import Progress, Task, TaskChange, TaskState

__all__ = ["DEFAULT_PROGRESS_INTERVAL", "TaskReporter"]

log = logging.getLogger(__name__)

#: The shortest time between two stored reports of one task: at most four a second.
DEFAULT_PROGRESS_INTERVAL = 0.25
#: How long a handler waiting for an answer waits before it looks again, while the
#: store is unavailable.
_FOLLOW_RETRY = 0.5

#: Writes a change of the reporter's task; the task after it, or None if the task
#: ended another way (or is not the writer's to change any more).
Write = Callable[[TaskChange], Awaitable[Task | None]]
#: Every snapshot of the reporter's task newer than a version; waits for one.
Follow = Callable[[int], Awaitable[Sequence[Task]]]


class TaskReporter:
    """Carries one running task's reports and questions to its store.

    Args:
        write: applies a change to the task (retrying while the store is away).
        follow: waits for the task's snapshots newer than a version.
        on_ended: called when the task turns out to have ended another way while
            its handler asked; the caller stops the handler's work.
        stopped: whether the handler's work was stopped (the task ended another
            way, or ran out of time): then a question it gives up is not taken back.
        interval: the shortest time between two stored reports.
    """

    def __init__(
        self,
        write: Write,
        follow: Follow,
        on_ended: Callable[[], None],
        stopped: Callable[[], bool],
        *,
        interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self._write = write
        self._follow = follow
        self._on_ended = on_ended
        self._stopped = stopped
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        #: The report not yet written: the latest progress and partial result merged.
        self._pending: TaskChange | None = None
        #: Writes pending reports, one interval apart; None while nothing is pending.
        self._flusher: asyncio.Task[None] | None = None
        self._writing = False
        #: While :meth:`flush` writes: it takes the reports made meanwhile itself.
        self._flushing = False
        #: When the next report may be written (event loop time).
        self._next_at = 0.0
        self._closed = False
        self._asking = False
        #: The task as it asked the question that waits for its answer, if one does.
        self._question: Task | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the reporter runs on (reports from threads are sent to it)."""
        return self._loop

    def report(
        self, progress: Progress | None = None, partial_result: Mapping[str, Any] | None = None
    ) -> None:
        """Note a report; it is written now or, within the interval, with the next one.

        A report made while the task waits for an answer is refused by the store
        and lost: the handler is waiting, so only a concurrent part of it reports.
        """
        if self._closed:
            return
        pending = self._pending
        if pending is not None:
            progress = progress if progress is not None else pending.progress
            if partial_result is None:
                partial_result = pending.partial_result
        self._pending = TaskChange.reported(progress, partial_result)
        if self._flusher is None and not self._flushing:
            self._flusher = self._loop.create_task(self._flush_loop())

    async def flush(self) -> None:
        """Write what is pending now, after the write under way if there is one, so
        that reports reach the store in the order they were made."""
        self._flushing = True
        try:
            await self._stop_flusher()
            while (change := self._pending) is not None:
                self._pending = None
                await self._write_report(change)
        finally:
            self._flushing = False

    async def finish(self) -> None:
        """Before the task's end is written: the last report, and a question that still
        waits (the handler returned without its answer) taken back."""
        await self.flush()
        if self._question is not None:
            await self._withdraw()
        self.close()

    def close(self) -> None:
        """Write nothing more (the task ended, or its handler was stopped)."""
        self._closed = True
        self._pending = None
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    async def ask(self, question: Mapping[str, Any]) -> dict[str, Any]:
        """Move the task to INPUT_REQUIRED with ``question``; the answer, once given.

        A handler that stops waiting (cancels this, with a timeout of its own, say)
        and works on gets its task back WORKING: the question is taken back.

        Raises:
            asyncio.CancelledError: the task ended meanwhile (canceled, out of time,
                or no longer this runner's), and the handler's work is stopped; or the
                handler returned while this waited, and the question was taken back.
            RuntimeError: another question of the task waits for its answer.
        """
        if self._asking:
            raise RuntimeError("a task asks one question at a time")
        self._asking = True
        try:
            await self.flush()
            asked = await self._write(TaskChange.asking(question))
            if asked is None:
                raise self._ended()
            self._question = asked
            try:
                return await self._answer_to(asked)
            except asyncio.CancelledError:
                if self._question is not None and not self._stopped():
                    await self._withdraw()  # the handler gave up waiting, and works on
                raise
        finally:
            self._asking = False

    async def _answer_to(self, asked: Task) -> dict[str, Any]:
        version = asked.version
        while True:
            for task in await self._newer_than(asked.task_id, version):
                version = task.version
                if task.state is TaskState.WORKING:
                    self._question = None
                    if task.answer is None:  # taken back: the handler ended without it
                        raise asyncio.CancelledError()
                    return dict(task.answer)
                if task.state is not TaskState.INPUT_REQUIRED:
                    raise self._ended()

    async def _withdraw(self) -> None:
        self._question = None
        # None if it was answered (or ended) meanwhile: the task is not waiting then.
        await self._write(TaskChange.withdrawn())

    async def _newer_than(self, task_id: str, version: int) -> Sequence[Task]:
        """The task's snapshots after ``version``; through store outages (the task's
        timeout bounds the wait); none left means it is gone."""
        while True:
            try:
                return await self._follow(version)
            except TaskNotFound:
                raise self._ended() from None
            except StoreUnavailable as error:
                log.warning("task %s: waiting for its answer: %s", task_id, error)
                await asyncio.sleep(_FOLLOW_RETRY)

    def _ended(self) -> asyncio.CancelledError:
        self._question = None
        self.close()
        self._on_ended()
        return asyncio.CancelledError()

    async def _stop_flusher(self) -> None:
        """Let a write under way finish; drop the wait for the interval."""
        flusher = self._flusher
        if flusher is None:
            return
        if not self._writing:
            flusher.cancel()  # it only waits (or has not even started)
        await asyncio.wait([flusher])
        if self._flusher is flusher:  # a task cancelled before it ran cleans up nothing
            self._flusher = None

    async def _flush_loop(self) -> None:
        try:
            while self._pending is not None and not self._flushing:
                wait = self._next_at - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                change, self._pending = self._pending, None
                if change is None:
                    break
                self._writing = True
                try:
                    await self._write_report(change)
                finally:
                    self._writing = False
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def _write_report(self, change: TaskChange) -> None:
        self._next_at = self._loop.time() + self._interval
        # Reports are worth less than the work: a store failure loses one, not the task.
        with contextlib.suppress(StoreUnavailable):
            await self._write(change)
