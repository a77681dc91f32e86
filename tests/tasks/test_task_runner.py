"""The runner of queued tasks, in this process, on a real Redis queue: what it holds,
and how it lets go of it."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from peer_grpc import Retry, TaskRegistry, TaskState, current_task
from peer_grpc.core.task import Task
from peer_grpc.stores.protocols import QueueLimits
from peer_grpc.stores.redis import RedisTaskStore
from peer_grpc.tasks.manager import TaskLimits, TaskManager
from peer_grpc.tasks.runner import TaskRunner
from tests.conftest import eventually

T = TaskState
NOW = 1_700_000_000.0
LEASE = 0.3
LIMITS = QueueLimits(max_running=8, max_per_session=8, max_queued=8, retry_after=1.0)


def new_task(task_type: str, *, max_attempts: int = 1, timeout: float = 30.0) -> Task:
    return Task(
        task_id=secrets.token_hex(8),
        task_type=task_type,
        owner_peer_id="owner",
        session_id="session",
        state=T.SUBMITTED,
        created_at=NOW,
        updated_at=NOW,
        timeout=timeout,
        max_attempts=max_attempts,
    )


async def test_a_task_that_comes_back_to_its_runner_is_held_at_its_new_attempt(
    redis_tasks: RedisTaskStore,
):
    """Its lease lapsed while it ran (a stall), it was queued again, and the same runner
    claimed it: the earlier attempt stops, and ending it does not drop the new one."""
    registry = TaskRegistry()
    attempts: list[int] = []
    release = asyncio.Event()

    @registry.task("slow", retry=Retry(max_attempts=3))
    async def slow(payload: dict[str, Any]) -> dict[str, Any]:
        attempts.append(current_task().attempt)
        await release.wait()
        return {"attempt": current_task().attempt}

    runner = TaskRunner(registry, redis_tasks.queue, concurrency=2, lease=LEASE, runner_id="runner")
    task = (await redis_tasks.queue.enqueue(new_task("slow", max_attempts=3), {}, LIMITS)).task
    runner.adopt(await redis_tasks.queue.claim("runner", 1, NOW))
    await eventually(lambda: attempts == [1])
    await asyncio.sleep(LEASE + 0.05)  # no tick ran: the lease lapsed
    await redis_tasks.queue.reclaim("reaper", LEASE, NOW, 10)

    runner.adopt(await redis_tasks.queue.claim("runner", 1, NOW))
    await eventually(lambda: attempts == [1, 2])
    await asyncio.sleep(0.05)  # the first attempt's lifecycle ends (stopped)

    finished = runner.finished(task.task_id)
    assert finished is not None
    assert runner.running == 1
    release.set()
    ended = await finished
    assert ended is not None
    assert (ended.state, ended.result) == (T.COMPLETED, {"attempt": 2})
    await runner.stop(0)


async def test_a_delegation_whose_caller_went_away_still_gets_the_shutdown_grace(
    redis_tasks: RedisTaskStore,
):
    registry = TaskRegistry()

    @registry.task("short")
    async def short(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        return {"done": True}

    manager = TaskManager(registry, redis_tasks, limits=TaskLimits(lease=LEASE))
    waiting = asyncio.create_task(
        manager.delegate(peer_id="owner", session_id="session", task_type="short", payload={})
    )
    await eventually(lambda: manager.running == 1)
    waiting.cancel()  # the caller goes away

    await manager.shutdown(grace=5)

    [task] = (await manager.list_tasks("owner")).tasks
    assert task.state is T.COMPLETED
