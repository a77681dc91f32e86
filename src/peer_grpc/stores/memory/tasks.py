"""The in-memory task store: the default, for one server process."""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from peer_grpc.core.errors import TaskNotFound
from peer_grpc.core.task import Task, TaskChange, TaskState
from peer_grpc.stores.protocols import SweepResult

__all__ = ["DEFAULT_TASK_RETENTION", "MemoryTaskStore"]

#: Seconds a task that reached a final state is kept for its owner to read.
DEFAULT_TASK_RETENTION = 3600.0
#: Snapshots kept per task: progress reports add one each, and a watcher further
#: behind skips to the oldest kept (as on Redis).
KEEP_SNAPSHOTS = 64


#: A task that ended with more snapshots than this keeps those of its state changes only.
_PRUNE_ABOVE = 8


def _state_changes(history: list[Task]) -> list[Task]:
    """The snapshots that changed the task's state, and its last: what a task that
    ended keeps of its progress reports (each of which carries a partial result)."""
    kept = [history[0]]
    for task in history[1:-1]:
        if task.state is not kept[-1].state:
            kept.append(task)
    kept.append(history[-1])
    return kept


@dataclass(slots=True)
class _Record:
    """The snapshots of one task, oldest first: its latest :data:`KEEP_SNAPSHOTS`, and
    once it ended, those of its state changes."""

    history: list[Task]
    #: Set (and dropped) at the next change, to wake the task's watchers; made only
    #: when somebody waits, since most tasks are never watched.
    changed: asyncio.Event | None = None

    def wake_watchers(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    @property
    def latest(self) -> Task:
        return self.history[-1]


@dataclass(slots=True)
class _Owned:
    """One peer's tasks in creation order: ordinals ascending, forgotten ones skipped."""

    ordinals: list[int] = field(default_factory=list)
    task_ids: dict[int, str] = field(default_factory=dict)

    def forget(self, ordinal: int) -> None:
        self.task_ids.pop(ordinal, None)
        # Compact once most of the list is forgotten, so paging stays proportional.
        if len(self.ordinals) > 2 * len(self.task_ids) + 16:
            self.ordinals = [o for o in self.ordinals if o in self.task_ids]


class MemoryTaskStore:
    """Tasks in dictionaries of this process.

    Every method but :meth:`changes_after` runs without awaiting, so on one event
    loop each is atomic.
    """

    #: One process's alone: no task ends anywhere else.
    shared = False
    #: Tasks run in the process that accepted them; there is no queue to share.
    queue = None

    def __init__(self, *, retention: float = DEFAULT_TASK_RETENTION) -> None:
        if retention < 0:
            raise ValueError("retention must not be negative")
        self._retention = retention
        self._tasks: dict[str, _Record] = {}
        self._owned: dict[str, _Owned] = {}
        # (forget at, task id) in the order tasks ended; with one clock that is time order.
        self._ended: deque[tuple[float, str]] = deque()
        self._last_ordinal = 0

    async def create(self, task: Task) -> Task:
        if task.task_id in self._tasks:
            raise ValueError("task id collision")
        self._last_ordinal += 1
        task = replace(task, ordinal=self._last_ordinal)
        self._tasks[task.task_id] = _Record([task])
        owned = self._owned.setdefault(task.owner_peer_id, _Owned())
        owned.ordinals.append(task.ordinal)
        owned.task_ids[task.ordinal] = task.task_id
        if task.state.is_final:
            self._ended.append((task.updated_at + self._retention, task.task_id))
        return task

    async def get(self, task_id: str) -> Task | None:
        record = self._tasks.get(task_id)
        return record.latest if record is not None else None

    async def change(self, task_id: str, change: TaskChange, now: float) -> Task:
        record = self._require(task_id)
        task = record.latest.changed(change, now)
        history = record.history
        history.append(task)
        if len(history) > KEEP_SNAPSHOTS:
            del history[0]
        if task.state.is_final and len(history) > _PRUNE_ABOVE:
            record.history = _state_changes(history)
        record.wake_watchers()
        if task.state.is_final:
            self._ended.append((now + self._retention, task_id))
        return task

    async def changes_after(self, task_id: str, version: int) -> Sequence[Task]:
        while True:
            record = self._require(task_id)
            newer = [task for task in record.history if task.version > version]
            if newer:
                return newer
            if record.changed is None:
                record.changed = asyncio.Event()
            await record.changed.wait()

    async def list_owned(
        self, owner_peer_id: str, *, after: int, limit: int, state: TaskState | None = None
    ) -> Sequence[Task]:
        owned = self._owned.get(owner_peer_id)
        if owned is None or limit <= 0:
            return []
        page: list[Task] = []
        for ordinal in owned.ordinals[bisect.bisect_right(owned.ordinals, after) :]:
            task_id = owned.task_ids.get(ordinal)
            if task_id is None:
                continue
            task = self._tasks[task_id].latest
            if state is None or task.state is state:
                page.append(task)
                if len(page) == limit:
                    break
        return page

    async def sweep(self, now: float, limit: int) -> SweepResult:
        purged = work = 0
        ended = self._ended
        while ended and ended[0][0] <= now and work < limit:
            _, task_id = ended.popleft()
            work += 1
            record = self._tasks.pop(task_id, None)
            if record is None:
                continue
            task = record.latest
            owned = self._owned[task.owner_peer_id]
            owned.forget(task.ordinal)
            if not owned.task_ids:
                del self._owned[task.owner_peer_id]
            record.wake_watchers()  # a watcher still waiting learns the task is gone
            purged += 1
        return SweepResult(purged=purged, more=bool(ended and ended[0][0] <= now))

    async def check(self) -> None:
        """Always available: it lives in this process."""

    async def close(self) -> None:
        """Nothing to release; tasks vanish with the process."""

    def __len__(self) -> int:
        """Tasks held, running and ended."""
        return len(self._tasks)

    def _require(self, task_id: str) -> _Record:
        record = self._tasks.get(task_id)
        if record is None:
            raise TaskNotFound(f"no task {task_id}")
        return record
