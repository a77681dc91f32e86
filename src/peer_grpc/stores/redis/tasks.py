"""The Redis task store: tasks any replica can read, watch and cancel, and any runner run.

A task is a Redis stream of its snapshots, one entry per version (entry id
``<version>-0``), so a watcher on any replica reads what came after the version
it has, and waits (on the replica's one stream reader) until there is more. A
change is appended only if the task is still at the version it was computed from
(a compare-and-append script), so two replicas changing one task at once cannot
both win. Tasks reach runners through the store's :attr:`RedisTaskStore.queue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from peer_grpc.core.task import Task, TaskChange, TaskState
from peer_grpc.stores.memory.tasks import DEFAULT_TASK_RETENTION
from peer_grpc.stores.protocols import SweepResult
from peer_grpc.stores.redis import task_scripts
from peer_grpc.stores.redis.connection import (
    RedisClient,
    RedisOptions,
    connect,
    translate_unavailable,
)
from peer_grpc.stores.redis.keys import DEFAULT_KEY_PREFIX, RedisKeys
from peer_grpc.stores.redis.stream_watch import StreamWatch
from peer_grpc.stores.redis.task_queue import RedisTaskQueue, decode_entry

__all__ = ["RedisTaskStore"]

#: Task ids read per round trip when listing a peer's tasks.
_LIST_BATCH = 100


class RedisTaskStore:
    """Tasks in Redis, for any number of server replicas.

    A task is kept until it ends (a runner that dies leaves it to be reclaimed after
    its lease), then for the retention.

    Args:
        client: a ``redis.asyncio`` client (see :meth:`from_url`); closed with the store.
        key_prefix: the start of every key (see :mod:`peer_grpc.stores.redis.keys`).
        retention: seconds a finished task is kept for its owner to read.
        retry_after: seconds callers are told to wait while Redis is away.
        watch_poll: the longest a watcher blocks on Redis before it checks that
            the task still exists.
    """

    #: Every replica on the same Redis shares it.
    shared = True

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        retention: float = DEFAULT_TASK_RETENTION,
        retry_after: float = 1.0,
        watch_poll: float = 0.5,
    ) -> None:
        if retention < 0:
            raise ValueError("retention must not be negative")
        self._redis = client
        self._keys = RedisKeys(key_prefix)
        self._retention = retention
        self._retry_after = retry_after
        self._watch = StreamWatch(client, max(int(watch_poll * 1000), 1))
        self._sweep = client.register_script(task_scripts.SWEEP)
        #: Hands the tasks to runners in any process sharing this Redis.
        self.queue = RedisTaskQueue(
            client,
            self._keys,
            retention=retention,
            retry_after=retry_after,
            watch=self._watch,
        )

    @classmethod
    def from_url(
        cls, url: str, *, options: RedisOptions | None = None, **kwargs: Any
    ) -> RedisTaskStore:
        """A store on the Redis at ``url``; ``kwargs`` as for the constructor."""
        options = options or RedisOptions()
        kwargs.setdefault("watch_poll", min(0.5, options.command_timeout / 2))
        return cls(connect(url, options), retry_after=options.retry_after, **kwargs)

    async def create(self, task: Task) -> Task:
        """Store ``task`` (queued, if SUBMITTED) whatever the limits; see TaskStore.create."""
        return (await self.queue.enqueue(task, {}, None)).task

    async def get(self, task_id: str) -> Task | None:
        return await self.queue.get(task_id)

    async def change(self, task_id: str, change: TaskChange, now: float) -> Task:
        return await self.queue.change(task_id, change, now)

    async def changes_after(self, task_id: str, version: int) -> Sequence[Task]:
        return await self.queue.changes_after(task_id, version)

    async def list_owned(
        self, owner_peer_id: str, *, after: int, limit: int, state: TaskState | None = None
    ) -> Sequence[Task]:
        owned = self._keys.owned_tasks(owner_peer_id)
        page: list[Task] = []
        cursor = after
        while len(page) < limit:
            with self._unavailable("listing tasks"):
                batch = cast(
                    list[tuple[bytes, float]],
                    await self._redis.zrangebyscore(
                        owned, f"({cursor}", "+inf", start=0, num=_LIST_BATCH, withscores=True
                    ),
                )
                if not batch:
                    break
                async with self._redis.pipeline(transaction=False) as pipe:
                    for task_id, _ in batch:
                        pipe.xrevrange(self._keys.task(task_id.decode()), count=1)
                    latest = await pipe.execute()
                gone = [
                    task_id
                    for (task_id, _), entries in zip(batch, latest, strict=True)
                    if not entries
                ]
                if gone:  # swept, or lapsed with its key's TTL
                    await self._redis.zrem(owned, *gone)
            for (_, ordinal), entries in zip(batch, latest, strict=True):
                cursor = int(ordinal)
                if not entries:
                    continue
                task = decode_entry(entries[0])
                if state is None or task.state is state:
                    page.append(task)
                    if len(page) == limit:
                        break
            if len(batch) < _LIST_BATCH:
                break
        return page

    async def sweep(self, now: float, limit: int) -> SweepResult:
        keys = self._keys
        with self._unavailable("sweeping tasks"):
            due = int(
                await self._sweep(keys=[keys.task_counts], args=[keys.tasks, repr(now), limit])
            )
        return SweepResult(purged=due, more=due >= limit)

    async def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers."""
        with self._unavailable("answering a health check"):
            await self._redis.ping()

    async def close(self) -> None:
        """Stop watching and close the Redis client."""
        await self._watch.close()
        await self._redis.aclose()

    def _unavailable(self, what: str) -> Any:
        return translate_unavailable(what, self._retry_after)
