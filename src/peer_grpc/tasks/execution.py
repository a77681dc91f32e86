"""One run of a handler under its task's timeout, and the change its end makes. No gRPC here.

Both ways a task runs share this: in the process that accepted it (the memory
store) and on a runner that claimed it from the queue (Redis). The handler runs
inline, in the coroutine that records the task's end: one asyncio task per task,
so that a handler that returns at once costs one step of the event loop, not five.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from peer_grpc.core.task import Task, TaskChange, TaskState
from peer_grpc.tasks.registry import TaskContext, TaskOutcome, TaskRegistry

T = TypeVar("T")

__all__ = ["CANCELLED_FROM_WITHIN", "deadline_exceeded", "ending", "run_handler", "start_task"]

#: Python 3.12 runs a task's first step at once when asked (``eager_start``), with the
#: task current as it would be in any step; older ones schedule every step.
_EAGER = sys.version_info >= (3, 12)


def start_task(work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """An asyncio task running ``work``: on Python 3.12+ started eagerly, so that a task
    whose handler returns without waiting is done before this returns, and costs its
    caller no trip through the event loop."""
    if _EAGER:
        loop = asyncio.get_running_loop()
        return asyncio.Task(work, loop=loop, name=name, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return asyncio.create_task(work, name=name)


#: The end of a task whose handler cancelled itself (nobody asked it to stop).
CANCELLED_FROM_WITHIN = TaskChange(
    TaskState.FAILED,
    error_code="HANDLER_ERROR",
    error_message="the handler was cancelled from within",
)


async def run_handler(
    registry: TaskRegistry,
    task: Task,
    payload: Mapping[str, Any],
    context: TaskContext,
    *,
    executor: concurrent.futures.Executor,
    max_result_bytes: int,
) -> TaskChange:
    """Run the WORKING ``task``'s handler; the change its end makes.

    The caller keeps the timeout (see :func:`deadline_exceeded`): a handler that
    ignores cancellation must not keep its task from ending. Cancelling the caller
    stops the handler (a plain one is asked to stop through its context) and raises
    CancelledError; a handler that raises CancelledError although nobody cancelled
    the caller ends the task :data:`CANCELLED_FROM_WITHIN`.
    """
    try:
        outcome = await registry.run(
            task.task_type,
            dict(payload),
            context,
            executor=executor,
            max_result_bytes=max_result_bytes,
        )
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # somebody stopped it: they record why
        return CANCELLED_FROM_WITHIN
    return ending(outcome)


def deadline_exceeded(task: Task) -> TaskChange:
    """The end of a task that ran past its timeout."""
    late = f"the task did not finish within its timeout of {task.timeout:g}s"
    return TaskChange(TaskState.FAILED, error_code="DEADLINE_EXCEEDED", error_message=late)


def ending(outcome: TaskOutcome) -> TaskChange:
    """The final change a handler's outcome makes."""
    if outcome.ok:
        return TaskChange(TaskState.COMPLETED, result=outcome.result)
    state = TaskState.REJECTED if outcome.rejected else TaskState.FAILED
    return TaskChange(state, error_code=outcome.error_code, error_message=outcome.error_message)
