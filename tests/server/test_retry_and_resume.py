"""Real networks: resends, out-of-order arrival, lost responses and resumption, end to end.

Servers here run with test interceptors in front of the PeerService's own: one
delays calls so that they arrive out of order, another fails the connection after
the servicer ran, as a lost response does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import grpc.aio
import pytest

from peer_grpc import (
    ManualClock,
    PeerClient,
    PeerServer,
    ServerConfig,
    SessionState,
    SessionStore,
    TaskRegistry,
    default_registry,
)
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.metadata import SEQUENCE_KEY
from peer_grpc.core.sequence import MAX_SEQUENCE, SequenceMode
from tests.conftest import StoreFactory, TaskStoreFactory, open_session, session_metadata
from tests.rpc_details import details_of

Stub = peer_pb2_grpc.PeerServiceStub


def _sequence_of(details: grpc.HandlerCallDetails) -> int:
    for key, value in details.invocation_metadata or ():
        if key == SEQUENCE_KEY and value.isdigit():
            return int(value)
    return 0


class DelayCalls(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Holds each sequenced call for a random moment so calls overtake each other."""

    def __init__(self, most: float = 0.05) -> None:
        self._most = most

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if _sequence_of(details):
            await asyncio.sleep(random.uniform(0, self._most))
        return await continuation(details)


@dataclass
class LoseFirstResponse(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs the call, then fails it as a broken connection would (or as a stopping
    server's gRPC core does: CANCELLED): once per sequence."""

    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    lost: set[int] = field(default_factory=set)

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        sequence = _sequence_of(details)
        if handler is None or handler.unary_unary is None or not sequence:
            return handler
        inner = handler.unary_unary
        lost = self.lost

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            response = await inner(request, context)
            if sequence not in lost:
                lost.add(sequence)
                await context.abort(self.code, "connection reset (test)")
            return response

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class Counter:
    """A task handler that counts its runs, optionally waiting for a go-ahead."""

    runs: int = 0
    gate: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.runs += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return {"run": self.runs}


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def tasks(counter: Counter) -> TaskRegistry:
    registry = default_registry()
    registry.register("count", counter)
    return registry


ServerFactory = Callable[..., Awaitable[PeerServer]]


@pytest.fixture
async def start_server(
    store_factory: StoreFactory,
    task_store_factory: TaskStoreFactory,
    tasks: TaskRegistry,
    clock: ManualClock,
) -> AsyncIterator[ServerFactory]:
    """Starts servers with a given mode and test interceptors; stops them all afterwards."""
    started: list[PeerServer] = []

    async def start(
        mode: SequenceMode = SequenceMode.STRICT,
        *,
        outer: tuple[Any, ...] = (),
        store: SessionStore | None = None,
        port: int = 0,
        use_clock: bool = True,
    ) -> PeerServer:
        config = ServerConfig(
            host="127.0.0.1",
            port=port,
            sequence_mode=mode,
            replay_window=64,
            shutdown_grace=0,
            # The tests here are of sequences: no call may wait on a task limit.
            max_tasks_per_session=64,
        )
        server = PeerServer(
            config,
            store=store if store is not None else store_factory(),
            task_store=task_store_factory(),
            tasks=tasks,
            clock=clock if use_clock else None,
            outer_interceptors=outer,
        )
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop(grace=0)


def count_request() -> peer_pb2.DelegateTaskRequest:
    return peer_pb2.DelegateTaskRequest(task_type="count")


# --- Retry is not replay -------------------------------------------------------------------


async def test_a_resend_gets_the_original_response_and_runs_nothing(
    start_server: ServerFactory, counter: Counter
):
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        metadata = session_metadata(session_id, 1)
        first = stub.DelegateTask(count_request(), metadata=metadata)
        again = stub.DelegateTask(count_request(), metadata=metadata)

        assert await again == await first
        assert counter.runs == 1
        assert dict(await again.trailing_metadata())[SEQUENCE_KEY] == "1"


async def test_a_resend_while_the_original_runs_waits_for_its_outcome(
    start_server: ServerFactory, counter: Counter
):
    counter.gate = asyncio.Event()
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        metadata = session_metadata(session_id, 1)
        original = asyncio.ensure_future(stub.DelegateTask(count_request(), metadata=metadata))
        await counter.started.wait()
        resend = asyncio.ensure_future(stub.DelegateTask(count_request(), metadata=metadata))
        await asyncio.sleep(0.05)
        assert not resend.done()

        counter.gate.set()

        assert await resend == await original
        assert counter.runs == 1


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(peer_pb2.DelegateTaskRequest(task_type="echo"), id="different-bytes"),
        pytest.param(peer_pb2.PingRequest(), id="different-method"),
    ],
)
async def test_an_accepted_sequence_with_another_message_is_a_replay(
    start_server: ServerFactory, counter: Counter, other: Any
):
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        await stub.DelegateTask(count_request(), metadata=session_metadata(session_id, 1))
        method = stub.Ping if isinstance(other, peer_pb2.PingRequest) else stub.DelegateTask

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(other, metadata=session_metadata(session_id, 1))
        details = details_of(caught.value)
        assert details.code is grpc.StatusCode.ABORTED
        assert details.reason == "SEQUENCE_ERROR"
        assert counter.runs == 1


