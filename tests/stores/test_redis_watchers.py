"""Watchers of Redis task streams share one reader: a hundred of them hold no pooled
connection, so calls, health checks and the recording of tasks' ends never wait for one."""

from __future__ import annotations

import asyncio

import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from peer_grpc.core.task import TaskChange, TaskState
from peer_grpc.stores import RedisTaskStore
from tests.conftest import (
    cluster_task_store,
    eventually,
    redis_task_store,
    shared_cluster,
    shared_redis,
)
from tests.tasks.test_task_lifecycle import new_task

WATCHERS = 100


async def blocked_readers(store: RedisTaskStore) -> int:
    """Connections blocked in XREAD (flag ``b`` in CLIENT LIST), on every Redis server
    the store uses: the one Redis, or each primary of the cluster."""
    on_cluster = isinstance(store._redis, RedisCluster)
    urls = [node.url for node in shared_cluster().primaries] if on_cluster else [shared_redis().url]
    blocked = 0
    for url in urls:
        async with redis.asyncio.Redis.from_url(url) as client:
            clients = await client.client_list()
        blocked += sum(1 for c in clients if c["cmd"] == "xread" and "b" in c["flags"])
    return blocked


async def test_a_hundred_watchers_hold_no_connection_each(redis_tasks: RedisTaskStore):
    ids = [f"w{n}" for n in range(WATCHERS)]
    for task_id in ids:
        await redis_tasks.create(new_task(task_id))
    watchers = [asyncio.create_task(redis_tasks.changes_after(task_id, 1)) for task_id in ids]

    async def one_reader_blocked() -> bool:
        # The one reader, not a connection per watcher (on a busy machine it may take a
        # moment to block on every stream).
        return await blocked_readers(redis_tasks) == 1

    await eventually(one_reader_blocked)
    await redis_tasks.check()  # a health check gets a connection at once

    for task_id in ids:
        await redis_tasks.change(task_id, TaskChange(TaskState.WORKING), 101.0)
    seen = await asyncio.wait_for(asyncio.gather(*watchers), 10)

    assert [[task.state for task in changes] for changes in seen] == [[TaskState.WORKING]] * 100


async def test_a_watcher_that_joins_late_is_woken_without_waiting_out_the_poll(
    redis_tasks: RedisTaskStore,
):
    on_cluster = isinstance(redis_tasks._redis, RedisCluster)
    slow_poll = (cluster_task_store if on_cluster else redis_task_store)(watch_poll=30.0)
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
