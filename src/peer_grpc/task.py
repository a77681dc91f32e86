"""The task model: what a delegated task is. No gRPC here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from peer_grpc.task_state import TaskState, check_task_transition

__all__ = ["Task", "TaskChange"]


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

    def changed(self, change: TaskChange, now: float) -> Task:
        """The task after ``change``.

        Raises:
            InvalidTransition: the task state machine forbids the move.
        """
        return replace(
            self,
            state=check_task_transition(self.state, change.state),
            result=change.result,
            error_code=change.error_code,
            error_message=change.error_message,
            updated_at=now,
            version=self.version + 1,
        )
