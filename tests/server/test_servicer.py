"""The servicer alone, driven by grpcio-testing: no network, no interceptors.

grpc_testing calls servicers synchronously from its own threads, while ours are
coroutines on an event loop. The bridge below runs each call on a loop in a
background thread, binds the session the interceptors would have admitted, and
turns protocol errors into the status the error interceptor would send.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import grpc_testing
import pytest
from google.protobuf.message import Message

from peer_grpc import ManualClock, PeerError, Session, SessionManager, SessionState, TaskRegistry
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.server.call_context import bind_session, unbind_session
from peer_grpc.server.servicer import PeerServicer
from peer_grpc.tasks import default_registry
from peer_grpc.tasks.manager import TaskManager
from peer_grpc.wire.contract import SERVICE_DESCRIPTOR
from peer_grpc.wire.rich_status import status_code_of
from tests.conftest import admit


class LoopThread:
    """An event loop running in a thread, for code that must be called synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class PlaintextContext:
    """grpc_testing's context as a plaintext loopback call's: it has no auth context."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class SyncBridge:
    """Presents an async servicer to grpc_testing, with ``session`` as the admitted one."""

    def __init__(self, servicer: PeerServicer, loop: LoopThread) -> None:
        self._servicer = servicer
        self._loop = loop
        self.session: Session | None = None

    def __getattr__(self, name: str) -> Callable[[Message, Any], Message]:
        method = getattr(self._servicer, name)

        async def call(request: Message, context: Any) -> Message:
            token = bind_session(self.session)
            try:
                response: Message = await method(request, PlaintextContext(context))
                return response
            finally:
                unbind_session(token)

        def sync_call(request: Message, context: Any) -> Message:
            try:
                response: Message = self._loop.run(call(request, context))
                return response
            except PeerError as error:
                context.abort(status_code_of(error), error.message)
                raise  # unreachable: abort raises

        return sync_call


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def tasks() -> TaskRegistry:
    registry = default_registry()

    @registry.task("explode")
    def explode(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    @registry.task("not-json")
    async def not_json(payload: dict[str, Any]) -> dict[str, Any]:
        return {"value": object()}

    return registry


@pytest.fixture
def manager(clock: ManualClock) -> SessionManager:
    return SessionManager(clock=clock, idle_timeout=30)


@pytest.fixture
def bridge(manager: SessionManager, tasks: TaskRegistry, loop: LoopThread) -> SyncBridge:
    servicer = PeerServicer(
        manager,
        TaskManager(tasks, clock=manager.clock),
        server_peer_id="server-1",
        heartbeat_interval=10,
        supported_versions=("2.0", "1.0"),
    )
    return SyncBridge(servicer, loop)


@pytest.fixture
def test_server(bridge: SyncBridge) -> grpc_testing.Server:
    return grpc_testing.server_from_dictionary(
        {SERVICE_DESCRIPTOR: bridge}, grpc_testing.strict_real_time()
    )


def invoke(server: grpc_testing.Server, method: str, request: Message) -> tuple[Any, Any, str]:
    rpc = server.invoke_unary_unary(SERVICE_DESCRIPTOR.methods_by_name[method], (), request, None)
    response, _trailing, code, details = rpc.termination()
    return response, code, details


@pytest.fixture
def admitted(bridge: SyncBridge, manager: SessionManager, loop: LoopThread) -> Session:
    """A session as the interceptors hand it over after admitting sequence 1."""

    async def open_and_admit() -> Session:
        session = await manager.create_session("peer-a", "1.0", ["tasks"])
        await manager.update_session_state(session.session_id, SessionState.HANDSHAKE_SENT)
        return await admit(manager, session.session_id, 1)

    session: Session = loop.run(open_and_admit())
    bridge.session = session
    return session


def test_handshake_picks_the_servers_most_preferred_common_version(
    test_server: grpc_testing.Server, manager: SessionManager, loop: LoopThread
):
    request = peer_pb2.HandshakeRequest(peer_id="peer-a", protocol_versions=["1.0", "2.0"])
    response, code, _ = invoke(test_server, "Handshake", request)
    assert code is grpc.StatusCode.OK
    assert response.protocol_version == "2.0"
    assert response.server_peer_id == "server-1"
    assert response.heartbeat_interval.seconds == 10
    session = loop.run(manager.get_session(response.session_id))
    assert session.state is SessionState.HANDSHAKE_SENT
    assert session.capabilities == ()


def test_handshake_without_common_version_fails_precondition(test_server: grpc_testing.Server):
    request = peer_pb2.HandshakeRequest(peer_id="peer-a", protocol_versions=["3.0"])
    _, code, details = invoke(test_server, "Handshake", request)
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "2.0, 1.0" in details


def test_heartbeat_reports_the_admitted_sessions_deadline(
    test_server: grpc_testing.Server, admitted: Session
):
    response, code, _ = invoke(test_server, "Heartbeat", peer_pb2.HeartbeatRequest())
    assert code is grpc.StatusCode.OK
    assert response.expires_at.ToNanoseconds() == round(admitted.expires_at * 1e9)


def test_status_reports_the_callers_session(test_server: grpc_testing.Server, admitted: Session):
    response, code, _ = invoke(test_server, "Status", peer_pb2.StatusRequest())
    assert code is grpc.StatusCode.OK
    assert response.session.session_id == admitted.session_id
    assert response.session.expected_sequence == 2
    assert response.session.capabilities == ["tasks"]
    assert response.session_stats.established == 1
    assert list(response.supported_protocol_versions) == ["2.0", "1.0"]


def test_status_without_a_session_reports_only_the_server(test_server: grpc_testing.Server):
    response, code, _ = invoke(test_server, "Status", peer_pb2.StatusRequest())
    assert code is grpc.StatusCode.OK
    assert not response.HasField("session")


def test_ping_echoes_its_payload(test_server: grpc_testing.Server, admitted: Session):
    response, _, _ = invoke(test_server, "Ping", peer_pb2.PingRequest(payload=b"abc"))
    assert response.payload == b"abc"


def test_delegate_runs_the_registered_handler(test_server: grpc_testing.Server, admitted: Session):
    request = peer_pb2.DelegateTaskRequest(task_type="echo")
    request.payload.update({"k": "v"})
    response, code, _ = invoke(test_server, "DelegateTask", request)
    assert code is grpc.StatusCode.OK
    assert response.task.state == peer_pb2.TASK_STATE_COMPLETED
    assert dict(response.task.result) == {"k": "v"}
    assert response.task.owner_peer_id == "peer-a"


def test_delegate_reports_a_failing_handler_without_its_traceback(
    test_server: grpc_testing.Server, admitted: Session
):
    request = peer_pb2.DelegateTaskRequest(task_type="explode")
    response, code, _ = invoke(test_server, "DelegateTask", request)
    assert code is grpc.StatusCode.OK
    assert response.task.state == peer_pb2.TASK_STATE_FAILED
    assert response.task.error.code == "HANDLER_ERROR"
    assert response.task.error.message == "RuntimeError: disk on fire"
    assert "Traceback" not in response.task.error.message


def test_delegate_fails_a_task_whose_result_is_not_json(
    test_server: grpc_testing.Server, admitted: Session
):
    request = peer_pb2.DelegateTaskRequest(task_type="not-json")
    response, _, _ = invoke(test_server, "DelegateTask", request)
    assert response.task.state == peer_pb2.TASK_STATE_FAILED
    assert response.task.error.code == "INVALID_RESULT"


def test_terminate_ends_the_admitted_session(
    test_server: grpc_testing.Server, admitted: Session, manager: SessionManager, loop: LoopThread
):
    response, code, _ = invoke(test_server, "Terminate", peer_pb2.TerminateRequest())
    assert code is grpc.StatusCode.OK
    assert response.state == peer_pb2.SESSION_STATE_TERMINATED
    session = loop.run(manager.get_session(admitted.session_id))
    assert session.state is SessionState.TERMINATED


def test_methods_that_need_a_session_refuse_to_run_without_one(test_server: grpc_testing.Server):
    _, code, _ = invoke(test_server, "Terminate", peer_pb2.TerminateRequest())
    assert code is grpc.StatusCode.UNAUTHENTICATED
