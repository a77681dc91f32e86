"""Round trips to Redis per call, counted on the wire: admission is one; outcomes are batched."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc.aio
import pytest
import redis.asyncio

from peer_grpc import PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.stores import MemoryTaskStore, RedisSessionStore
from peer_grpc.stores.redis import sessions as redis_sessions
from tests.conftest import open_session, session_metadata, shared_redis


class CountingConnection(redis.asyncio.Connection):
    """A Redis connection that counts what it sends: one send is one round trip
    (a pipeline goes out in one)."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counted_server(server_config: ServerConfig, request) -> AsyncIterator[PeerServer]:
    client = redis.asyncio.Redis.from_url(shared_redis().url, connection_class=CountingConnection)
    store = RedisSessionStore(
        client, key_prefix=f"trips-{uuid.uuid4().hex[:8]}", retry_cache_size=request.param
    )
    # No background sweeps or health checks: only calls talk to Redis.
    config = replace(server_config, sweep_interval=3600, store_check_interval=3600)
    server = PeerServer(config, store=store, task_store=MemoryTaskStore())
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def round_trips_of(calls: Any) -> int:
    before = CountingConnection.sends
    await calls
    return CountingConnection.sends - before


@pytest.mark.parametrize(
    ("counted_server", "trailing"),
    # With a retry cache, each call's outcome rides on the next admission; the last
    # call's, with no admission after it, goes on its own.
    [pytest.param(0, 0, id="without-retry-cache"), pytest.param(8, 1, id="with-retry-cache")],
    indirect=["counted_server"],
)
async def test_each_validated_call_is_one_round_trip(
    counted_server: PeerServer, trailing: int, monkeypatch: pytest.MonkeyPatch
):
    # Long enough that no outcome goes alone while the calls come, however slow the machine.
    monkeypatch.setattr(redis_sessions, "OUTCOME_DELAY", 1.0)
    async with grpc.aio.insecure_channel(counted_server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 1))
        await asyncio.sleep(1.5)  # its outcome written, loading the script that writes them

        async def pings() -> None:
            for sequence in range(2, 22):
                metadata = session_metadata(session_id, sequence)
                await stub.Ping(peer_pb2.PingRequest(), metadata=metadata)

        assert await round_trips_of(pings()) == 20
        # The last call's outcome, with no admission after it, goes on its own.
        assert await round_trips_of(asyncio.sleep(1.5)) == trailing


@pytest.mark.parametrize("counted_server", [8], indirect=True)
async def test_concurrent_sessions_stay_near_one_round_trip_per_call(
    counted_server: PeerServer, monkeypatch: pytest.MonkeyPatch
):
    # Long enough that a loaded machine's slow next call still carries the outcome
    # (a CI run once counted 455: its sessions' calls came more than 50 ms apart).
    monkeypatch.setattr(redis_sessions, "OUTCOME_DELAY", 1.0)
    sessions, calls_each = 32, 10
    async with grpc.aio.insecure_channel(counted_server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        opened = [await open_session(stub, f"peer-{n}") for n in range(sessions)]
        await asyncio.sleep(0.2)  # the first outcome written, loading the script that writes them

        async def calls(session_id: str) -> None:
            for sequence in range(1, calls_each + 1):
                metadata = session_metadata(session_id, sequence)
                await stub.Ping(peer_pb2.PingRequest(), metadata=metadata)

        async def all_calls() -> None:
            await asyncio.gather(*(calls(session.session_id) for session in opened))
            await asyncio.sleep(0.2)

        trips = await round_trips_of(all_calls())

    total = sessions * calls_each
    # One round trip to admit each call, and one more for each session's first call
    # (it indexes the session as established). Outcomes ride on admissions, or, when a
    # session's next call is slow to come, go in pipelines shared by all the sessions
    # (each session's last outcome, a second after its call, falls outside the count):
    # two round trips a call would be 640.
    assert total + sessions <= trips <= 1.2 * total + sessions
