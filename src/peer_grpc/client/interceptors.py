"""The client interceptors that number every call and recover what can be recovered safely.

One for unary calls and one for server streams (WatchTask); both share the session
cursor of :mod:`peer_grpc.client.cursor`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from peer_grpc.client.cursor import SessionCursor, announcement, server_sequence
from peer_grpc.core.errors import SequenceError, SessionFenced
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.wire.contract import SERVICE_NAME
from peer_grpc.wire.rich_status import error_from_rpc_error

__all__ = [
    "CHANNEL_OPTIONS",
    "RESEND_CODES",
    "RESEND_CODE_NAMES",
    "SequencingInterceptor",
    "StreamSequencingInterceptor",
]

log = logging.getLogger(__name__)

_HANDSHAKE_METHOD = f"/{SERVICE_NAME}/Handshake"

#: Codes after which a call's fate is unknown and it is resent with the same sequence.
#: CANCELLED is among them because a client's own cancellation never arrives as an
#: error (the awaiting task gets CancelledError): this one came from the server, whose
#: gRPC core cancels calls it received but never handed out when it shuts down
#: (grpc/grpc#41785). Resending is safe: the server answers a resend from its record.
RESEND_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
RESEND_CODE_NAMES = frozenset(code.name for code in RESEND_CODES)
#: Reconnect soon after a server comes back (gRPC's default first backoff is a second).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class _Refusal(enum.Enum):
    """What a refused send asks of the interceptor."""

    #: A SequenceError the cursor followed: the call never ran; it may go again.
    RESYNCED = "resynced"
    #: SESSION_FENCED: resume the session, then send the call again as it was.
    FENCED = "fenced"


class SequencingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Numbers every call but Handshake and recovers what can be recovered safely.

    - Strict mode sends one call at a time, in the order callers made them; window
      mode keeps up to the window's width in flight, each with its own number.
    - A call that fails with UNAVAILABLE, a deadline or a server-sent CANCELLED is resent
      with the same sequence and bytes, at most ``attempts`` times with exponential
      backoff. The
      server answers a resend of a call it already ran with that call's outcome,
      so nothing runs twice.
    - A SequenceError on a first attempt proves the call did not run: the cursor
      moves to the number the server expects and the call goes again, once.
    - A call the server admitted (its response or error carries ``peer-sequence``)
      has spent its number, whatever happened next.
    - A call refused SESSION_FENCED (the server's store may have lost its latest
      records) did not run: ``on_fenced`` resumes the session, telling the server
      the highest sequence it acknowledged, and the call goes again, once, with the
      same sequence and bytes, so that a send before the fence whose answer was
      lost is answered from the record rather than run again.
    - Streams go through :class:`StreamSequencingInterceptor`, which shares the
      cursor.
    """

    def __init__(
        self, cursor: SessionCursor, *, attempts: int, backoff: float, resync: bool
    ) -> None:
        self._cursor = cursor
        self.attempts = attempts
        self.backoff = backoff
        self.resync = resync
        #: Resumes the session after a SESSION_FENCED refusal, inside the refused call's
        #: flight; returns whether it did (set by the client).
        self.on_fenced: Callable[[], Awaitable[bool]] | None = None

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
            numbered = self._numbered(client_call_details)
            call, refusal = await self._send(continuation, numbered, request)
            if refusal is _Refusal.RESYNCED and self.resync:
                numbered = self._numbered(client_call_details)
                call, refusal = await self._send(continuation, numbered, request)
            # Resumed still in the flight, so that no other call takes a number meanwhile.
            resume = self.on_fenced
            if refusal is _Refusal.FENCED and resume is not None and await resume():
                call, _ = await self._send(continuation, numbered, request)
            return call

    async def _send(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall]
        ],
        numbered: tuple[str, int, grpc.aio.ClientCallDetails],
        request: Any,
    ) -> tuple[grpc.aio.UnaryUnaryCall, _Refusal | None]:
        """Send with one sequence number, resending it while the outcome is unknown.

        Returns the finished call, and what its refusal asks of the caller, if anything:
        RESYNCED for a first attempt refused with a SequenceError that the cursor has
        followed (so the call never ran), FENCED for a SESSION_FENCED refusal.
        """
        cursor = self._cursor
        session_id, sequence, numbered_details = numbered
        loop = asyncio.get_running_loop()
        timeout = numbered_details.timeout
        deadline = None if timeout is None else loop.time() + timeout
        for attempt in range(self.attempts):
            remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
            # A resend waits for the channel to reconnect rather than failing at once, and
            # all sends of one call share the call's deadline.
            attempt_details = numbered_details._replace(
                timeout=remaining, wait_for_ready=attempt > 0
            )
            call = await continuation(attempt_details, request)
            try:
                await call
            except grpc.aio.AioRpcError as error:
                announced = announcement(error.initial_metadata(), error.trailing_metadata())
                admitted = bool(server_sequence(announced, 0))
                if error.code() in RESEND_CODES:
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
                    return call, None
                if admitted:  # it ran, then failed: the number is spent
                    cursor.spent(session_id, sequence, announced)
                    return call, None
                if _is_fenced_error(error):
                    cursor.needs_resume = True  # before any other call goes
                    return call, _Refusal.FENCED
                if attempt > 0:  # a resend refused: the first send may have run; keep it spent
                    return call, None
                if self._follow_sequence_error(session_id, error):
                    return call, _Refusal.RESYNCED
                cursor.unused(session_id, sequence)
                return call, None
            announced = announcement(await call.initial_metadata(), await call.trailing_metadata())
            cursor.spent(session_id, sequence, announced)
            return call, None
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


class StreamSequencingInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Numbers server-streaming calls (WatchTask) like :class:`SequencingInterceptor`
    numbers unary ones, and on the same cursor.

    A stream is never resent: the server keeps no copy of its messages, so the
    caller opens a new one instead. A SequenceError before admission is followed,
    and the stream opened once more, as for unary calls.
    """

    def __init__(self, cursor: SessionCursor, unary: SequencingInterceptor) -> None:
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
        if server_sequence(initial_metadata, 0):
            cursor.spent(session_id, sequence, initial_metadata)
            return call, False
        code = await call.code()
        if code in RESEND_CODES:
            cursor.needs_resume = True  # it may have been admitted: ask where we stand
            return call, False
        error = grpc.aio.AioRpcError(
            code, initial_metadata, await call.trailing_metadata(), await call.details()
        )
        if self._unary._follow_sequence_error(session_id, error):
            return call, True
        if _is_fenced_error(error):
            cursor.needs_resume = True  # the caller's next call resumes first
        cursor.unused(session_id, sequence)
        return call, False


def _is_fenced_error(error: grpc.aio.AioRpcError) -> bool:
    return error.code() == grpc.StatusCode.FAILED_PRECONDITION and isinstance(
        error_from_rpc_error(error), SessionFenced
    )
