"""Delegated tasks: the handlers applications register, and the manager that runs them.

:mod:`peer_grpc.tasks.registry` holds the handlers and runs one; :mod:`peer_grpc.tasks.manager`
keeps each task's lifecycle on a task store (states, limits, timeouts, cancellation);
:mod:`peer_grpc.tasks.runner` runs tasks from a shared queue under leases, and
:mod:`peer_grpc.tasks.execution` is one run of a handler, which both share.
The task model itself is in :mod:`peer_grpc.core.task`.
"""

from peer_grpc.core.task import Task, TaskState
from peer_grpc.tasks.manager import TaskLimits, TaskManager
from peer_grpc.tasks.registry import (
    MAX_JSON_DEPTH,
    MAX_SLEEP_SECONDS,
    Retry,
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
    "Retry",
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
