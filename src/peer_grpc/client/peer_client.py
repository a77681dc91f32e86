"""The Python client: handshakes, numbers its calls, and raises typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.client.cursor import SessionCursor
from peer_grpc.client.interceptors import (
    CHANNEL_OPTIONS,
    RESEND_CODE_NAMES,
    RESEND_CODES,
    SequencingInterceptor,
    StreamSequencingInterceptor,
)
from peer_grpc.client.reachability import (
    ConnectionFailure,
    ServerUnreachable,
    connection_failure,
)
from peer_grpc.core.errors import (
    PeerError,
    RemoteError,
    SequenceExhausted,
    SessionExpired,
    SessionNotFound,
    SessionTerminated,
    SessionTokenInvalid,
)
from peer_grpc.core.task import TaskState
from peer_grpc.wire.rich_status import error_from_rpc_error

__all__ = ["PeerClient", "SessionTicket"]

log = logging.getLogger(__name__)

_Response = TypeVar("_Response", bound=Message)


@dataclass(frozen=True, slots=True)
class SessionTicket:
    """What a client keeps to resume its session after a restart: save it somewhere safe.

    The token is a secret: whoever holds it can speak for the session.
    """

    session_id: str
    #: Never shown in a repr, a log or an error.
    session_token: str = field(repr=False)


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
            outcome is unknown (UNAVAILABLE, a deadline before an answer, or a server's
            CANCELLED).
        backoff: seconds before the first resend; each further one waits twice as long.
        resync: after a SequenceError that proves a call did not run, renumber it and
            send it again once (False: raise the SequenceError).
        connect_timeout: seconds :meth:`connect` may spend reaching the server, its
            resends included; past it, :class:`ServerUnreachable` says why (connection
            refused, TLS handshake failed, ...). None: as long as the resends take.
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
        connect_timeout: float | None = None,
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
        self._connect_timeout = connect_timeout
        self._cursor = SessionCursor()
        self._saved_ticket = ticket
        self._interceptor = SequencingInterceptor(
            self._cursor, attempts=attempts, backoff=backoff, resync=resync
        )
        self._interceptor.on_fenced = self._resume_fenced
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
                if resume.session_id == cursor.session_id:
                    request.resume.last_acknowledged = cursor.acknowledged
            response = await self._send_handshake(request)
            if resume is not None:
                cursor.session_token = resume.session_token
            await cursor.start(response)
            self._generation += 1
            self.handshake_response = response
            return response

    async def _resume_fenced(self) -> bool:
        """Resume the session after a SESSION_FENCED refusal, from inside the refused
        call's flight (so that no other call takes a number meanwhile); returns whether
        it resumed. Refused (the session is gone), the call's error stands and the
        next call resumes or opens a session as usual."""
        cursor = self._cursor
        ticket = self.ticket
        if ticket is None:
            return False
        request = peer_pb2.HandshakeRequest(
            peer_id=self.peer_id,
            protocol_versions=self._protocol_versions,
            capabilities=self._capabilities,
            resume=peer_pb2.ResumeSession(
                session_id=ticket.session_id,
                session_token=ticket.session_token,
                last_acknowledged=cursor.acknowledged,
            ),
        )
        try:
            response = await self._send_handshake(request)
        except PeerError as error:
            log.info("could not resume the fenced session (%s)", error.reason)
            return False
        if response.session_id != cursor.session_id:
            return False  # replaced meanwhile by a concurrent handshake
        log.info("resumed session after a fence; the server expects %d", response.next_sequence)
        await cursor.start(response)
        self.handshake_response = response
        return True

    async def _send_handshake(
        self, request: peer_pb2.HandshakeRequest
    ) -> peer_pb2.HandshakeResponse:
        """Send a handshake, again while the server is unreachable (safe: a repeated
        handshake only replaces the session the first one opened), within the connect
        timeout."""
        handshake = self._peer_stub().Handshake
        attempts = self._interceptor.attempts
        clock = asyncio.get_running_loop().time
        give_up_at = None if self._connect_timeout is None else clock() + self._connect_timeout
        failure: ConnectionFailure | None = None
        for attempt in range(attempts):
            timeout = self._timeout
            if give_up_at is not None:
                timeout = max(min(timeout, give_up_at - clock()), 0.001)
            try:
                response: peer_pb2.HandshakeResponse = await handshake(
                    request, timeout=timeout, wait_for_ready=attempt > 0
                )
                return response
            except grpc.aio.AioRpcError as rpc_error:
                error = error_from_rpc_error(rpc_error)
                if rpc_error.code() not in RESEND_CODES:
                    raise error from rpc_error
                reached = type(error) is not RemoteError  # the server said why, in detail
                if not reached:
                    # Only a call that does not wait for the connection hears why it failed.
                    failure = failure or connection_failure(
                        rpc_error.details() or "", tls=self._credentials is not None
                    )
                backoff = self._interceptor.backoff * 2**attempt
                out_of_time = give_up_at is not None and clock() + backoff >= give_up_at
                lasting = failure is not None and failure.lasting and not reached
                if lasting or attempt + 1 == attempts or out_of_time:
                    if reached or failure is None:
                        raise error from rpc_error  # e.g. SHUTTING_DOWN, STORE_UNAVAILABLE
                    code = rpc_error.code().name
                    raise ServerUnreachable(self.target, failure.cause, code) from rpc_error
                await asyncio.sleep(backoff)
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

    async def describe(self) -> peer_pb2.DescribeResponse:
        """What the server is and can do: its version, the limits this client must
        respect, and every task type it runs with the JSON Schemas of its payload and
        result."""
        response: peer_pb2.DescribeResponse = await self._call(
            self._peer_stub().Describe, peer_pb2.DescribeRequest()
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
        if not wait or TaskState(response.task.state).is_final:
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
                    if TaskState(update.task.state).is_final:
                        return update.task
            except RemoteError as error:
                if error.code not in RESEND_CODE_NAMES or attempt + 1 == attempts:
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

    async def provide_input(
        self, task_id: str, answer: Mapping[str, Any], *, question: int = 0
    ) -> peer_pb2.Task:
        """Answer the question one of this peer's tasks waits on (it is INPUT_REQUIRED,
        its ``question`` saying what it needs); returns the task WORKING again.

        With ``question`` (the task's ``questions_asked`` as you saw it), only that
        question is answered, never one the task asks later. The call is
        sequence-checked and answered once: a resend after a lost reply gets the
        first answer, and the handler gets the input once.

        Raises:
            TaskNotFound: no such task of this peer's.
            TaskNotWaitingForInput: the task asks nothing now, or another question.
        """
        request = peer_pb2.ProvideInputRequest(task_id=task_id, question=question)
        request.input.update(answer)
        response: peer_pb2.ProvideInputResponse = await self._call(
            self._peer_stub().ProvideInput, request
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

        Changes include the handler's progress reports (``progress``,
        ``partial_result``; at most one per the server's progress interval) and its
        questions (state INPUT_REQUIRED: answer with :meth:`provide_input`).

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
                StreamSequencingInterceptor(self._cursor, self._interceptor),
            ]
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(
                    self.target, options=CHANNEL_OPTIONS, interceptors=interceptors
                )
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target,
                    self._credentials,
                    options=CHANNEL_OPTIONS,
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