async def test_a_resent_terminate_gets_its_original_answer(start_server: ServerFactory):
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub)).session_id
        metadata = session_metadata(session_id, 1)
        first = await stub.Terminate(peer_pb2.TerminateRequest(), metadata=metadata)
        again = await stub.Terminate(peer_pb2.TerminateRequest(), metadata=metadata)
        assert again == first


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(grpc.StatusCode.UNAVAILABLE, id="connection-lost"),
        # What a stopping server's gRPC core answers calls it never handed out.
        pytest.param(grpc.StatusCode.CANCELLED, id="cancelled-by-the-server"),
    ],
)
async def test_a_lost_response_is_resent_and_the_call_runs_exactly_once(
    start_server: ServerFactory, counter: Counter, code: grpc.StatusCode
):
    lose = LoseFirstResponse(code)
    server = await start_server(outer=(lose,))
    async with PeerClient(server.address, "unlucky", heartbeat=False, backoff=0.01) as client:
        task = await client.delegate_task("count")
        assert lose.lost == {1}

    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    assert dict(task.result) == {"run": 1.0}
    assert counter.runs == 1


# --- Out-of-order arrival ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(SequenceMode.WINDOW, id="window"),
        pytest.param(SequenceMode.STRICT, id="strict"),
    ],
)
async def test_32_concurrent_callers_on_one_session_all_succeed_despite_delays(
    start_server: ServerFactory, counter: Counter, mode: SequenceMode
):
    server = await start_server(mode, outer=(DelayCalls(),))
    async with PeerClient(server.address, "busy", heartbeat=False) as client:
        tasks = await asyncio.gather(*(client.delegate_task("count") for _ in range(32)))
        session_id = client.session_id

    assert all(t.state == peer_pb2.TASK_STATE_COMPLETED for t in tasks)
    assert counter.runs == 32
    assert session_id is not None
    session = await server.manager.get_session(session_id)
    assert session is not None
    assert session.highest_accepted == 33  # 32 calls, then Terminate on close
    assert (await server.manager.get_session_stats()).sequence_errors_total == 0


