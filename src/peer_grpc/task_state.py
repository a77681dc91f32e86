"""The task state machine: the one table that says how a delegated task may change state."""

from __future__ import annotations

from enum import IntEnum

from peer_grpc.errors import InvalidTransition

__all__ = ["TASK_TRANSITIONS", "TaskState", "check_task_transition"]


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
        return not TASK_TRANSITIONS[self]


_ENDINGS = frozenset({TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED})

#: Every legal transition. Anything not listed here is refused with InvalidTransition.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # A task can end before its handler starts: canceled, timed out, or refused.
    TaskState.SUBMITTED: frozenset({TaskState.WORKING, *_ENDINGS}),
    TaskState.WORKING: frozenset({TaskState.COMPLETED, *_ENDINGS}),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELED: frozenset(),
    TaskState.REJECTED: frozenset(),
}


def check_task_transition(source: TaskState, target: TaskState) -> TaskState:
    """Return ``target`` if ``source -> target`` is legal, else raise InvalidTransition."""
    if target not in TASK_TRANSITIONS[source]:
        raise InvalidTransition(source.name, target.name, subject="task")
    return target
