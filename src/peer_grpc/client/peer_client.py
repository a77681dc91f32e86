"""The Python client: handshakes, numbers its calls, and raises typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.errors import (
    PeerError,
    RemoteError,
    SequenceError,
    SequenceExhausted,
    SessionExpired,
    SessionNotFound,
    SessionTerminated,
    SessionTokenInvalid,
)
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.core.sequence import FIRST_SEQUENCE, MAX_SEQUENCE
from peer_grpc.wire.contract import SERVICE_NAME
from peer_grpc.wire.rich_status import error_from_rpc_error

__all__ = ["PeerClient", "SessionTicket"]

log = logging.getLogger(__name__)

_HANDSHAKE_METHOD = f"/{SERVICE_NAME}/Handshake"
_Response = TypeVar("_Response", bound=Message)


@dataclass(frozen=True, slots=True)
class SessionTicket:
    """What a client keeps to resume its session after a restart: save it somewhere safe.

    The token is a secret: whoever holds it can speak for the session.
    """

    session_id: str
    session_token: str


class _FlightLimit:
    """Bounds the calls in flight; one object for the client's life, its limit adjustable.

    Replacing a semaphore when the limit changes would let calls queued on the old
    one through beside calls on the new one.
    """

    def __init__(self, limit: int = 1) -> None:
        self.limit = limit
        self._active = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._active < self.limit)
            self._active += 1

    async def __aexit__(self, *exc_info: object) -> None:
        async with self._changed:
            self._active -= 1
            self._changed.notify_all()

    async def set_limit(self, limit: int) -> None:
        async with self._changed:
            self.limit = limit
            self._changed.notify_all()


#: Metadata as grpc hands it over: key and value pairs.
_Metadata = Sequence[tuple[str, str | bytes]]


@dataclass
class _SessionCursor:
    """The client's view of its session: which id, and which sequence comes next."""

    session_id: str | None = None
    session_token: str = ""
    next_sequence: int = FIRST_SEQUENCE
    #: The window's width in window mode; 0 in strict mode (one call in flight).
    window: int = 0
    #: The last ``peer-sequence`` the server sent on this session.
    server_sequence: int = 0
    #: Set when a call's fate is unknown (the connection failed): resume before the next call.
    needs_resume: bool = False
    #: Bounds the calls in flight: 1 in strict mode, the window's width in window mode.
    in_flight: _FlightLimit = field(default_factory=_FlightLimit)

    async def start(self, response: peer_pb2.HandshakeResponse) -> None:
        """Follow the session a handshake (new or resumed) describes."""
        window = response.replay_window if response.sequence_mode == _WINDOW_MODE else 0
        same_window = response.resumed and response.session_id == self.session_id and window
        if same_window:
            # Calls still in flight hold numbers above the server's highest: never reuse them.
            self.next_sequence = max(self.next_sequence, response.next_sequence)
        else:
            self.next_sequence = response.next_sequence
            self.server_sequence = 0
        self.session_id = response.session_id
        if response.session_token:
            self.session_token = response.session_token
        self.needs_resume = False
        self.window = window
        await self.in_flight.set_limit(max(window, 1))

    def take_number(self) -> int:
        """Reserve the sequence for a new call; no two calls ever carry the same one."""
        sequence = self.next_sequence
        if sequence > MAX_SEQUENCE:
            raise SequenceExhausted("this session used its last sequence number")
        self.next_sequence += 1
        return sequence

    def unused(self, session_id: str, sequence: int) -> None:
        """The server refused ``sequence`` before admitting it: strict mode gives it back."""
        if session_id == self.session_id and not self.window and self.next_sequence == sequence + 1:
            self.next_sequence = sequence

    def spent(self, session_id: str, sequence: int, metadata: _Metadata | None) -> None:
        """The server admitted ``sequence``; ``metadata`` announced it."""
        if session_id == self.session_id:  # else it belonged to a session since replaced
            self.server_sequence = _server_sequence(metadata, self.server_sequence)


