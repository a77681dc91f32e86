"""PeerClient: numbering, typed errors, recovery and heartbeats against a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from peer_grpc import (
    InvalidArgument,
    ManualClock,
    NoCommonProtocolVersion,
    PeerClient,
    PeerServer,
    RemoteError,
    SequenceError,
    SequenceErrorKind,
    ServerConfig,
    SessionState,
    SessionTerminated,
    default_registry,
)
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.errors import ShuttingDown
from peer_grpc.wire.rich_status import to_grpc_status
from tests.conftest import session_metadata


@pytest.fixture
async def client(server: PeerServer):
    async with PeerClient(server.address, "client-a", heartbeat=False) as client:
        yield client


async def test_client_numbers_its_calls_from_one(client: PeerClient, server: PeerServer):
    assert client.next_sequence == 1
    await client.ping()
    await client.status()
    assert client.next_sequence == 3
    assert client.server_sequence == 2
    assert client.session_id is not None
    session = await server.manager.get_session(client.session_id)
    assert session is not None
    assert session.expected_sequence == 3


async def test_concurrent_callers_are_sent_one_at_a_time_in_order(
    client: PeerClient, server: PeerServer
):
    results = await asyncio.gather(*(client.ping(str(i).encode()) for i in range(50)))
    assert [r.payload for r in results] == [str(i).encode() for i in range(50)]
    assert client.session_id is not None
    session = await server.manager.get_session(client.session_id)
    assert session is not None
    assert session.expected_sequence == 51
    assert (await server.manager.get_session_stats()).sequence_errors_total == 0


async def spend_behind_its_back(
    client: PeerClient, stub: peer_pb2_grpc.PeerServiceStub, sequence: int = 1
) -> None:
    """Someone else spends ``sequence`` on the client's session with another message."""
    assert client.session_id is not None
    other = peer_pb2.PingRequest(payload=b"not the client's")
    await stub.Ping(other, metadata=session_metadata(client.session_id, sequence))


async def test_sequence_error_is_raised_typed_when_not_resynchronising(
    server: PeerServer, stub: peer_pb2_grpc.PeerServiceStub
):
    async with PeerClient(server.address, "strictest", heartbeat=False, resync=False) as client:
        await spend_behind_its_back(client, stub)

        with pytest.raises(SequenceError) as caught:
            await client.ping()
        assert caught.value.kind is SequenceErrorKind.REPLAY
        assert caught.value.expected_sequence == 2
        assert caught.value.received_sequence == 1
        assert caught.value.session_id == client.session_id

        assert client.next_sequence == 2  # it followed the server
        await client.ping()


async def test_client_renumbers_a_call_refused_as_out_of_order_and_sends_it_once(
    client: PeerClient, stub: peer_pb2_grpc.PeerServiceStub, server: PeerServer
):
    await spend_behind_its_back(client, stub)

    response = await client.ping(b"mine")

    assert response.payload == b"mine"
    assert client.session_id is not None
    session = await server.manager.get_session(client.session_id)
    assert session is not None
    assert session.expected_sequence == 3
    assert client.next_sequence == 3


async def test_invalid_argument_is_raised_with_its_violations(client: PeerClient):
    with pytest.raises(InvalidArgument) as caught:
        await client.delegate_task("no-such-task")
    assert [v.field for v in caught.value.violations] == ["task_type"]
    assert client.next_sequence == 1  # the rejected call spent no number
    await client.ping()


async def test_delegate_task_returns_the_finished_task(client: PeerClient):
    task = await client.delegate_task("echo", {"greeting": "hi"})
    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    assert dict(task.result) == {"greeting": "hi"}


async def test_no_common_version_is_raised_on_connect(server: PeerServer):
    client = PeerClient(server.address, "future", protocol_versions=["9.0"], heartbeat=False)
    with pytest.raises(NoCommonProtocolVersion) as caught:
        await client.__aenter__()
    assert caught.value.supported == ("1.0",)


async def test_client_handshakes_again_after_its_session_expired(
    client: PeerClient, server: PeerServer, clock: ManualClock
):
    old_session = client.session_id
    await client.ping()
    clock.advance(server.config.idle_timeout + 1)

    await client.ping()

    assert client.session_id != old_session
    assert client.next_sequence == 2
    assert old_session is not None
    old = await server.manager.get_session(old_session)
    assert old is not None
    assert old.state is SessionState.EXPIRED


async def test_client_handshakes_again_after_the_server_forgot_its_session(
    server: PeerServer, clock: ManualClock
):
    async with PeerClient(server.address, "client-b", heartbeat=False) as client:
        old_session = client.session_id
        clock.advance(server.config.idle_timeout + 1)
        await server.manager.cleanup_expired_sessions()
        clock.advance(3600)  # past the retention of ended sessions
        await server.manager.cleanup_expired_sessions()
        assert old_session is not None
        assert await server.manager.get_session(old_session) is None

        await client.ping()
        assert client.session_id != old_session


