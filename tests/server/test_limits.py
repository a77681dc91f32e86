"""Limits at their edges: sessions, handshake rates, request and metadata sizes, lifetime.

An over-limit call gets RESOURCE_EXHAUSTED (or, for the lifetime, an expired
session), the server stays healthy, and the sessions already open go on.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.clock import ManualClock
from peer_grpc.core.errors import (
    HandshakeRateLimited,
    PeerError,
    SessionExpired,
    SessionLimitReached,
)
from peer_grpc.server import PeerServer, ServerConfig
from peer_grpc.wire.rich_status import error_from_rpc_error
from tests.conftest import StoreFactory, TaskStoreFactory, open_session, session_metadata
from tests.rpc_details import details_of

Stub = peer_pb2_grpc.PeerServiceStub

MAX_SESSIONS = 20
MAX_REQUEST = 2048
MAX_METADATA = 4096
LIFETIME = 100.0


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return replace(
        server_config,
        max_sessions=MAX_SESSIONS,
        max_request_bytes=MAX_REQUEST,
        max_metadata_bytes=MAX_METADATA,
        max_session_lifetime=LIFETIME,
    )


async def ping(stub: Stub, session_id: str, sequence: int, payload: bytes = b"") -> None:
    await stub.Ping(
        peer_pb2.PingRequest(payload=payload), metadata=session_metadata(session_id, sequence)
    )


async def serving(channel: grpc.aio.Channel) -> bool:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


# --- maximum sessions --------------------------------------------------------------------------


async def test_a_handshake_beyond_the_maximum_sessions_is_resource_exhausted(
    stub: Stub, server: PeerServer
):
    opened = [await open_session(stub, f"peer-{i}") for i in range(MAX_SESSIONS)]
    before = [await server.manager.get_session(o.session_id) for o in opened]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await open_session(stub, "one-too-many")

    found = details_of(caught.value)
    assert found.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert found.reason == SessionLimitReached.reason
    assert str(MAX_SESSIONS) in found.message
    assert [await server.manager.get_session(o.session_id) for o in opened] == before
    await ping(stub, opened[0].session_id, 1)


async def test_a_peer_at_the_limit_may_still_replace_its_own_session(
    stub: Stub, server: PeerServer
):
    for i in range(MAX_SESSIONS):
        await open_session(stub, f"peer-{i}")

    again = await open_session(stub, "peer-0")

    await ping(stub, again.session_id, 1)
    stats = await server.manager.get_session_stats()
    assert stats.handshaking + stats.established == MAX_SESSIONS


async def test_a_flood_of_ten_times_the_maximum_holds_the_limit_and_spares_existing_sessions(
    stub: Stub, server: PeerServer, backend: str
):
    existing = await open_session(stub, "existing")
    await ping(stub, existing.session_id, 1)

    # As many in flight as one connection carries at once (max_concurrent_streams).
    in_flight = asyncio.Semaphore(50)

    async def attempt(index: int) -> grpc.StatusCode:
        async with in_flight:
            try:
                await open_session(stub, f"flood-{index}")
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    codes = await asyncio.gather(*(attempt(i) for i in range(10 * MAX_SESSIONS)))

    admitted = codes.count(grpc.StatusCode.OK)
    if backend == "redis-cluster":
        # No one step sees every shard: handshakes racing for the last places may all
        # be refused, but they never pass the limit together.
        assert 0 < admitted <= MAX_SESSIONS - 1
    else:
        assert admitted == MAX_SESSIONS - 1
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    stats = await server.manager.get_session_stats()
    # Bounded: nothing but the live sessions was kept, and no refused handshake left a trace.
    assert stats.handshaking + stats.established == admitted + 1
    assert (stats.created_total, stats.terminated, stats.expired) == (admitted + 1, 0, 0)
    await ping(stub, existing.session_id, 2)


# --- handshake rates ---------------------------------------------------------------------------


async def refusal(stub: Stub, peer_id: str) -> PeerError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await open_session(stub, peer_id)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return error_from_rpc_error(caught.value)


@pytest.mark.parametrize(
    ("limits", "peer_ids", "scope"),
    [
        pytest.param(
            {"peer_handshake_rate": 1.0, "peer_handshake_burst": 2},
            ["peer-a", "peer-a", "peer-a"],
            "peer",
            id="one-peer-id-too-often",
        ),
        pytest.param(
            {"client_handshake_rate": 1.0, "client_handshake_burst": 2},
            ["peer-a", "peer-b", "peer-c"],
            "client",
            id="one-client-too-often",
        ),
    ],
)
async def test_handshakes_beyond_the_rate_are_refused_with_a_retry_delay(
    server_config: ServerConfig,
    store_factory: StoreFactory,
    task_store_factory: TaskStoreFactory,
    clock: ManualClock,
    limits: dict[str, Any],
    peer_ids: list[str],
    scope: str,
):
    config = replace(server_config, **limits)
    store = store_factory()
    async with (
        PeerServer(config, store=store, task_store=task_store_factory(), clock=clock) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        *allowed, refused = peer_ids
        opened = [await open_session(stub, peer_id) for peer_id in allowed]
        before = await server.manager.get_session(opened[-1].session_id)

        error = await refusal(stub, refused)

        assert isinstance(error, HandshakeRateLimited)
        assert error.scope == scope
        assert error.retry_after == pytest.approx(1.0)
        assert await server.manager.get_session(opened[-1].session_id) == before
        clock.advance(1.0)
        await open_session(stub, refused)


# --- request size ------------------------------------------------------------------------------


def ping_of_size(size: int) -> peer_pb2.PingRequest:
    """A PingRequest whose encoding is exactly ``size`` bytes."""
    request = peer_pb2.PingRequest(payload=b"x" * size)
    while request.ByteSize() > size:
        request.payload = request.payload[:-1]
    assert request.ByteSize() == size
    return request


async def test_a_request_of_exactly_the_maximum_size_is_served_and_one_byte_more_is_not(
    stub: Stub, channel: grpc.aio.Channel, server: PeerServer
):
    opened = await open_session(stub)
    exact = ping_of_size(MAX_REQUEST)
    await stub.Ping(exact, metadata=session_metadata(opened.session_id, 1))
    before = await server.manager.get_session(opened.session_id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Ping(
            ping_of_size(MAX_REQUEST + 1), metadata=session_metadata(opened.session_id, 2)
        )

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await server.manager.get_session(opened.session_id) == before
    assert await serving(channel)
    await stub.Ping(exact, metadata=session_metadata(opened.session_id, 2))


# --- metadata size -----------------------------------------------------------------------------


async def padded_call(stub: Stub, session_id: str, sequence: int, pad: int) -> grpc.StatusCode:
    try:
        await stub.Ping(
            peer_pb2.PingRequest(),
            metadata=(*session_metadata(session_id, sequence), ("x-pad", "p" * pad)),
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_metadata_just_under_the_limit_is_served_and_just_over_is_resource_exhausted(
    stub: Stub, channel: grpc.aio.Channel, server: PeerServer
):
    opened = await open_session(stub)
    sequence = 1

    async def fits(pad: int) -> bool:
        nonlocal sequence
        code = await padded_call(stub, opened.session_id, sequence, pad)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
        if code is grpc.StatusCode.OK:
            sequence += 1
        return code is grpc.StatusCode.OK

    # The largest padding that fits: HTTP/2 counts every header as name + value + 32.
    low, high = 0, MAX_METADATA
    assert await fits(low)
    assert not await fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if await fits(middle) else (low, middle)
    before = await server.manager.get_session(opened.session_id)

    assert not await fits(low + 1)  # one byte over the limit
    assert await server.manager.get_session(opened.session_id) == before
    assert await fits(low)  # and just under it, again
    # What the rest of the call's headers (gRPC's own and the session's) took.
    overhead = MAX_METADATA - low - len("x-pad") - 32
    assert 100 < overhead < 1024
    assert await serving(channel)


# --- absolute lifetime -------------------------------------------------------------------------


async def test_a_session_ends_at_its_maximum_lifetime_however_active(
    stub: Stub, server: PeerServer, clock: ManualClock
):
    opened = await open_session(stub)
    created = clock.now()
    sequence = 1
    # Heartbeats every 20 s keep a 30 s idle timeout at bay, up to the lifetime.
    while clock.now() - created < LIFETIME - 15:
        await stub.Heartbeat(
            peer_pb2.HeartbeatRequest(), metadata=session_metadata(opened.session_id, sequence)
        )
        sequence += 1
        clock.advance(20)
    session = await server.manager.get_session(opened.session_id)
    assert session is not None
    assert session.expires_at == created + LIFETIME  # the last heartbeat could not push past it

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ping(stub, opened.session_id, sequence)
    found = details_of(caught.value)
    assert found.code is grpc.StatusCode.UNAUTHENTICATED
    assert found.reason == SessionExpired.reason
    assert re.search("maximum lifetime", found.message)


# --- concurrent streams per connection -----------------------------------------------------------


async def test_calls_beyond_the_concurrent_streams_of_a_connection_wait_for_a_free_one(
    server_config: ServerConfig, store_factory: StoreFactory, task_store_factory: TaskStoreFactory
):
    config = replace(server_config, max_concurrent_streams=2)
    async with (
        PeerServer(config, store=store_factory(), task_store=task_store_factory()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        assert await serving(channel)  # connected: the client knows the limit now
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(2)]
        for watch in watches:
            await watch.read()  # both streams are open and held by the server

        third = asyncio.ensure_future(serving(channel))
        done, _ = await asyncio.wait({third}, timeout=0.5)
        assert not done  # queued behind the two open streams, not refused

        watches[0].cancel()
        assert await asyncio.wait_for(third, 5)
        watches[1].cancel()