_WINDOW_MODE = peer_pb2.SEQUENCE_MODE_WINDOW
#: States a task never leaves.
_FINAL_TASK_STATES = frozenset(
    {
        peer_pb2.TASK_STATE_COMPLETED,
        peer_pb2.TASK_STATE_FAILED,
        peer_pb2.TASK_STATE_CANCELED,
        peer_pb2.TASK_STATE_REJECTED,
    }
)
#: Codes after which a call's fate is unknown and it is resent with the same sequence.
_RESEND_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_RESEND_CODE_NAMES = frozenset(code.name for code in _RESEND_CODES)
#: Reconnect soon after a server comes back (gRPC's default first backoff is a second).
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class _SequencingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Numbers every call but Handshake and recovers what can be recovered safely.

    - Strict mode sends one call at a time, in the order callers made them; window
      mode keeps up to the window's width in flight, each with its own number.
    - A call that fails with UNAVAILABLE or a deadline is resent with the same
      sequence and bytes, at most ``attempts`` times with exponential backoff. The
      server answers a resend of a call it already ran with that call's outcome,
      so nothing runs twice.
    - A SequenceError on a first attempt proves the call did not run: the cursor
      moves to the number the server expects and the call goes again, once.
    - A call the server admitted (its response or error carries ``peer-sequence``)
      has spent its number, whatever happened next.
    - Streams go through :class:`_StreamSequencingInterceptor`, which shares the
      cursor.
    """

    def __init__(
        self, cursor: _SessionCursor, *, attempts: int, backoff: float, resync: bool
    ) -> None:
        self._cursor = cursor
        self.attempts = attempts
        self.backoff = backoff
        self.resync = resync

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
            call, resynced = await self._send(continuation, client_call_details, request)
            if resynced and self.resync:
                call, _ = await self._send(continuation, client_call_details, request)
            return call

    async def _send(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall]
        ],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> tuple[grpc.aio.UnaryUnaryCall, bool]:
        """Send with one sequence number, resending it while the outcome is unknown.

        Returns the finished call, and whether it failed a first attempt with a
        SequenceError that the cursor has followed (so the call never ran).
        """
        cursor = self._cursor
        session_id, sequence, numbered = self._numbered(details)
        loop = asyncio.get_running_loop()
        deadline = None if details.timeout is None else loop.time() + details.timeout
        for attempt in range(self.attempts):
            remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
            # A resend waits for the channel to reconnect rather than failing at once, and
            # all sends of one call share the call's deadline.
            attempt_details = numbered._replace(timeout=remaining, wait_for_ready=attempt > 0)
            call = await continuation(attempt_details, request)
            try:
                await call
            except grpc.aio.AioRpcError as error:
                announced = _announcement(error.initial_metadata(), error.trailing_metadata())
                admitted = bool(_server_sequence(announced, 0))
                if error.code() in _RESEND_CODES:
                    # Lost on the way, there or back: the server answers a resend of a call
                    # it already ran from its record, so resending is always safe.
                    out_of_time = deadline is not None and loop.time() >= deadline
                    if attempt + 1 < self.attempts and not out_of_time:
                        log.info("resending sequence %d after %s", sequence, error.code().name)
                        await asyncio.sleep(self.backoff * 2**attempt)
                        continue
                    if admitted:
                        cursor.spent(session_id, sequence, announced)
                    else:
                        cursor.needs_resume = True  # fate unknown: ask where we stand
                    return call, False
                if admitted:  # it ran, then failed: the number is spent
                    cursor.spent(session_id, sequence, announced)
                    return call, False
                if attempt > 0:  # a resend refused: the first send may have run; keep it spent
                    return call, False
                if self._follow_sequence_error(session_id, error):
                    return call, True
                cursor.unused(session_id, sequence)
                return call, False
            announced = _announcement(await call.initial_metadata(), await call.trailing_metadata())
            cursor.spent(session_id, sequence, announced)
            return call, False
        raise AssertionError("unreachable: the last attempt returns")

    def _numbered(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[str, int, grpc.aio.ClientCallDetails]:
        """Take the next sequence number for a call: its session, number and metadata."""
        cursor = self._cursor
        session_id = cursor.session_id
        assert session_id is not None
        sequence = cursor.take_number()
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(SESSION_ID_KEY, session_id)
        metadata.add(SEQUENCE_KEY, str(sequence))
        return session_id, sequence, details._replace(metadata=metadata)

    def _follow_sequence_error(self, session_id: str, error: grpc.aio.AioRpcError) -> bool:
        """After a SequenceError, number the next call as the server expects.

        Returns whether ``error`` was a SequenceError.
        """
        if error.code() != grpc.StatusCode.ABORTED:
            return False
        decoded = error_from_rpc_error(error)
        if not isinstance(decoded, SequenceError):
            return False
        cursor = self._cursor
        if cursor.session_id != session_id:
            return False
        if cursor.window:
            cursor.next_sequence = max(cursor.next_sequence, decoded.expected_sequence)
        else:
            cursor.next_sequence = decoded.expected_sequence
        return True


class _StreamSequencingInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Numbers server-streaming calls (WatchTask) like :class:`_SequencingInterceptor`
    numbers unary ones, and on the same cursor.

    A stream is never resent: the server keeps no copy of its messages, so the
    caller opens a new one instead. A SequenceError before admission is followed,
    and the stream opened once more, as for unary calls.
    """

    def __init__(self, cursor: _SessionCursor, unary: _SequencingInterceptor) -> None:
        self._cursor = cursor
        self._unary = unary

    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryStreamCall]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryStreamCall:
        cursor = self._cursor
        if cursor.session_id is None:
            return await continuation(client_call_details, request)
        # The stream leaves the flight once the server has admitted it (its initial
        # metadata carries peer-sequence): its number is spent, so the next call may go
        # while the stream runs on.
        async with cursor.in_flight:
            call, resynced = await self._open_stream(continuation, client_call_details, request)
            if resynced and self._unary.resync:
                call, _ = await self._open_stream(continuation, client_call_details, request)
            return call

    async def _open_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryStreamCall]
        ],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> tuple[grpc.aio.UnaryStreamCall, bool]:
        """Open a stream under the next number and wait until the server admits or refuses it.

        Returns the call, and whether the server refused it with a SequenceError
        that the cursor has followed (so it may be opened again).
        """
        cursor = self._cursor
        session_id, sequence, numbered = self._unary._numbered(details)
        call = await continuation(numbered, request)
        initial_metadata = await call.initial_metadata()
        if _server_sequence(initial_metadata, 0):
            cursor.spent(session_id, sequence, initial_metadata)
            return call, False
        code = await call.code()
        if code in _RESEND_CODES:
            cursor.needs_resume = True  # it may have been admitted: ask where we stand
            return call, False
        error = grpc.aio.AioRpcError(
            code, initial_metadata, await call.trailing_metadata(), await call.details()
        )
        if self._unary._follow_sequence_error(session_id, error):
            return call, True
        cursor.unused(session_id, sequence)
        return call, False


