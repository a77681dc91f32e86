"""The PeerService servicer: the RPCs themselves, on an already admitted session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc.aio
from google.protobuf import json_format

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc._version import __version__
from peer_grpc.core.errors import NoCommonProtocolVersion
from peer_grpc.core.identity import PeerIdPolicy
from peer_grpc.core.limits import HandshakeThrottle
from peer_grpc.core.session import Session, SessionState
from peer_grpc.core.task import TaskState
from peer_grpc.server.call_context import (
    answer_if_interrupted,
    current_session,
    current_session_or_none,
)
from peer_grpc.sessions.manager import SessionManager, new_session_token
from peer_grpc.tasks.manager import TaskManager
from peer_grpc.wire.convert import (
    duration,
    seconds,
    sequence_mode,
    session_info,
    session_stats,
    task_message,
    task_type_message,
    timestamp,
)
from peer_grpc.wire.tls import caller_of

__all__ = ["SUPPORTED_PROTOCOL_VERSIONS", "PeerServicer"]

#: Protocol versions this server speaks, most preferred first.
SUPPORTED_PROTOCOL_VERSIONS: tuple[str, ...] = ("1.0",)
#: Capabilities this server announces at the handshake.
SERVER_CAPABILITIES: tuple[str, ...] = ("tasks",)


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    """Implements peer.v1.PeerService.

    Session and sequence checks happen in the interceptors before any method here
    runs; methods read the admitted session with :func:`current_session`.

    Args:
        manager: the session manager.
        tasks: the task manager behind DelegateTask and the other task methods.
        server_peer_id: this server's own peer id.
        heartbeat_interval: how often peers are told to send heartbeats.
        supported_versions: protocol versions spoken, most preferred first.
        peer_ids: which peer ids a client certificate may claim; by default
            only its own identity.
        throttle: how fast handshakes may come; unlimited when omitted.
        max_request_bytes: the largest request the server accepts, which Describe
            tells callers (0: not told).
    """

    def __init__(
        self,
        manager: SessionManager,
        tasks: TaskManager,
        *,
        server_peer_id: str,
        heartbeat_interval: float,
        supported_versions: Sequence[str] = SUPPORTED_PROTOCOL_VERSIONS,
        peer_ids: PeerIdPolicy | None = None,
        throttle: HandshakeThrottle | None = None,
        max_request_bytes: int = 0,
    ) -> None:
        self._manager = manager
        self._tasks = tasks
        self._server_peer_id = server_peer_id
        self._heartbeat_interval = heartbeat_interval
        self._supported_versions = tuple(supported_versions)
        self._started_at = manager.clock.now()
        self._peer_ids = peer_ids if peer_ids is not None else PeerIdPolicy()
        self._throttle = throttle
        self._max_request_bytes = max_request_bytes

    async def Handshake(
        self, request: peer_pb2.HandshakeRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.HandshakeResponse:
        caller = caller_of(context)
        now = self._manager.clock.now()
        if self._throttle is not None:
            await self._throttle.check_client(caller, now)
        self._peer_ids.check_claim(caller.identity, request.peer_id)
        if self._throttle is not None:
            await self._throttle.check_peer(request.peer_id, now)
        version = self._negotiate(request.protocol_versions)
        if request.HasField("resume"):
            return await self._resume(request, version, caller.identity)
        manager = self._manager
        token = new_session_token()
        session = await manager.create_session(
            request.peer_id,
            version,
            request.capabilities,
            session_token=token,
            identity=caller.identity,
        )
        session = await manager.update_session_state(
            session.session_id, SessionState.HANDSHAKE_SENT
        )
        response = self._handshake_response(session)
        response.session_token = token
        return response

    async def _resume(
        self, request: peer_pb2.HandshakeRequest, version: str, identity: str
    ) -> peer_pb2.HandshakeResponse:
        resume = request.resume
        session = await self._manager.resume_session(
            resume.session_id,
            resume.session_token,
            request.peer_id,
            identity,
            last_acknowledged=resume.last_acknowledged,
        )
        if session.protocol_version != version:
            raise NoCommonProtocolVersion(request.protocol_versions, [session.protocol_version])
        response = self._handshake_response(session)
        response.resumed = True
        if session.window:
            snapshot = await self._manager.window_snapshot(session.session_id)
            response.window.highest_accepted = snapshot.highest_accepted
            response.window.accepted = snapshot.accepted
        return response

    def _handshake_response(self, session: Session) -> peer_pb2.HandshakeResponse:
        return peer_pb2.HandshakeResponse(
            session_id=session.session_id,
            protocol_version=session.protocol_version,
            next_sequence=session.expected_sequence,
            heartbeat_interval=duration(self._heartbeat_interval),
            idle_timeout=duration(self._manager.idle_timeout),
            server_peer_id=self._server_peer_id,
            server_capabilities=SERVER_CAPABILITIES,
            expires_at=timestamp(session.expires_at),
            sequence_mode=sequence_mode(session),  # type: ignore[arg-type]
            replay_window=session.window,
        )

    async def Heartbeat(
        self, request: peer_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.HeartbeatResponse:
        # Admitting the call already recorded the activity and pushed the deadline.
        return peer_pb2.HeartbeatResponse(expires_at=timestamp(current_session().expires_at))

    async def Ping(
        self, request: peer_pb2.PingRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.PingResponse:
        clock = self._manager.clock
        received_at = clock.now()
        return peer_pb2.PingResponse(
            payload=request.payload,
            server_received_at=timestamp(received_at),
            server_sent_at=timestamp(clock.now()),
        )

    async def Status(
        self, request: peer_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.StatusResponse:
        manager = self._manager
        session = current_session_or_none()
        return peer_pb2.StatusResponse(
            server_peer_id=self._server_peer_id,
            server_version=__version__,
            uptime=duration(manager.clock.now() - self._started_at),
            session_stats=session_stats(await manager.get_session_stats()),
            session=session_info(session) if session is not None else None,
            supported_protocol_versions=self._supported_versions,
        )

    async def DelegateTask(
        self, request: peer_pb2.DelegateTaskRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.DelegateTaskResponse:
        session = current_session()
        task = await self._tasks.delegate(
            peer_id=session.peer_id,
            session_id=session.session_id,
            task_type=request.task_type,
            payload=json_format.MessageToDict(request.payload),
            timeout=seconds(request.timeout) if request.HasField("timeout") else None,
            wait=not request.return_immediately,
            max_wait=_waiting_budget(context.time_remaining()),
            # If the caller goes away while it waits, a resend learns of the task.
            on_created=lambda created: answer_if_interrupted(
                lambda: peer_pb2.DelegateTaskResponse(task=task_message(created))
            ),
        )
        return peer_pb2.DelegateTaskResponse(task=task_message(task))

    async def GetTask(
        self, request: peer_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.GetTaskResponse:
        task = await self._tasks.get(current_session().peer_id, request.task_id)
        return peer_pb2.GetTaskResponse(task=task_message(task))

    async def CancelTask(
        self, request: peer_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.CancelTaskResponse:
        task = await self._tasks.cancel(current_session().peer_id, request.task_id)
        return peer_pb2.CancelTaskResponse(task=task_message(task))

    async def ProvideInput(
        self, request: peer_pb2.ProvideInputRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.ProvideInputResponse:
        task = await self._tasks.provide_input(
            current_session().peer_id,
            request.task_id,
            json_format.MessageToDict(request.input),
            question=request.question,
        )
        return peer_pb2.ProvideInputResponse(task=task_message(task))

    async def ListTasks(
        self, request: peer_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.ListTasksResponse:
        page = await self._tasks.list_tasks(
            current_session().peer_id,
            page_size=request.page_size,
            page_token=request.page_token,
            state=TaskState(request.state) if request.state else None,
        )
        return peer_pb2.ListTasksResponse(
            tasks=[task_message(task) for task in page.tasks],
            next_page_token=page.next_page_token,
        )

    async def WatchTask(
        self, request: peer_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[peer_pb2.WatchTaskResponse]:
        session = current_session()
        # The first message is the response the call was admitted with; each later one
        # is a new message on the session, numbered like every other.
        sequence = session.sequence_num
        first = True
        async for task in self._tasks.watch(session.peer_id, request.task_id):
            if not first:
                sequence = await self._manager.increment_sequence(session.session_id)
            first = False
            yield peer_pb2.WatchTaskResponse(task=task_message(task), sequence_num=sequence)

    async def Terminate(
        self, request: peer_pb2.TerminateRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.TerminateResponse:
        ended = await self._manager.terminate_session(current_session().session_id)
        return peer_pb2.TerminateResponse(state=int(ended.state))  # type: ignore[arg-type]

    async def Describe(
        self, request: peer_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.DescribeResponse:
        limits = self._tasks.limits
        return peer_pb2.DescribeResponse(
            server_peer_id=self._server_peer_id,
            server_version=__version__,
            supported_protocol_versions=self._supported_versions,
            limits=peer_pb2.Limits(
                max_request_bytes=self._max_request_bytes,
                max_task_timeout=duration(limits.max_timeout),
                default_task_timeout=duration(limits.default_timeout),
                max_tasks_per_session=limits.max_running_per_session,
                max_running_tasks=limits.max_running,
                max_queued_tasks=limits.max_queued,
                progress_interval=duration(limits.progress_interval),
            ),
            task_types=[task_type_message(task_type) for task_type in self._tasks.registry.types],
        )

    def _negotiate(self, offered: Sequence[str]) -> str:
        """The most preferred supported version among those the peer offered."""
        for version in self._supported_versions:
            if version in offered:
                return version
        raise NoCommonProtocolVersion(offered, self._supported_versions)


def _waiting_budget(time_remaining: float | None) -> float | None:
    """How long a call may wait for its task: until shortly before the caller's deadline,
    so that a long task is answered as it stands (WORKING) rather than by DEADLINE_EXCEEDED.
    """
    if time_remaining is None:
        return None
    return max(time_remaining - min(1.0, time_remaining / 10), 0.0)
