"""Delegated tasks: the handlers applications register, and the manager that runs them.

:mod:`peer_grpc.tasks.registry` holds the handlers and runs one; :mod:`peer_grpc.tasks.manager`
keeps each task's lifecycle on a task store (states, limits, timeouts, cancellation).
The task model itself is in :mod:`peer_grpc.core.task`.
"""

from peer_grpc.core.task import Task, TaskState
from peer_grpc.tasks.manager import TaskLimits, TaskManager
from peer_grpc.tasks.registry import (
    MAX_JSON_DEPTH,
    MAX_SLEEP_SECONDS,
    TaskContext,
    TaskHandler,
    TaskOutcome,
    TaskRegistry,
    TaskRejected,
    current_task,
    default_registry,
    json_depth,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_SLEEP_SECONDS",
    "Task",
    "TaskContext",
    "TaskHandler",
    "TaskLimits",
    "TaskManager",
    "TaskOutcome",
    "TaskRegistry",
    "TaskRejected",
    "TaskState",
    "current_task",
    "default_registry",
    "json_depth",
]