def _announcement(initial: _Metadata | None, trailing: _Metadata | None) -> _Metadata:
    """Where the server announces an admitted call's ``peer-sequence``: the trailers of
    a unary call, the initial metadata of a stream (and of an older server's calls)."""
    return (*(trailing or ()), *(initial or ()))


def _server_sequence(metadata: _Metadata | None, default: int) -> int:
    for key, value in metadata or ():
        if key == SEQUENCE_KEY and isinstance(value, str) and value.isdigit():
            return int(value)
    return default


class PeerClient:
    """An async client of a peer-grpc server.

    ``async with PeerClient("127.0.0.1:50051", "billing") as client:`` handshakes on
    entry, heartbeats in the background while open, and terminates the session on
    exit. Every failed call raises a :class:`~peer_grpc.core.errors.PeerError` subclass
    carrying the server's details (for example :class:`SequenceError` with
    ``expected_sequence``, ``received_sequence`` and ``kind``).

    It recovers by itself where that cannot run a call twice: it resends a call
    whose answer was lost with the same sequence (the server answers a resend
    from its record of the original), renumbers a call the server refused as out
    of order, resumes its session with its token after a lost connection, and
    opens a new session only when the server refuses to resume the old one.
    To survive a restart, save :attr:`ticket` and pass it to the next client.

    Args:
        target: the server's ``host:port``.
        peer_id: this peer's id.
        protocol_versions: the versions to offer, most preferred first.
        capabilities: features to announce.
        timeout: seconds each call may take.
        heartbeat: send heartbeats in the background at the interval the server asks.
        rehandshake: open a new session and retry once when the server says the
            session expired or is unknown (the call was not run, so retrying is safe).
        ticket: resume this session on connect instead of opening a new one.
        attempts: how many times a call is sent with one sequence while its
            outcome is unknown (UNAVAILABLE, or a deadline before an answer).
        backoff: seconds before the first resend; each further one waits twice as long.
        resync: after a SequenceError that proves a call did not run, renumber it and
            send it again once (False: raise the SequenceError).
        credentials: TLS for the channel (see :func:`peer_grpc.wire.tls.channel_credentials`,
            which also presents a client certificate for mutual TLS); plaintext when
            omitted.
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
        ticket: SessionTicket | None = None,
        attempts: int = 4,
        backoff: float = 0.05,
        resync: bool = True,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.target = target
        self.peer_id = peer_id
        self._protocol_versions = tuple(protocol_versions)
        self._capabilities = tuple(capabilities)
        self._timeout = timeout
        self._heartbeat_enabled = heartbeat
        self._rehandshake = rehandshake
        self._credentials = credentials
        self._cursor = _SessionCursor()
        self._saved_ticket = ticket
        self._interceptor = _SequencingInterceptor(
            self._cursor, attempts=attempts, backoff=backoff, resync=resync
        )
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
    def ticket(self) -> SessionTicket | None:
        """What to save to resume this session after a restart (a secret), or None."""
        cursor = self._cursor
        if cursor.session_id is None or not cursor.session_token:
            return None
        return SessionTicket(cursor.session_id, cursor.session_token)

    @property
    def server_sequence(self) -> int:
        """The last sequence number the server sent on this session."""
        return self._cursor.server_sequence

    async def connect(self) -> peer_pb2.HandshakeResponse:
        """Open the channel, resume the saved session or handshake, and start heartbeating."""
        async with self._handshake_lock:
            ticket, self._saved_ticket = self._saved_ticket, None
            response = await self._resume_or_handshake(ticket)
        if self._heartbeat_enabled and self._heartbeat_task is None:
            self._heartbeat_task = asyncio.create_task(
                self._heartbeat_forever(), name="peer-grpc-heartbeat"
            )
        return response

    async def handshake(self) -> peer_pb2.HandshakeResponse:
        """Open a new session (ending this peer's previous one on the server)."""
        async with self._handshake_lock:
            return await self._handshake_locked()

    async def resume(self) -> peer_pb2.HandshakeResponse:
        """Learn from the server where this session stands, or open a new one if refused."""
        async with self._handshake_lock:
            return await self._resume_or_handshake(self.ticket)

    async def _resume_or_handshake(
        self, ticket: SessionTicket | None
    ) -> peer_pb2.HandshakeResponse:
        if ticket is not None:
            try:
                return await self._handshake_locked(ticket)
            except (SessionNotFound, SessionExpired, SessionTerminated, SessionTokenInvalid) as e:
                log.info("could not resume session (%s); opening a new one", e.reason)
        return await self._handshake_locked()

    async def _handshake_locked(
        self, resume: SessionTicket | None = None
    ) -> peer_pb2.HandshakeResponse:
        cursor = self._cursor
        async with cursor.in_flight:
            request = peer_pb2.HandshakeRequest(
                peer_id=self.peer_id,
                protocol_versions=self._protocol_versions,
                capabilities=self._capabilities,
            )
            if resume is not None:
                request.resume.session_id = resume.session_id
                request.resume.session_token = resume.session_token
            response = await self._send_handshake(request)
            if resume is not None:
                cursor.session_token = resume.session_token
            await cursor.start(response)
            self._generation += 1
            self.handshake_response = response
            return response

    async def _send_handshake(
        self, request: peer_pb2.HandshakeRequest
    ) -> peer_pb2.HandshakeResponse:
        """Send a handshake, again while the server is unreachable (safe: a repeated
        handshake only replaces the session the first one opened)."""
        handshake = self._peer_stub().Handshake
        attempts = self._interceptor.attempts
        for attempt in range(attempts):
            try:
                response: peer_pb2.HandshakeResponse = await handshake(
                    request, timeout=self._timeout, wait_for_ready=attempt > 0
                )
                return response
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RESEND_CODES or attempt + 1 == attempts:
                    raise error_from_rpc_error(error) from error
                await asyncio.sleep(self._interceptor.backoff * 2**attempt)
        raise AssertionError("unreachable: the last attempt raises")

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
        self,
        task_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - the task's timeout, sent to the server
    ) -> peer_pb2.Task:
        """Hand a task of ``task_type`` to the server, to run for at most ``timeout`` seconds
        (None: the server's default).

        With ``wait`` (the default) returns the task once it has ended. The server
        answers a DelegateTask shortly before its deadline with the task as it
        stands; a task still running then is watched with :meth:`watch_task`. So no
        call waits longer than the client's timeout, and heartbeats go on
        meanwhile. Without ``wait`` returns at once with the task SUBMITTED or
        WORKING.

        Raises:
            TaskLimitReached: too many tasks run; ``retry_after`` says when to try again.
            InvalidArgument: an unknown task type, or a timeout out of range.
        """
        request = peer_pb2.DelegateTaskRequest(task_type=task_type, return_immediately=not wait)
        if payload:
            request.payload.update(payload)
        if timeout is not None:
            request.timeout.FromNanoseconds(round(timeout * 1e9))
        response: peer_pb2.DelegateTaskResponse = await self._call(
            self._peer_stub().DelegateTask, request
        )
        if not wait or response.task.state in _FINAL_TASK_STATES:
            return response.task
        return await self.wait_for_task(response.task.task_id)

    async def wait_for_task(self, task_id: str) -> peer_pb2.Task:
        """Watch one of this peer's tasks until it ends, and return it.

        A broken stream is opened again (a watch only reads), as often as a call
        is resent.
        """
        attempts = self._interceptor.attempts
        for attempt in range(attempts):
            try:
                async for update in self.watch_task(task_id):
                    if update.task.state in _FINAL_TASK_STATES:
                        return update.task
            except RemoteError as error:
                if error.code not in _RESEND_CODE_NAMES or attempt + 1 == attempts:
                    raise
                log.info("watch of task %s broke (%s); watching again", task_id, error.code)
            await asyncio.sleep(self._interceptor.backoff * 2**attempt)
        raise RemoteError("UNAVAILABLE", f"the watch of task {task_id} ended before the task")

    async def get_task(self, task_id: str) -> peer_pb2.Task:
        """One of this peer's tasks as it stands.

        Raises:
            TaskNotFound: no such task of this peer's.
        """
        response: peer_pb2.GetTaskResponse = await self._call(
            self._peer_stub().GetTask, peer_pb2.GetTaskRequest(task_id=task_id)
        )
        return response.task

    async def cancel_task(self, task_id: str) -> peer_pb2.Task:
        """Cancel one of this peer's tasks; returns it CANCELED.

        Raises:
            TaskNotFound: no such task of this peer's.
            TaskNotCancelable: it has ended already.
        """
        response: peer_pb2.CancelTaskResponse = await self._call(
            self._peer_stub().CancelTask, peer_pb2.CancelTaskRequest(task_id=task_id)
        )
        return response.task

    async def list_tasks(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        state: int = peer_pb2.TASK_STATE_UNSPECIFIED,
    ) -> peer_pb2.ListTasksResponse:
        """One page of this peer's tasks, oldest first (see ``ListTasksRequest``)."""
        request = peer_pb2.ListTasksRequest(
            page_size=page_size,
            page_token=page_token,
            state=state,  # type: ignore[arg-type]
        )
        response: peer_pb2.ListTasksResponse = await self._call(
            self._peer_stub().ListTasks, request
        )
        return response

    async def watch_task(self, task_id: str) -> AsyncIterator[peer_pb2.WatchTaskResponse]:
        """One of this peer's tasks as it stands, then after every change until it ends.

        The stream has no deadline; heartbeats go on beside it. If the stream
        breaks, watch again: every message is the whole task, and a new watch
        starts from where it stands.

        Raises:
            TaskNotFound: no such task of this peer's.
        """
        await self._ensure_session()
        call = self._peer_stub().WatchTask(peer_pb2.WatchTaskRequest(task_id=task_id))
        # Until the server admits the watch it holds the flight of sequenced calls
        # (heartbeats too): give it no longer than any call.
        admitted = asyncio.ensure_future(call.initial_metadata())
        await asyncio.wait({admitted}, timeout=self._timeout)
        if not admitted.done():
            admitted.cancel()
            call.cancel()
            self._cursor.needs_resume = True  # it may have been admitted: ask where we stand
            raise RemoteError(
                "DEADLINE_EXCEEDED", f"the server did not take the watch within {self._timeout}s"
            )
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc_error(error) from error
        finally:
            call.cancel()

    async def terminate(self, reason: str = "") -> peer_pb2.TerminateResponse:
        """End the session on the server, and stop heartbeating.

        A later call opens a new session.
        """
        await self._stop_heartbeat()
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
        await self._stop_heartbeat()
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

    async def _stop_heartbeat(self) -> None:
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
            interceptors = [
                self._interceptor,
                _StreamSequencingInterceptor(self._cursor, self._interceptor),
            ]
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(
                    self.target, options=_CHANNEL_OPTIONS, interceptors=interceptors
                )
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target,
                    self._credentials,
                    options=_CHANNEL_OPTIONS,
                    interceptors=interceptors,
                )
            self._stub = peer_pb2_grpc.PeerServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def _invoke(self, rpc: Callable[..., Any], request: Message) -> Any:
        try:
            return await rpc(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc_error(error) from error

    async def _ensure_session(self) -> None:
        """Open a session if there is none; resume it if a call's fate was left unknown."""
        cursor = self._cursor
        if cursor.session_id is None or cursor.needs_resume:
            async with self._handshake_lock:  # checked again: a concurrent caller may have done it
                if cursor.session_id is None:
                    await self._handshake_locked()
                elif cursor.needs_resume:
                    await self._resume_or_handshake(self.ticket)

    async def _call(self, rpc: Callable[..., Any], request: Message, *, retry: bool = True) -> Any:
        await self._ensure_session()
        generation = self._generation
        try:
            return await self._invoke(rpc, request)
        except (SessionExpired, SessionNotFound, SequenceExhausted) as error:
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
