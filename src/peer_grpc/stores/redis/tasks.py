"""The Redis task store: tasks any replica can read, watch and cancel.

A task is a Redis stream of its snapshots, one entry per version (entry id
``<version>-0``), so a watcher on any replica reads what came after the version
it has, and blocks (XREAD) until there is more. A change is appended only if
the task is still at the version it was computed from (a compare-and-append
script), so two replicas changing one task at once cannot both win.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, cast

import redis.asyncio

from peer_grpc.core.errors import InternalError, TaskNotFound
from peer_grpc.core.task import Task, TaskChange, TaskState
from peer_grpc.stores.memory.tasks import DEFAULT_TASK_RETENTION
from peer_grpc.stores.protocols import SweepResult
from peer_grpc.stores.redis import scripts
from peer_grpc.stores.redis.connection import RedisOptions, connect, translate_unavailable
from peer_grpc.stores.redis.keys import (
    DEFAULT_KEY_PREFIX,
    RedisKeys,
    index_member,
    parse_index_member,
)
from peer_grpc.stores.redis.stream_watch import StreamWatch

__all__ = ["RedisTaskStore"]

#: Tries of a change that lost the race to a concurrent change of the same task.
_CHANGE_TRIES = 32
#: Task ids read per round trip when listing a peer's tasks.
_LIST_BATCH = 100


class RedisTaskStore:
    """Tasks in Redis, for any number of server replicas.

    A task not yet finished is kept for its timeout plus the retention, so that
    one whose replica died without a word still goes away in the end.

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
        client: redis.asyncio.Redis,
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
        self._create = client.register_script(scripts.TASK_CREATE)
        self._append = client.register_script(scripts.TASK_APPEND)

    @classmethod
    def from_url(
        cls, url: str, *, options: RedisOptions | None = None, **kwargs: Any
    ) -> RedisTaskStore:
        """A store on the Redis at ``url``; ``kwargs`` as for the constructor."""
        options = options or RedisOptions()
        kwargs.setdefault("watch_poll", min(0.5, options.command_timeout / 2))
        return cls(connect(url, options), retry_after=options.retry_after, **kwargs)

    async def create(self, task: Task) -> Task:
        keys = self._keys
        with self._unavailable("creating a task"):
            ordinal = int(await self._redis.incr(keys.task_ordinal))
            task = replace(task, ordinal=ordinal)
            created = await self._create(
                keys=[keys.task(task.task_id)], args=[_encode(task), self._keep_ms(task)]
            )
            if not created:
                raise ValueError("task id collision")
            await self._redis.zadd(keys.owned_tasks(task.owner_peer_id), {task.task_id: ordinal})
            if task.state.is_final:
                await self._mark_ended(task)
        return task

    async def get(self, task_id: str) -> Task | None:
        with self._unavailable("reading a task"):
            entries = await self._redis.xrevrange(self._keys.task(task_id), count=1)
        return _decode_entry(entries[0]) if entries else None

    async def change(self, task_id: str, change: TaskChange, now: float) -> Task:
        for _ in range(_CHANGE_TRIES):
            latest = await self.get(task_id)
            if latest is None:
                raise TaskNotFound(f"no task {task_id}")
            task = latest.changed(change, now)  # raises InvalidTransition
            with self._unavailable("changing a task"):
                verdict = await self._append(
                    keys=[self._keys.task(task_id)],
                    args=[latest.version, _encode(task), self._keep_ms(task)],
                )
            if verdict == b"GONE":
                raise TaskNotFound(f"no task {task_id}")
            if verdict == b"OK":
                if task.state.is_final:
                    with self._unavailable("changing a task"):
                        await self._mark_ended(task)
                return task
            # CONFLICT: another change got there first; judge this one against it.
        raise InternalError(
            f"task {task_id} kept changing under a change for {_CHANGE_TRIES} tries"
        )

    async def changes_after(self, task_id: str, version: int) -> Sequence[Task]:
        key = self._keys.task(task_id)
        while True:
            with self._unavailable("watching a task"):
                entries = await self._redis.xrange(key, min=f"{version + 1}-0")
                if entries:
                    return [_decode_entry(entry) for entry in entries]
                if not await self._redis.exists(key):
                    raise TaskNotFound(f"no task {task_id}")
                # Until a newer entry comes, or the poll interval passes; the replica's
                # one reader waits for every watcher, which holds no connection.
                await self._watch.wait(key, version)

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
                task = _decode_entry(entries[0])
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
            due = cast(
                list[bytes],
                await self._redis.zrangebyscore(
                    keys.tasks_ended, "-inf", repr(float(now)), start=0, num=max(limit, 0)
                ),
            )
            for member in due:
                task_id, owner = parse_index_member(member)
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.delete(keys.task(task_id))
                    pipe.zrem(keys.owned_tasks(owner), task_id)
                    pipe.zrem(keys.tasks_ended, member)
                    await pipe.execute()
        return SweepResult(purged=len(due), more=len(due) >= limit)

    async def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers."""
        with self._unavailable("answering a health check"):
            await self._redis.ping()

    async def close(self) -> None:
        """Stop watching and close the Redis client."""
        await self._watch.close()
        await self._redis.aclose()

    async def _mark_ended(self, task: Task) -> None:
        member = index_member(task.task_id, task.owner_peer_id)
        await self._redis.zadd(self._keys.tasks_ended, {member: task.updated_at + self._retention})

    def _keep_ms(self, task: Task) -> int:
        """How long Redis keeps the task from now, should no sweep forget it first."""
        seconds = self._retention if task.state.is_final else task.timeout + self._retention
        return max(int(seconds * 1000), 1)

    def _unavailable(self, what: str) -> Any:
        return translate_unavailable(what, self._retry_after)


def _encode(task: Task) -> str:
    fields = asdict(task)
    fields["state"] = int(task.state)
    return json.dumps(fields, separators=(",", ":"))


def _decode_entry(entry: Any) -> Task:
    """A task from a stream entry (id, fields)."""
    fields: Mapping[bytes, bytes] = entry[1]
    raw: dict[str, Any] = json.loads(fields[b"task"])
    raw["state"] = TaskState(raw["state"])
    return Task(**raw)