async def test_client_does_not_fight_a_newer_handshake_of_its_peer(
    client: PeerClient, server: PeerServer
):
    async with PeerClient(server.address, "client-a", heartbeat=False) as newer:
        with pytest.raises(SessionTerminated):
            await client.ping()
        await newer.ping()


async def test_close_terminates_the_session(server: PeerServer):
    client = PeerClient(server.address, "closer", heartbeat=False)
    await client.connect()
    session_id = client.session_id
    await client.close()
    await client.close()
    assert session_id is not None
    session = await server.manager.get_session(session_id)
    assert session is not None
    assert session.state is SessionState.TERMINATED


async def test_unreachable_server_is_a_remote_error_with_its_code():
    client = PeerClient("127.0.0.1:1", "lonely", heartbeat=False, timeout=2, attempts=1)
    with pytest.raises(RemoteError) as caught:
        await client.connect()
    assert caught.value.code == "UNAVAILABLE"
    await client.close()


async def test_background_heartbeats_keep_an_idle_session_alive():
    config = ServerConfig(
        host="127.0.0.1", port=0, idle_timeout=0.6, heartbeat_interval=0.15, sweep_interval=0.1
    )
    async with (
        PeerServer(config) as server,
        PeerClient(server.address, "sleepy") as client,
    ):
        session_id = client.session_id
        await asyncio.sleep(1.5)  # well past the idle timeout, with the sweeper running
        assert client.session_id == session_id
        assert session_id is not None
        session = await server.manager.get_session(session_id)
        assert session is not None
        assert session.state is SessionState.ESTABLISHED
        assert session.expected_sequence >= 4


class SlowHandshakes(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Holds every Handshake a moment, so calls queue up while the client opens a session."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method.endswith("/Handshake"):
            await asyncio.sleep(0.2)
        return await continuation(details)


async def test_identical_calls_around_a_new_handshake_each_run_once(clock: ManualClock):
    """Calls queued while the client opens a new session never share a number."""
    runs: list[int] = []
    tasks = default_registry()

    @tasks.task("count-runs")
    async def count_runs(payload: dict[str, object]) -> dict[str, object]:
        runs.append(1)
        await asyncio.sleep(0.05)
        return {"n": len(runs)}

    config = ServerConfig(host="127.0.0.1", port=0, idle_timeout=30)
    server = PeerServer(config, tasks=tasks, clock=clock, outer_interceptors=[SlowHandshakes()])
    async with server, PeerClient(server.address, "twins", heartbeat=False) as client:
        await client.ping()
        clock.advance(31)  # the next call finds its session expired and handshakes again
        first = asyncio.create_task(client.delegate_task("count-runs", {"same": 1}))
        await asyncio.sleep(0.1)  # the first call is now waiting for its new handshake
        second = asyncio.create_task(client.delegate_task("count-runs", {"same": 1}))
        a, b = await asyncio.gather(first, second)
    assert a.task_id != b.task_id
    assert len(runs) == 2


async def test_concurrent_first_calls_open_one_session(server: PeerServer):
    client = PeerClient(server.address, "eager", heartbeat=False)
    try:
        await asyncio.gather(*(client.ping() for _ in range(5)))
    finally:
        await client.close()
    assert (await server.manager.get_session_stats()).created_total == 1


async def test_terminate_stops_heartbeats_instead_of_reopening_a_session():
    config = ServerConfig(host="127.0.0.1", port=0, idle_timeout=0.6, heartbeat_interval=0.1)
    async with PeerServer(config) as server:
        client = PeerClient(server.address, "quitter")
        await client.connect()
        await client.terminate()
        await asyncio.sleep(0.4)  # several heartbeat intervals
        assert (await server.manager.get_session_stats()).created_total == 1
        await client.close()


class RefuseFirstHandshakes(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers the first ``count`` Handshakes as a draining replica does: UNAVAILABLE
    with the rich status of SHUTTING_DOWN."""

    def __init__(self, count: int) -> None:
        self.left = count

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if not details.method.endswith("/Handshake") or self.left == 0:
            return handler
        self.left -= 1

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort_with_status(to_grpc_status(ShuttingDown("draining (test)")))

        return grpc.unary_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@pytest.mark.parametrize(
    ("refused", "connects"),
    [
        pytest.param(2, True, id="resent-until-answered"),
        pytest.param(4, False, id="every-attempt-refused"),
    ],
)
async def test_a_handshake_refused_shutting_down_is_sent_again(refused: int, connects: bool):
    refuser = RefuseFirstHandshakes(refused)
    config = ServerConfig(host="127.0.0.1", port=0)
    async with PeerServer(config, outer_interceptors=[refuser]) as server:
        client = PeerClient(server.address, "patient", heartbeat=False, backoff=0.01, attempts=4)
        try:
            if connects:
                await client.connect()
                assert client.session_id is not None
            else:
                with pytest.raises(ShuttingDown):  # the server's own reason, not "unreachable"
                    await client.connect()
        finally:
            await client.close()
    assert refuser.left == 0
