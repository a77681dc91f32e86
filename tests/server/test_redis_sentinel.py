"""A primary with a replica, found through Sentinel: the server follows a failover.

Real processes: the primary, its replica and a Sentinel (``redis-server
--sentinel``); the failover kills the primary with SIGKILL and lets the Sentinel
promote the replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from peer_grpc import PeerClient, PeerError, PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.stores.redis.connection import SentinelAddress, parse_sentinel_url
from tests.redis_sentinel import SentinelGroup

T = TypeVar("T")


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path)
    try:
        group.start()
        yield group
    finally:
        group.stop()


async def once_served(call: Callable[[], Awaitable[T]], seconds: float = 30.0) -> T:
    """``call``'s answer, sent again while the store is away (a failover under way)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except PeerError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.timeout(120)
async def test_sessions_and_tasks_live_through_sentinel_and_a_failover(sentinels: SentinelGroup):
    config = ServerConfig(
        host="127.0.0.1", port=0, store=sentinels.url, shutdown_grace=0, peer_handshake_rate=0
    )
    async with PeerServer(config) as server, PeerClient(server.address, "sentinel") as client:
        await client.ping()
        task = await client.delegate_task("echo", {"n": 1})
        assert task.state == peer_pb2.TASK_STATE_COMPLETED
        await asyncio.to_thread(sentinels.replicated)

        await asyncio.to_thread(sentinels.fail_over)

        # The session and the task were replicated: the promoted replica has them.
        await once_served(client.ping)
        again = await once_served(lambda: client.get_task(task.task_id))
        assert again.state == peer_pb2.TASK_STATE_COMPLETED
        after = await once_served(lambda: client.delegate_task("echo", {"n": 2}))
        assert after.state == peer_pb2.TASK_STATE_COMPLETED


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis-sentinel://10.0.0.1:26380,10.0.0.2,[::1]:5000/peer/2",
            SentinelAddress(
                (("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 5000)), "peer", db=2
            ),
        ),
        (
            "rediss-sentinel://app:s%40cret@sentinel.internal/peer",
            SentinelAddress(
                (("sentinel.internal", 26379),),
                "peer",
                username="app",
                password="s@cret",
                tls=True,
            ),
        ),
    ],
)
def test_a_sentinel_url_names_the_sentinels_the_service_and_the_primarys_credentials(
    url: str, expected: SentinelAddress
):
    assert parse_sentinel_url(url) == expected
    ServerConfig(store=url)  # taken


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis-sentinel://127.0.0.1:26379", "names no service"),
        ("redis-sentinel://127.0.0.1:port/peer", "is not a Sentinel's host:port"),
        ("redis-sentinel://127.0.0.1/peer/zero", "database after the service must be a number"),
        ("sentinel://127.0.0.1/peer", "not a Redis URL"),
    ],
)
def test_a_bad_sentinel_url_is_refused_saying_what_is_wrong(url: str, says: str):
    with pytest.raises(ValueError, match=says):
        ServerConfig(store=url)
