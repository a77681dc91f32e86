"""Watchers of Redis task streams share one reader: a hundred of them hold no pooled
connection, so calls, health checks and the recording of tasks' ends never wait for one."""

from __future__ import annotations

import asyncio

import redis.asyncio

from peer_grpc.core.task import TaskChange, TaskState
from peer_grpc.stores import RedisTaskStore
from tests.conftest import redis_task_store, shared_redis
from tests.tasks.test_task_lifecycle import new_task

WATCHERS = 100


async def blocked_readers() -> int:
    """Connections Redis holds blocked in XREAD (flag ``b`` in CLIENT LIST)."""
    async with redis.asyncio.Redis.from_url(shared_redis().url) as client:
        clients = await client.client_list()
    return sum(1 for c in clients if c["cmd"] == "xread" and "b" in c["flags"])


async def test_a_hundred_watchers_hold_no_connection_each(redis_tasks: RedisTaskStore):
    ids = [f"w{n}" for n in range(WATCHERS)]
    for task_id in ids:
        await redis_tasks.create(new_task(task_id))
    watchers = [asyncio.create_task(redis_tasks.changes_after(task_id, 1)) for task_id in ids]
    await asyncio.sleep(0.3)  # every watcher is waiting
    blocked = await blocked_readers()
    await redis_tasks.check()  # a health check gets a connection at once

    for task_id in ids:
        await redis_tasks.change(task_id, TaskChange(TaskState.WORKING), 101.0)
    seen = await asyncio.wait_for(asyncio.gather(*watchers), 10)

    assert blocked == 1  # the one reader, not a connection per watcher
    assert [[task.state for task in changes] for changes in seen] == [[TaskState.WORKING]] * 100


async def test_a_watcher_that_joins_late_is_woken_without_waiting_out_the_poll(
    redis_tasks: RedisTaskStore,
):
    slow_poll = redis_task_store(watch_poll=30.0)
    try:
        await slow_poll.create(new_task("first"))
        await slow_poll.create(new_task("late"))
        first = asyncio.create_task(slow_poll.changes_after("first", 1))
        await asyncio.sleep(0.1)  # the reader is blocked on "first" alone
        late = asyncio.create_task(slow_poll.changes_after("late", 1))
        await asyncio.sleep(0.1)
        await slow_poll.change("late", TaskChange(TaskState.WORKING), 101.0)

        changes = await asyncio.wait_for(late, 2)  # far less than the 30 s poll
        assert [task.state for task in changes] == [TaskState.WORKING]
        first.cancel()
    finally:
        await slow_poll.close()
