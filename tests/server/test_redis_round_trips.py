"""Round trips to Redis per call, counted on the wire: admission is one; outcomes are batched."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, ClassVar

import grpc.aio
import pytest
import redis.asyncio

from peer_grpc import PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.stores import MemoryTaskStore, RedisSessionStore, RedisTaskStore
from peer_grpc.stores.redis import sessions as redis_sessions
from tests.conftest import open_session, session_metadata, shared_redis


class CountingConnection(redis.asyncio.Connection):
    """A Redis connection that counts what it sends: one send is one round trip
    (a pipeline goes out in one). A new connection's own set-up (HELLO, CLIENT ...) is
    not counted: how many connections the pool opens depends on timing, not on calls."""

    sends = 0
    #: The name of every command counted (for EVALSHA, with the script's SHA).
    sent: ClassVar[list[bytes]] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        name = _command_name(command)
        if name not in _CONNECTION_SET_UP:
            CountingConnection.sends += 1
            CountingConnection.sent.append(name)
        await super().send_packed_command(command, check_health)


#: What redis-py sends on each new connection before any command of ours.
_CONNECTION_SET_UP = frozenset(
    {b"HELLO", b"AUTH", b"SELECT", b"CLIENT SETINFO", b"CLIENT MAINT_NOTIFICATIONS"}
)


def _command_name(packed: Any) -> bytes:
    """The command in RESP as redis-py packs it (``*N $len NAME ...``): its name, and for
    CLIENT its subcommand too."""
    chunks = packed if isinstance(packed, list | tuple) else [packed]
    parts = b"".join(bytes(chunk) for chunk in chunks).split(b"\r\n")
    name = parts[2].upper() if len(parts) > 2 else b""
    if name in (b"CLIENT", b"EVALSHA") and len(parts) > 4:
        return name + b" " + parts[4].upper()
    return name


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
async def test_concurrent_sessions_stay_at_one_round_trip_per_call(
    counted_server: PeerServer, monkeypatch: pytest.MonkeyPatch
):
    # No outcome goes on its own while the calls come, however slow the machine: each
    # rides on its session's next admission. (With a short delay, a loaded machine's
    # slow calls let the writer of waiting outcomes run mid-test, and the count would
    # measure the machine.)
    monkeypatch.setattr(redis_sessions, "OUTCOME_DELAY", 3600.0)
    sessions, calls_each = 32, 10
    async with grpc.aio.insecure_channel(counted_server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        opened = [await open_session(stub, f"peer-{n}") for n in range(sessions)]
        # A call on a session of its own first, so that loading the scripts is not counted.
        warm_up = await open_session(stub, "warm-up")
        await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(warm_up.session_id, 1))

        async def calls(session_id: str) -> None:
            for sequence in range(1, calls_each + 1):
                metadata = session_metadata(session_id, sequence)
                await stub.Ping(peer_pb2.PingRequest(), metadata=metadata)

        trips = await round_trips_of(
            asyncio.gather(*(calls(session.session_id) for session in opened))
        )

    # One round trip to admit each call, carrying the outcome of the session's call
    # before; a session's first call moves it to the established index in the same
    # step. Two round trips a call would be 640.
    assert trips == sessions * calls_each


@pytest.mark.parametrize("counted_server", [8], indirect=True)
async def test_outcomes_go_alone_only_when_their_session_falls_silent(
    counted_server: PeerServer, monkeypatch: pytest.MonkeyPatch
):
    """A session that keeps calling within the delay never has an outcome written on
    its own, however long it goes on: the writer takes only outcomes that waited."""
    monkeypatch.setattr(redis_sessions, "OUTCOME_DELAY", 0.3)
    async with grpc.aio.insecure_channel(counted_server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 1))
        await asyncio.sleep(0.6)  # its outcome written, loading the script that writes them

        async def steady_pings() -> None:
            for sequence in range(2, 32):  # 30 calls over about 1.5 s: 5 delays
                await stub.Ping(
                    peer_pb2.PingRequest(), metadata=session_metadata(session_id, sequence)
                )
                await asyncio.sleep(0.05)

        assert await round_trips_of(steady_pings()) == 30
        assert await round_trips_of(asyncio.sleep(0.6)) == 1  # the last, once silent


@pytest.mark.parametrize("counted_server", [8], indirect=True)
async def test_a_refused_sequence_costs_one_round_trip(counted_server: PeerServer):
    """The refusal, the count of sequence errors and the window width the error reports
    all come from the admission itself."""
    async with grpc.aio.insecure_channel(counted_server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 1))
        before = (await counted_server.manager.get_session_stats()).sequence_errors_total

        async def gap() -> None:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 9))
            assert refused.value.code() is grpc.StatusCode.ABORTED

        assert await round_trips_of(gap()) == 1
        stats = await counted_server.manager.get_session_stats()
        assert stats.sequence_errors_total == before + 1


@pytest.fixture
async def counted_task_server(server_config: ServerConfig) -> AsyncIterator[PeerServer]:
    client = redis.asyncio.Redis.from_url(shared_redis().url, connection_class=CountingConnection)
    prefix = f"trips-{uuid.uuid4().hex[:8]}"
    # A lease of an hour: no renewal tick runs while the calls come.
    config = replace(server_config, sweep_interval=3600, store_check_interval=3600, task_lease=3600)
    server = PeerServer(
        config,
        store=RedisSessionStore(client, key_prefix=prefix, retry_cache_size=8),
        task_store=RedisTaskStore(client, key_prefix=prefix),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def test_a_task_that_finishes_within_its_call_costs_three_round_trips(
    counted_task_server: PeerServer, monkeypatch: pytest.MonkeyPatch
):
    """Admit the call; store, queue and claim the task; record its end, fenced. Nothing
    else: the idle runner is not woken by a task its own replica claimed as it queued it."""
    monkeypatch.setattr(redis_sessions, "OUTCOME_DELAY", 3600.0)
    request = peer_pb2.DelegateTaskRequest(task_type="echo")
    async with grpc.aio.insecure_channel(counted_task_server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        # The first call loads the scripts and indexes the session as established.
        await stub.DelegateTask(request, metadata=session_metadata(session_id, 1))

        async def delegations() -> None:
            for sequence in range(2, 12):
                response = await stub.DelegateTask(
                    request, metadata=session_metadata(session_id, sequence)
                )
                assert response.task.state == peer_pb2.TASK_STATE_COMPLETED

        CountingConnection.sent.clear()
        trips = await round_trips_of(delegations())

    assert trips == 3 * 10, CountingConnection.sent
