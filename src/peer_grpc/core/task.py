"""The task model: its states and their machine, and what a delegated task is. No gRPC here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from peer_grpc.core.state_machine import StateMachine

__all__ = ["TASK_MACHINE", "Task", "TaskChange", "TaskState"]


class TaskState(IntEnum):
    """Where a task stands; the values are those of ``peer.v1.TaskState``."""

    SUBMITTED = 1
    WORKING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELED = 5
    REJECTED = 6

    @property
    def is_final(self) -> bool:
        """Whether no transition leaves this state."""
        return TASK_MACHINE.is_final(self)


_ENDINGS = {TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED}

#: The task state machine: every legal transition. Anything else is refused with
#: InvalidTransition (``TASK_MACHINE.check(source, target)``).
TASK_MACHINE = StateMachine(
    "task",
    {
        # A task can end before its handler starts: canceled, timed out, or refused.
        TaskState.SUBMITTED: {TaskState.WORKING, *_ENDINGS},
        # Back to SUBMITTED only when its runner was lost and the handler may run again.
        TaskState.WORKING: {TaskState.SUBMITTED, TaskState.COMPLETED, *_ENDINGS},
        TaskState.COMPLETED: set(),
        TaskState.FAILED: set(),
        TaskState.CANCELED: set(),
        TaskState.REJECTED: set(),
    },
)


@dataclass(frozen=True, slots=True)
class TaskChange:
    """What one state change sets besides the state: a result, or why there is none."""

    state: TaskState
    result: Mapping[str, Any] | None = None
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    """An immutable snapshot of one task. Stores hand out snapshots, never live records.

    Times are seconds since the Unix epoch, read from the server's clock.
    """

    task_id: str
    task_type: str
    #: The peer that delegated the task; only it may see or cancel the task.
    owner_peer_id: str
    #: The session it was delegated on; the task is canceled when that session ends.
    session_id: str
    state: TaskState
    created_at: float
    updated_at: float
    #: Seconds the task may run before it fails with DEADLINE_EXCEEDED.
    timeout: float
    #: The handler's JSON object, once COMPLETED.
    result: Mapping[str, Any] | None = None
    error_code: str = ""
    error_message: str = ""
    #: 1 when SUBMITTED, one more with every change: watchers ask for what came after theirs.
    version: int = 1
    #: The task's place in its store's creation order (assigned by the store); pages follow it.
    ordinal: int = 0
    #: Which run of the handler this is: 0 before the first, one more at every start.
    attempt: int = 0
    #: The most runs the task may get (its handler's retry policy; 1 if not retryable).
    max_attempts: int = 1

    def changed(self, change: TaskChange, now: float) -> Task:
        """The task after ``change``; a move to WORKING starts the next attempt.

        Raises:
            InvalidTransition: the task state machine forbids the move.
        """
        state = TASK_MACHINE.check(self.state, change.state)
        # Spelled out rather than dataclasses.replace, which costs several times more, on
        # a path every task takes three times.
        return Task(
            task_id=self.task_id,
            task_type=self.task_type,
            owner_peer_id=self.owner_peer_id,
            session_id=self.session_id,
            state=state,
            created_at=self.created_at,
            updated_at=now,
            timeout=self.timeout,
            result=change.result,
            error_code=change.error_code,
            error_message=change.error_message,
            version=self.version + 1,
            ordinal=self.ordinal,
            attempt=self.attempt + 1 if state is TaskState.WORKING else self.attempt,
            max_attempts=self.max_attempts,
        )