async def test_window_mode_accepts_calls_out_of_order_once_each(start_server: ServerFactory):
    server = await start_server(SequenceMode.WINDOW)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        shook = await open_session(stub)
        assert shook.sequence_mode == peer_pb2.SEQUENCE_MODE_WINDOW
        assert shook.replay_window == 64
        for sequence in (3, 1, 2, 64):
            await stub.Ping(
                peer_pb2.PingRequest(), metadata=session_metadata(shook.session_id, sequence)
            )
        for sequence, outside in ((2, False), (0, True)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Ping(
                    peer_pb2.PingRequest(payload=b"x"),
                    metadata=session_metadata(shook.session_id, sequence),
                )
            typed = details_of(caught.value).sequence_error
            assert typed is not None
            assert typed.kind == peer_pb2.SEQUENCE_ERROR_KIND_REPLAY
            assert typed.outside_window is outside
            assert typed.replay_window == 64
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Ping(
                peer_pb2.PingRequest(), metadata=session_metadata(shook.session_id, 129)
            )
        gap = details_of(caught.value).sequence_error
        assert gap is not None
        assert gap.kind == peer_pb2.SEQUENCE_ERROR_KIND_GAP


# --- Resumption ----------------------------------------------------------------------------


async def test_a_recreated_client_resumes_its_session_from_the_saved_ticket(
    start_server: ServerFactory,
):
    server = await start_server()
    first = PeerClient(server.address, "restarting", heartbeat=False)
    await first.connect()
    for _ in range(3):
        await first.ping()
    ticket = first.ticket
    assert ticket is not None
    await first.close(terminate=False)  # the process "restarts" without ending the session

    async with PeerClient(server.address, "restarting", heartbeat=False, ticket=ticket) as second:
        assert second.handshake_response is not None
        assert second.handshake_response.resumed
        assert second.session_id == ticket.session_id
        assert second.next_sequence == 4
        await second.ping()
        session = await server.manager.get_session(ticket.session_id)
        assert session is not None
        assert session.expected_sequence == 5


@pytest.mark.parametrize(
    ("token", "peer_id"),
    [
        pytest.param("wrong-token", "peer-a", id="wrong-token"),
        pytest.param("", "peer-a", id="missing-token"),
        pytest.param(None, "peer-b", id="another-peers-session"),
    ],
)
async def test_resuming_without_the_right_token_is_unauthenticated_and_changes_nothing(
    start_server: ServerFactory, token: str | None, peer_id: str
):
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        shook = await open_session(stub, "peer-a")
        before = await server.manager.get_session(shook.session_id)
        request = peer_pb2.HandshakeRequest(peer_id=peer_id, protocol_versions=["1.0"])
        request.resume.session_id = shook.session_id
        request.resume.session_token = shook.session_token if token is None else token

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Handshake(request)

        details = details_of(caught.value)
        assert details.code is grpc.StatusCode.UNAUTHENTICATED
        assert details.reason == "SESSION_TOKEN_INVALID"
        assert await server.manager.get_session(shook.session_id) == before


@pytest.mark.parametrize("ending", ["terminated", "expired"])
async def test_resuming_an_ended_session_is_refused_and_the_client_starts_afresh(
    start_server: ServerFactory, clock: ManualClock, ending: str
):
    server = await start_server()
    client = PeerClient(server.address, "late", heartbeat=False)
    await client.connect()
    ticket = client.ticket
    assert ticket is not None
    if ending == "terminated":
        await client.close()
    else:
        await client.close(terminate=False)
        clock.advance(server.config.idle_timeout + 1)

    async with grpc.aio.insecure_channel(server.address) as channel:
        request = peer_pb2.HandshakeRequest(peer_id="late", protocol_versions=["1.0"])
        request.resume.session_id = ticket.session_id
        request.resume.session_token = ticket.session_token
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await peer_pb2_grpc.PeerServiceStub(channel).Handshake(request)
        assert details_of(caught.value).reason == f"SESSION_{ending.upper()}"

    async with PeerClient(server.address, "late", heartbeat=False, ticket=ticket) as fresh:
        assert fresh.session_id != ticket.session_id
        await fresh.ping()


async def test_the_client_resumes_after_the_server_comes_back(
    start_server: ServerFactory, store_factory: StoreFactory, counter: Counter
):
    store = store_factory()
    server = await start_server(store=store)
    port = server.port
    async with PeerClient(
        server.address, "patient", heartbeat=False, attempts=2, backoff=0.01, timeout=2
    ) as client:
        await client.delegate_task("count")
        await server.stop(grace=0)
        with pytest.raises(Exception, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"):
            await client.delegate_task("count")

        await start_server(store=store, port=port)  # same sessions, new process
        task = await client.delegate_task("count")

        assert task.state == peer_pb2.TASK_STATE_COMPLETED
        assert client.handshake_response is not None
        assert client.handshake_response.resumed
    assert counter.runs == 2


# --- Sequences never wrap ------------------------------------------------------------------


async def test_a_session_that_used_the_last_sequence_must_be_replaced(
    start_server: ServerFactory,
):
    server = await start_server()
    session = await server.manager.create_session("veteran", "1.0")
    # A session one call short of its last number, without making 2^64 calls first.
    last = replace(
        session,
        session_id=session.session_id + "0",
        state=SessionState.ESTABLISHED,
        highest_accepted=MAX_SEQUENCE - 1,
    )
    await server.manager.store.create(last)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        await stub.Ping(
            peer_pb2.PingRequest(), metadata=session_metadata(last.session_id, MAX_SEQUENCE)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Ping(
                peer_pb2.PingRequest(payload=b"more"),
                metadata=session_metadata(last.session_id, MAX_SEQUENCE),
            )
        details = details_of(caught.value)
        assert details.code is grpc.StatusCode.FAILED_PRECONDITION
        assert details.reason == "SEQUENCE_EXHAUSTED"
        assert "new session" in details.message
