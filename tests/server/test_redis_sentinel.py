"""A primary with a replica, found through Sentinel: the server follows a failover.

Real processes: the primary, its replica and a Sentinel (``redis-server
--sentinel``); the failover kills the primary with SIGKILL and lets the Sentinel
promote the replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import grpc
import grpc.aio
import pytest

from peer_grpc import PeerClient, PeerError, PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.stores.redis.connection import SentinelAddress, parse_sentinel_url
from tests.conftest import open_session, session_metadata
from tests.failover_load import Load, send_continuously
from tests.redis_sentinel import SentinelGroup
from tests.rpc_details import details_of

T = TypeVar("T")


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
        ("redis-sentinel://127.0.0.1:port/peer", "is not a host:port"),
        ("redis-sentinel://127.0.0.1/peer/zero", "database after the service must be a number"),
        ("sentinel://127.0.0.1/peer", "not a Redis URL"),
    ],
)
def test_a_bad_sentinel_url_is_refused_saying_what_is_wrong(url: str, says: str):
    with pytest.raises(ValueError, match=says):
        ServerConfig(store=url)


# --- --redis-wait-replicas ---------------------------------------------------------------------


def wait_config(sentinels: SentinelGroup) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        store=sentinels.url,
        shutdown_grace=0,
        peer_handshake_rate=0,
        redis_wait_replicas=1,
    )


@pytest.mark.timeout(60)
async def test_with_wait_replicas_a_call_runs_once_its_replica_has_its_admission(
    sentinels: SentinelGroup,
):
    async with (
        PeerServer(wait_config(sentinels)) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session = await open_session(stub)
        request = peer_pb2.DelegateTaskRequest(task_type="echo", return_immediately=True)
        metadata = session_metadata(session.session_id, 1)
        assert sentinels.replica is not None
        sentinels.replica.freeze()
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DelegateTask(request, metadata=metadata)
        finally:
            sentinels.replica.thaw()
        await asyncio.to_thread(sentinels.replicated)

        again = await stub.DelegateTask(request, metadata=metadata)  # the resend runs it
        listed = await stub.ListTasks(
            peer_pb2.ListTasksRequest(), metadata=session_metadata(session.session_id, 2)
        )

    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert "not on 1 Redis replicas" in details.message
    assert again.task.task_type == "echo"
    assert [task.task_id for task in listed.tasks] == [again.task.task_id], "it ran once"


@pytest.mark.timeout(60)
async def test_with_wait_replicas_calls_run_while_the_replica_keeps_up(sentinels: SentinelGroup):
    async with (
        PeerServer(wait_config(sentinels)) as server,
        PeerClient(server.address, "durable") as client,
    ):
        await client.ping()
        before = sentinels.primary_stats()
        for _ in range(20):
            await client.ping()
        after = sentinels.primary_stats()
        flusher = sentinels.primary_client()
        flusher.script_flush()  # as after a restart: the script is gone
        flusher.close()
        task = await client.delegate_task("echo", {"n": 1})

    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    # One WAIT per admission, in its round trip; no SCRIPT EXISTS before each.
    assert after["wait"] - before["wait"] == 20
    assert after["script"] == before["script"]


# --- a failover under load -----------------------------------------------------------------------


async def fail_over_under_load(sentinels: SentinelGroup, config: ServerConfig) -> Load:
    """Eight peers ping continuously; the primary is killed and its replica promoted."""
    load, stop, failed_over = Load(), asyncio.Event(), asyncio.Event()
    async with (
        PeerServer(config) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        peers = [
            asyncio.create_task(send_continuously(stub, f"load-{n}", load, stop, failed_over))
            for n in range(8)
        ]
        await asyncio.sleep(2)
        await asyncio.to_thread(sentinels.fail_over)
        failed_over.set()
        # The promoted replica has no replica of its own until the old primary is back.
        await asyncio.to_thread(sentinels.restore)
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*peers)
    return load


@pytest.mark.timeout(120)
async def test_with_wait_replicas_a_failover_under_load_accepts_no_sequence_twice(
    sentinels: SentinelGroup,
):
    load = await fail_over_under_load(sentinels, wait_config(sentinels))

    print(
        f"\nwith --redis-wait-replicas 1: {dict(load.codes)}, accepted twice {load.accepted_twice}"
    )
    assert load.accepted_twice == 0
    assert load.ok_after > 0, "the calls went on after the failover"


@pytest.mark.timeout(120)
async def test_without_wait_replicas_a_failover_under_load_is_fenced_and_accepts_none_twice(
    sentinels: SentinelGroup,
):
    config = replace(wait_config(sentinels), redis_wait_replicas=0)
    load = await fail_over_under_load(sentinels, config)

    # Asynchronous replication may forget acknowledged admissions; the fence keeps a
    # session whose record rolled back from accepting a sequence twice.
    print(
        f"\nwithout --redis-wait-replicas: {dict(load.codes)}, accepted twice {load.accepted_twice}"
    )
    assert load.accepted_twice == 0
    assert load.ok_after > 0, "the calls went on after the failover"
