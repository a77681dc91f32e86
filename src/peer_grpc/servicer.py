"""The PeerService servicer: the RPCs themselves, on an already admitted session."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import grpc.aio
from google.protobuf import json_format, struct_pb2

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc._version import __version__
from peer_grpc.call_context import current_session, current_session_or_none
from peer_grpc.convert import duration, sequence_mode, session_info, session_stats, timestamp
from peer_grpc.errors import NoCommonProtocolVersion
from peer_grpc.manager import SessionManager, new_session_token
from peer_grpc.session import Session
from peer_grpc.state import SessionState
from peer_grpc.tasks import TaskRegistry

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
        tasks: the task handlers DelegateTask may run.
        server_peer_id: this server's own peer id.
        heartbeat_interval: how often peers are told to send heartbeats.
        supported_versions: protocol versions spoken, most preferred first.
    """

    def __init__(
        self,
        manager: SessionManager,
        tasks: TaskRegistry,
        *,
        server_peer_id: str,
        heartbeat_interval: float,
        supported_versions: Sequence[str] = SUPPORTED_PROTOCOL_VERSIONS,
    ) -> None:
        self._manager = manager
        self._tasks = tasks
        self._server_peer_id = server_peer_id
        self._heartbeat_interval = heartbeat_interval
        self._supported_versions = tuple(supported_versions)
        self._started_at = manager.clock.now()

    async def Handshake(
        self, request: peer_pb2.HandshakeRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.HandshakeResponse:
        version = self._negotiate(request.protocol_versions)
        if request.HasField("resume"):
            return await self._resume(request, version)
        manager = self._manager
        token = new_session_token()
        session = await manager.create_session(
            request.peer_id, version, request.capabilities, session_token=token
        )
        session = await manager.update_session_state(
            session.session_id, SessionState.HANDSHAKE_SENT
        )
        response = self._handshake_response(session)
        response.session_token = token
        return response

    async def _resume(
        self, request: peer_pb2.HandshakeRequest, version: str
    ) -> peer_pb2.HandshakeResponse:
        resume = request.resume
        session = await self._manager.resume_session(
            resume.session_id, resume.session_token, request.peer_id
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
        clock = self._manager.clock
        created_at = clock.now()
        outcome = await self._tasks.run(
            request.task_type, json_format.MessageToDict(request.payload)
        )
        task = peer_pb2.Task(
            task_id=uuid.uuid4().hex,
            task_type=request.task_type,
            created_at=timestamp(created_at),
            owner_peer_id=session.peer_id,
        )
        if outcome.ok:
            result = struct_pb2.Struct()
            try:
                result.update(outcome.result or {})
            except (TypeError, ValueError, OverflowError) as error:
                task.state = peer_pb2.TASK_STATE_FAILED
                task.error.code = "INVALID_RESULT"
                task.error.message = f"handler result is not JSON: {error}"
            else:
                task.state = peer_pb2.TASK_STATE_COMPLETED
                task.result.CopyFrom(result)
        else:
            task.state = peer_pb2.TASK_STATE_FAILED
            task.error.code = outcome.error_code
            task.error.message = outcome.error_message
        task.updated_at.CopyFrom(timestamp(clock.now()))
        return peer_pb2.DelegateTaskResponse(task=task)

    async def Terminate(
        self, request: peer_pb2.TerminateRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.TerminateResponse:
        ended = await self._manager.terminate_session(current_session().session_id)
        return peer_pb2.TerminateResponse(state=int(ended.state))  # type: ignore[arg-type]

    def _negotiate(self, offered: Sequence[str]) -> str:
        """The most preferred supported version among those the peer offered."""
        for version in self._supported_versions:
            if version in offered:
                return version
        raise NoCommonProtocolVersion(offered, self._supported_versions)
