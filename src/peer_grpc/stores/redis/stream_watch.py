"""One reader for every watched task stream of a replica, fanning out to the watchers.

A watcher that blocked on a pooled connection of its own (``XREAD BLOCK``) held that
connection for as long as it watched: a hundred watchers took a hundred connections
from the pool the whole server shares, and calls, health checks and the recording of
tasks' ends waited for a free one. Here one reader blocks, on a connection of its
own, on every watched stream at once; watchers wait on futures and hold nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection

from peer_grpc.stores.redis.connection import RedisClient, unavailable_errors

__all__ = ["StreamWatch"]

log = logging.getLogger(__name__)

#: Seconds the reader waits before reading again after Redis failed it.
_PAUSE_AFTER_FAILURE = 0.1
#: A stream entry id as (milliseconds, sequence), which orders as the ids do.
_EntryId = tuple[int, int]


class StreamWatch:
    """Tells watchers when a stream may have grown past the version they know.

    Args:
        client: the store's client; the reader gets a connection of its own from the
            same settings, and new watchers interrupt its wait through ``client``. On a
            Redis Cluster the watched streams share one slot (``{tasks}``), and the
            reader's connection goes to that slot's primary.
        block_ms: the longest the reader blocks; watchers are woken at least that
            often, to see whether their stream still exists.
    """

    def __init__(self, client: RedisClient, block_ms: int) -> None:
        self._client = client
        #: On a Redis Cluster: the node the reader's connection goes to.
        self._node: ClusterNode | None = None
        self._block_ms = block_ms
        self._waiters: dict[str, list[tuple[_EntryId, asyncio.Future[None]]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connection: redis.asyncio.Redis | None = None
        self._reader_id: int | None = None
        #: What the reader's current XREAD covers: key -> the entry id it reads after.
        self._reading: dict[str, _EntryId] = {}
        self._interrupted = False

    async def wait(self, key: str, version: int) -> None:
        """Return once the task stream ``key`` may hold an entry newer than ``version``
        (entry ids are ``<version>-0``), or after ``block_ms`` at most.

        Raises:
            redis.exceptions.RedisError: Redis failed the reader (one of
                :data:`~peer_grpc.stores.redis.connection.unavailable_errors`).
        """
        await self._wait(key, (version, 0))

    async def wait_after(self, key: str, entry_id: str) -> None:
        """Return once the stream ``key`` may hold an entry after ``entry_id``
        (``<ms>-<seq>``), or after ``block_ms`` at most. Raises as :meth:`wait`."""
        ms, _, sequence = entry_id.partition("-")
        await self._wait(key, (int(ms), int(sequence or 0)))

    async def _wait(self, key: str, after: _EntryId) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (after, future)
        self._waiters.setdefault(key, []).append(entry)
        try:
            self._start_reader()
            if key not in self._reading:
                await self._interrupt()
            await future
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(entry)
                if not waiting:
                    del self._waiters[key]

    async def close(self) -> None:
        """Stop the reader and close its connection."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.aclose(close_connection_pool=True)

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="peer-grpc-stream-watch")

    async def _interrupt(self) -> None:
        """Make the reader's blocked XREAD return, so that it reads the new set of keys."""
        if self._reader_id is None or not self._reading:
            return  # not blocked yet: its next XREAD includes every waiter
        self._interrupted = True
        with contextlib.suppress(*unavailable_errors):
            if self._node is not None:
                assert isinstance(self._client, RedisCluster)
                await self._client.client_unblock(self._reader_id, target_nodes=self._node)
            else:
                await self._client.client_unblock(self._reader_id)

    async def _read(self) -> None:
        while self._waiters:
            try:
                reply = await self._read_once()
            except unavailable_errors as error:
                self._wake_all(error)
                self._reader_id = None  # the connection is new after a failure
                await self._forget_node()
                await asyncio.sleep(_PAUSE_AFTER_FAILURE)
                continue
            if reply:
                self._wake({key.decode() for key, _ in reply})
            elif not self._interrupted:
                self._wake(set(self._waiters))  # a poll passed: let each see its stream
            self._interrupted = False

    async def _read_once(self) -> Any:
        connection = await self._own_connection()
        if self._reader_id is None:
            self._reader_id = await connection.client_id()
        if not self._waiters:  # the last one gave up while the id was asked for
            return None
        self._reading = {
            key: min(after for after, _ in waiting) for key, waiting in self._waiters.items()
        }
        streams = {key: f"{ms}-{sequence}" for key, (ms, sequence) in self._reading.items()}
        try:
            return await connection.xread(streams, block=self._block_ms)  # type: ignore[arg-type]
        finally:
            self._reading = {}

    async def _own_connection(self) -> redis.asyncio.Redis:
        if self._connection is None:
            connection_class: type[AbstractConnection]
            if isinstance(self._client, RedisCluster):
                self._node = await _primary_of(self._client, next(iter(self._waiters)))
                connection_class = self._node.connection_class
                settings = self._node.connection_kwargs
            else:
                pool = self._client.connection_pool
                connection_class, settings = pool.connection_class, pool.connection_kwargs
            self._connection = redis.asyncio.Redis(
                connection_pool=redis.asyncio.ConnectionPool(
                    connection_class=connection_class, max_connections=1, **settings
                )
            )
        return self._connection

    async def _forget_node(self) -> None:
        """On a Redis Cluster, after a failure: connect anew to whichever node then
        serves the slot (a failover may have moved it)."""
        if self._node is None or self._connection is None:
            return
        connection, self._connection, self._node = self._connection, None, None
        with contextlib.suppress(*unavailable_errors):
            await connection.aclose(close_connection_pool=True)

    def _wake(self, keys: set[str]) -> None:
        for key in keys:
            for _, future in self._waiters.get(key, ()):
                if not future.done():
                    future.set_result(None)

    def _wake_all(self, error: BaseException) -> None:
        for waiting in self._waiters.values():
            for _, future in waiting:
                if not future.done():
                    # One exception each: a raised exception keeps its traceback.
                    future.set_exception(type(error)(*error.args))


async def _primary_of(cluster: RedisCluster, key: str) -> ClusterNode:
    """The node that serves ``key``'s slot, as the cluster client last learnt it."""
    await cluster.initialize()
    node = cluster.get_node_from_key(key)
    if node is None:  # only asked of replicas; kept for the type checker
        raise redis.exceptions.SlotNotCoveredError(f"no node serves {key!r}")
    return node
