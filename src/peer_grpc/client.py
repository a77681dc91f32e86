"""The Python client: handshakes, numbers its calls, and raises typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.errors import PeerError, SequenceError, SessionExpired, SessionNotFound
from peer_grpc.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.rich_status import error_from_rpc_error
from peer_grpc.sequence import FIRST_SEQUENCE
from peer_grpc.service import SERVICE_NAME

__all__ = ["PeerClient"]

log = logging.getLogger(__name__)

_HANDSHAKE_METHOD = f"/{SERVICE_NAME}/Handshake"
_Response = TypeVar("_Response", bound=Message)


@dataclass
class _SessionCursor:
    """The client's view of its session: which id, and which sequence comes next."""

    session_id: str | None = None
    next_sequence: int = FIRST_SEQUENCE
    #: The last ``peer-sequence`` the server sent on this session.
    server_sequence: int = 0
    #: Held while a sequenced call is in flight: strict ordering allows one at a time.
    in_flight: asyncio.Lock = field(default_factory=asyncio.Lock)


class _SequencingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds session metadata to every call but Handshake and keeps the cursor in step.

    Calls are sent one at a time, in the order callers made them. A call the
    server admitted (its response, or error, carries ``peer-sequence``) consumes
    its number; a SequenceError moves the cursor to the number the server expects.
    """

    def __init__(self, cursor: _SessionCursor) -> None:
        self._cursor = cursor

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall:
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        cursor = self._cursor
        if method == _HANDSHAKE_METHOD or cursor.session_id is None:
            return await continuation(client_call_details, request)
        async with cursor.in_flight:
            sequence = cursor.next_sequence
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
            metadata.add(SESSION_ID_KEY, cursor.session_id)
            metadata.add(SEQUENCE_KEY, str(sequence))
            call = await continuation(client_call_details._replace(metadata=metadata), request)
            try:
                await call
            except grpc.aio.AioRpcError as error:
                self._after_failure(sequence, error)
            else:
                self._after_success(sequence, await call.initial_metadata())
            return call

    def _after_success(self, sequence: int, initial_metadata: grpc.aio.Metadata | None) -> None:
        cursor = self._cursor
        cursor.next_sequence = sequence + 1
        cursor.server_sequence = _server_sequence(initial_metadata, cursor.server_sequence)

    def _after_failure(self, sequence: int, error: grpc.aio.AioRpcError) -> None:
        cursor = self._cursor
        initial_metadata = error.initial_metadata()
        if _server_sequence(initial_metadata, 0):  # admitted, then failed: the number is spent
            self._after_success(sequence, initial_metadata)
            return
        decoded = error_from_rpc_error(error)
        if isinstance(decoded, SequenceError):
            cursor.next_sequence = decoded.expected_sequence


def _server_sequence(metadata: grpc.aio.Metadata | None, default: int) -> int:
    for key, value in metadata or ():
        if key == SEQUENCE_KEY and isinstance(value, str) and value.isdigit():
            return int(value)
    return default


class PeerClient:
    """An async client of a peer-grpc server.

    ``async with PeerClient("127.0.0.1:50051", "billing") as client:`` handshakes on
    entry, heartbeats in the background while open, and terminates the session on
    exit. Every failed call raises a :class:`~peer_grpc.errors.PeerError` subclass
    carrying the server's details (for example :class:`SequenceError` with
    ``expected_sequence``, ``received_sequence`` and ``kind``).

    Args:
        target: the server's ``host:port``.
        peer_id: this peer's id.
        protocol_versions: the versions to offer, most preferred first.
        capabilities: features to announce.
        timeout: seconds each call may take.
        heartbeat: send heartbeats in the background at the interval the server asks.
        rehandshake: open a new session and retry once when the server says the
            session expired or is unknown (the call was not run, so retrying is safe).
    """

    def __init__(
        self,
        target: str,
        peer_id: str,
        *,
        protocol_versions: Sequence[str] = ("1.0",),
        capabilities: Iterable[str] = (),
        timeout: float = 10.0,
        heartbeat: bool = True,
        rehandshake: bool = True,
    ) -> None:
        self.target = target
        self.peer_id = peer_id
        self._protocol_versions = tuple(protocol_versions)
        self._capabilities = tuple(capabilities)
        self._timeout = timeout
        self._heartbeat_enabled = heartbeat
        self._rehandshake = rehandshake
        self._cursor = _SessionCursor()
        self._channel: grpc.aio.Channel | None = None
        self._stub: peer_pb2_grpc.PeerServiceStub | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._handshake_lock = asyncio.Lock()
        self._generation = 0
        self._closed = False
        self.handshake_response: peer_pb2.HandshakeResponse | None = None

    @property
    def session_id(self) -> str | None:
        """The current session's id, or None before the handshake."""
        return self._cursor.session_id

    @property
    def next_sequence(self) -> int:
        """The sequence number the next call will carry."""
        return self._cursor.next_sequence

    @property
    def server_sequence(self) -> int:
        """The last sequence number the server sent on this session."""
        return self._cursor.server_sequence

    async def connect(self) -> peer_pb2.HandshakeResponse:
        """Open the channel, handshake, and start heartbeating."""
        response = await self.handshake()
        if self._heartbeat_enabled and self._heartbeat_task is None:
            self._heartbeat_task = asyncio.create_task(
                self._heartbeat_forever(), name="peer-grpc-heartbeat"
            )
        return response

    async def handshake(self) -> peer_pb2.HandshakeResponse:
        """Open a new session (ending this peer's previous one on the server)."""
        async with self._handshake_lock:
            return await self._handshake_locked()

    async def _handshake_locked(self) -> peer_pb2.HandshakeResponse:
        async with self._cursor.in_flight:
            request = peer_pb2.HandshakeRequest(
                peer_id=self.peer_id,
                protocol_versions=self._protocol_versions,
                capabilities=self._capabilities,
            )
            response: peer_pb2.HandshakeResponse = await self._invoke(
                self._peer_stub().Handshake, request
            )
            self._cursor.session_id = response.session_id
            self._cursor.next_sequence = response.next_sequence
            self._cursor.server_sequence = 0
            self._generation += 1
            self.handshake_response = response
            return response

    async def heartbeat(self) -> peer_pb2.HeartbeatResponse:
        """Keep the session alive; returns its new expiry."""
        response: peer_pb2.HeartbeatResponse = await self._call(
            self._peer_stub().Heartbeat, peer_pb2.HeartbeatRequest()
        )
        return response

    async def ping(self, payload: bytes = b"") -> peer_pb2.PingResponse:
        """Ask for the server's clock; ``payload`` comes back unchanged."""
        response: peer_pb2.PingResponse = await self._call(
            self._peer_stub().Ping, peer_pb2.PingRequest(payload=payload)
        )
        return response

    async def status(self) -> peer_pb2.StatusResponse:
        """The server's status, statistics and this client's session."""
        response: peer_pb2.StatusResponse = await self._call(
            self._peer_stub().Status, peer_pb2.StatusRequest()
        )
        return response

    async def delegate_task(
        self, task_type: str, payload: Mapping[str, Any] | None = None
    ) -> peer_pb2.Task:
        """Run a task of ``task_type`` on the server; returns the finished task."""
        request = peer_pb2.DelegateTaskRequest(task_type=task_type)
        if payload:
            struct = struct_pb2.Struct()
            struct.update(payload)
            request.payload.CopyFrom(struct)
        response: peer_pb2.DelegateTaskResponse = await self._call(
            self._peer_stub().DelegateTask, request
        )
        return response.task

    async def terminate(self, reason: str = "") -> peer_pb2.TerminateResponse:
        """End the session on the server."""
        response: peer_pb2.TerminateResponse = await self._call(
            self._peer_stub().Terminate, peer_pb2.TerminateRequest(reason=reason), retry=False
        )
        self._cursor.session_id = None
        return response

    async def close(self, *, terminate: bool = True) -> None:
        """Stop heartbeating, end the session (best effort) and close the channel.

        Closing twice does nothing the second time. With ``terminate=False`` the
        session stays open on the server until it expires.
        """
        if self._closed:
            return
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
            self._heartbeat_task = None
        if terminate and self._cursor.session_id is not None:
            try:
                await self.terminate("client closed")
            except PeerError as error:
                log.debug("could not terminate session on close: %s", error)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None
        self._closed = True

    async def __aenter__(self) -> PeerClient:
        try:
            await self.connect()
        except BaseException:
            await self.close(terminate=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _peer_stub(self) -> peer_pb2_grpc.PeerServiceStub:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                self.target, interceptors=[_SequencingInterceptor(self._cursor)]
            )
            self._stub = peer_pb2_grpc.PeerServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def _invoke(self, rpc: Callable[..., Any], request: Message) -> Any:
        try:
            return await rpc(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc_error(error) from error

    async def _call(self, rpc: Callable[..., Any], request: Message, *, retry: bool = True) -> Any:
        if self._cursor.session_id is None:
            await self.handshake()
        generation = self._generation
        try:
            return await self._invoke(rpc, request)
        except (SessionExpired, SessionNotFound) as error:
            if not (retry and self._rehandshake):
                raise
            log.info("session gone (%s); opening a new one", error.reason)
        async with self._handshake_lock:
            if generation == self._generation:  # no concurrent caller opened one already
                await self._handshake_locked()
        return await self._invoke(rpc, request)

    async def _heartbeat_forever(self) -> None:
        while True:
            response = self.handshake_response
            interval = response.heartbeat_interval.ToTimedelta().total_seconds() if response else 0
            await asyncio.sleep(interval or 10.0)
            try:
                await self.heartbeat()
            except PeerError as error:
                log.warning("heartbeat failed: %s", error)
