"""The server interceptor: the gRPC glue that guards every PeerService call.

Each method gets one wrapper, built once at its first call (:class:`PeerInterceptor`),
that does in one coroutine what the protocol asks before and after the servicer:

1. refuse the call once the server is stopping (:class:`Gate`);
2. read the session metadata (:func:`read_credentials`), refusing calls that need
   a session and carry none, before their body is looked at;
3. decode and validate the request (:func:`checked_message`);
4. admit the call's identity (under mutual TLS), session and sequence in one
   atomic store step, or answer a resend of an accepted call with that call's
   outcome (:func:`answer_resend`);
5. run the servicer with the admitted call bound for it (the one context variable,
   :mod:`peer_grpc.server.call_context`);
6. record how the call ended, for resends (:func:`outcome_of_failure`);
7. turn protocol errors into rich statuses (:func:`status_of_error`).

Values pass between the steps as arguments. Observers, when configured, are told
of each call's start and end by typed events. A call refused by any step never
reaches a servicer and changes no session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeAlias

import grpc
import grpc.aio
from google.protobuf.message import Message

from peer_grpc.core.errors import (
    InternalError,
    PeerError,
    SessionRequired,
    ShuttingDown,
    StoreUnavailable,
)
from peer_grpc.core.metadata import (
    SEQUENCE_KEY,
    SESSION_ID_KEY,
    SessionCredentials,
    parse_session_metadata,
)
from peer_grpc.core.retry import (
    CallEnd,
    CallKey,
    CallOutcome,
    answer_to_resend,
    answered,
    cut_short,
    replay_refusal,
)
from peer_grpc.core.session import Session
from peer_grpc.observability.calls import (
    CallEnded,
    CallObserver,
    CallStarted,
    notify_ended,
    notify_started,
    status_code_of_ending,
)
from peer_grpc.server.call_context import AdmittedCall, bind_admitted, unbind_admitted
from peer_grpc.server.handlers import ReceivedRequest, servicer_method_of
from peer_grpc.server.validation import RequestValidator
from peer_grpc.sessions.manager import SessionManager
from peer_grpc.stores.protocols import Admission
from peer_grpc.wire.contract import SERVICE_NAME
from peer_grpc.wire.rich_status import (
    GrpcStatus,
    failed_outcome,
    status_of_outcome,
    to_grpc_status,
)
from peer_grpc.wire.tls import identity_of

__all__ = [
    "OPTIONALLY_SESSIONLESS_METHODS",
    "SESSIONLESS_METHODS",
    "Gate",
    "PeerInterceptor",
    "answer_resend",
    "checked_message",
    "outcome_of_failure",
    "peer_interceptor",
    "read_credentials",
    "status_of_error",
]

log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext
ServicerMethod = Callable[[Message, Context], Any]
Serializer = Callable[[Any], bytes]
_METHOD_PREFIX = f"/{SERVICE_NAME}/"
#: Methods that open sessions and so carry none.
SESSIONLESS_METHODS = frozenset({"Handshake"})
#: Methods that ``allow_sessionless`` lets older peers call without a session.
OPTIONALLY_SESSIONLESS_METHODS = frozenset({"Ping", "Status", "Describe"})


class Gate:
    """Whether the server takes new calls: closed once it begins to stop.

    A closed gate answers every new call UNAVAILABLE (``SHUTTING_DOWN``), which a
    client resends elsewhere, while calls already in flight finish. Stopping gRPC's
    server at once instead would answer CANCELLED the calls it had received but not
    yet handed out (grpc/grpc#41785).
    """

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True

    def close(self) -> None:
        """Take no new calls from now on."""
        self.open = False


# --- the steps, each a plain function of its inputs -------------------------------


def read_credentials(
    method: str, context: Context, sessionless_ok: bool
) -> SessionCredentials | None:
    """The call's session metadata; None if it carries none and may go without.

    Raises:
        SessionRequired: the call carries no session and its method needs one.
        InvalidArgument: the session metadata is malformed.
    """
    credentials = parse_session_metadata(context.invocation_metadata())
    if credentials is None and not sessionless_ok:
        raise SessionRequired(
            f"{method} needs the {SESSION_ID_KEY} and {SEQUENCE_KEY} metadata from a Handshake"
        )
    return credentials


def checked_message(request: ReceivedRequest, validate: RequestValidator | None) -> Message:
    """The decoded request, once it passed the method's rules.

    Raises:
        InvalidArgument: the bytes do not decode, or a field breaks a rule.
    """
    message = request.decoded()
    if validate is not None:
        validate(message)
    return message


async def answer_resend(
    session: Session, sequence: int, replay: Awaitable[CallOutcome], context: Context
) -> bytes:
    """Answer a resend of an accepted call exactly as the original was answered."""
    try:
        # Shielded: a resend that gives up waiting must not cancel the shared outcome.
        outcome = await asyncio.wait_for(asyncio.shield(replay), context.time_remaining())
    except TimeoutError:
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the original call with sequence {sequence} was still running at the deadline",
        )
    outcome = answer_to_resend(outcome, session, sequence)
    announced = _announcement(outcome.server_sequence) if outcome.server_sequence else ()
    if outcome.end is CallEnd.ANSWERED:
        context.set_trailing_metadata(announced)
        return outcome.response
    status = status_of_outcome(outcome)
    await context.abort(
        status.code, status.details, trailing_metadata=(*status.trailing_metadata, *announced)
    )
    raise AssertionError("unreachable: abort raises")


def status_of_error(error: Exception, method: str) -> GrpcStatus:
    """The status a call that raised ``error`` ends with. Anything but a protocol error
    is a server fault: it is logged with its traceback and answered INTERNAL."""
    if not isinstance(error, PeerError):
        log.exception("unhandled error in %s", method, exc_info=error)
        error = InternalError("internal error")
    return to_grpc_status(error)


def outcome_of_failure(
    error: BaseException,
    status: GrpcStatus | None,
    admitted: AdmittedCall,
    server_sequence: int,
    context: Context,
) -> CallOutcome:
    """How an admitted call that ended by ``error`` (answered with ``status``, if it
    is answered at all) ended, for resends of it."""
    if isinstance(error, grpc.aio.AbortError):  # the servicer set its own status
        code = context.code()
        code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
        return failed_outcome(
            code, context.details() or "", context.trailing_metadata(), server_sequence
        )
    if isinstance(error, StoreUnavailable):
        # Unless the call's effect is known to be done (then a resend learns it), the call
        # is marked as not run, so that a resend runs it.
        return cut_short(True, admitted.effect_done(), server_sequence)
    if status is not None:
        return failed_outcome(
            status.code, status.details, status.trailing_metadata, server_sequence
        )
    # Cancelled, or torn down: the effect is unknown unless the method said otherwise.
    return cut_short(False, admitted.effect_done(), server_sequence)


def _end_with(status: GrpcStatus, context: Context) -> None:
    """Set the status the call ends with once its wrapper returns, keeping the trailers
    set so far (the ``peer-sequence`` of an admitted call).

    Cheaper than ``context.abort``, which raises through grpc: a refused call should
    cost no more than an accepted one. grpc sends no response with a status that is
    not OK.
    """
    announced = tuple(context.trailing_metadata() or ())
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata((*status.trailing_metadata, *announced))


def _announcement(server_sequence: int) -> tuple[tuple[str, str], ...]:
    """The ``peer-sequence`` metadata that tells the caller its call was admitted."""
    return ((SEQUENCE_KEY, str(server_sequence)),)


def _shutting_down() -> ShuttingDown:
    # A new one per call: a raised instance keeps its traceback, which would grow.
    return ShuttingDown("the server is shutting down; send the call again elsewhere")


def _handshake_facts(message: Message | None, response: Message | None) -> tuple[str, str]:
    """The session and peer a Handshake's observers are told of: the session it opened
    or named to resume, and the peer it claimed (refused ones too)."""
    if message is None:
        return "", ""
    session_id = message.resume.session_id if message.HasField("resume") else ""  # type: ignore[attr-defined]
    if response is not None:
        session_id = response.session_id  # type: ignore[attr-defined]
    return session_id, message.peer_id  # type: ignore[attr-defined]


# --- one wrapper per method ---------------------------------------------------------


class _MethodGuard:
    """Everything one PeerService method's calls need, worked out once: the servicer
    method, its validator, whether it takes a session, and the call's two shapes."""

    __slots__ = (
        "check_identity",
        "gate",
        "manager",
        "method",
        "needs_credentials",
        "observers",
        "serialize",
        "servicer_method",
        "sessionless_ok",
        "validate",
    )

    def __init__(
        self,
        method: str,
        servicer_method: ServicerMethod,
        serialize: Serializer,
        interceptor: PeerInterceptor,
    ) -> None:
        self.method = method
        self.servicer_method = servicer_method
        self.serialize = serialize
        self.manager = interceptor.manager
        self.validate = interceptor.validators.get(method)
        self.needs_credentials = method not in SESSIONLESS_METHODS
        self.sessionless_ok = method in interceptor.allow_sessionless
        self.check_identity = interceptor.check_identity
        self.observers = interceptor.observers
        self.gate = interceptor.gate

    def _started(self, streaming: bool, context: Context) -> CallStarted:
        started = CallStarted(self.method, streaming, time.perf_counter())
        notify_started(self.observers, started, context)
        return started

    def _ended(
        self,
        started: CallStarted,
        session_id: str,
        peer_id: str,
        error: BaseException | None,
        context: Context,
    ) -> None:
        ended = CallEnded(
            self.method,
            started.streaming,
            session_id,
            peer_id,
            status_code_of_ending(error, context),
            time.perf_counter() - started.at,
            error,
            started,
        )
        notify_ended(self.observers, ended)

    def admit(
        self, credentials: SessionCredentials, request: ReceivedRequest, context: Context
    ) -> Awaitable[Admission]:
        """Admit the call on its session (await the result): the session after it, and
        for a resend the original's outcome to await."""
        return self.manager.admit(
            credentials.session_id,
            credentials.sequence,
            CallKey(self.method, request.digest),
            identity_of(context) if self.check_identity else "",
        )

    async def unary(self, request: ReceivedRequest, context: Context) -> Any:
        """Serve one unary call."""
        if not self.gate.open:
            return _end_with(to_grpc_status(_shutting_down()), context)
        started = self._started(False, context) if self.observers else None
        session_id = peer_id = ""
        message: Message | None = None
        response: Any = None
        admitted: AdmittedCall | None = None  # set while an outcome is owed
        error: BaseException | None = None
        try:
            credentials = (
                read_credentials(self.method, context, self.sessionless_ok)
                if self.needs_credentials
                else None
            )
            if credentials is not None:
                session_id = credentials.session_id
            message = checked_message(request, self.validate)
            if credentials is None:  # a Handshake, or a sessionless Ping or Status
                response = await self.servicer_method(message, context)
                return response
            admission = await self.admit(credentials, request, context)
            session, replay = admission.session, admission.replay
            peer_id = session.peer_id
            if replay is not None:
                return await answer_resend(session, credentials.sequence, replay, context)
            # A unary call's response and status leave together, so the number rides in
            # the trailers: initial metadata of its own would cost the call another batch.
            context.set_trailing_metadata(_announcement(session.sequence_num))
            admitted = AdmittedCall(session, credentials.sequence)
            token = bind_admitted(admitted)
            try:
                response = self.serialize(await self.servicer_method(message, context))
            finally:
                unbind_admitted(token)
            owed, admitted = admitted, None
            await self.manager.record_outcome(
                session_id, owed.sequence, answered(response, session.sequence_num)
            )
            return response
        except BaseException as raised:
            error = await self._failed(raised, admitted, context)
            if not _answered_here(raised):
                raise
        finally:
            if started is not None:
                if not self.needs_credentials:
                    session_id, peer_id = _handshake_facts(message, response)
                self._ended(started, session_id, peer_id, error, context)

    async def stream(self, request: ReceivedRequest, context: Context) -> AsyncIterator[Any]:
        """Serve one server-streaming call. Its messages are not kept, so a resend of
        it is refused as a REPLAY: the caller opens a new stream under a new sequence."""
        if not self.gate.open:
            _end_with(to_grpc_status(_shutting_down()), context)
            return
        started = self._started(True, context) if self.observers else None
        session_id = peer_id = ""
        admitted: AdmittedCall | None = None  # set while an outcome is owed
        error: BaseException | None = None
        try:
            credentials = read_credentials(self.method, context, sessionless_ok=False)
            assert credentials is not None  # no stream goes without a session
            session_id = credentials.session_id
            message = checked_message(request, self.validate)
            admission = await self.admit(credentials, request, context)
            session, replay = admission.session, admission.replay
            peer_id = session.peer_id
            if replay is not None:
                raise replay_refusal(session, credentials.sequence)
            admitted = AdmittedCall(session, credentials.sequence)
            # The caller learns its stream was admitted before the first message comes.
            await context.send_initial_metadata(_announcement(session.sequence_num))
            async for response in _bound(admitted, self.servicer_method(message, context)):
                yield response
            owed, admitted = admitted, None
            await self.manager.record_outcome(
                session_id, owed.sequence, answered(b"", session.sequence_num)
            )
        except BaseException as raised:
            error = await self._failed(raised, admitted, context)
            if not _answered_here(raised):
                raise
        finally:
            if started is not None:
                self._ended(started, session_id, peer_id, error, context)

    async def _failed(
        self, raised: BaseException, admitted: AdmittedCall | None, context: Context
    ) -> BaseException:
        """Deal with a call that raised ``raised``: record how it ended if it was admitted,
        and set the status of a protocol error or a fault. Returns what ended the call,
        for its observers: a store that fails to record is the answer, too."""
        if not isinstance(raised, Exception) or not _answered_here(raised):
            # An abort, a cancellation: grpc ends the call.
            if admitted is not None:
                await self._record_failure(admitted, raised, None, context)
            return raised
        error: BaseException = raised
        status = status_of_error(raised, self.method)
        if admitted is not None:
            try:
                await self._record_failure(admitted, raised, status, context)
            except Exception as unrecorded:
                error, status = unrecorded, status_of_error(unrecorded, self.method)
        _end_with(status, context)
        return error

    async def _record_failure(
        self,
        admitted: AdmittedCall,
        error: BaseException,
        status: GrpcStatus | None,
        context: Context,
    ) -> None:
        """Record how an admitted call that failed ended."""
        session = admitted.session
        outcome = outcome_of_failure(error, status, admitted, session.sequence_num, context)
        await self.manager.record_outcome(session.session_id, admitted.sequence, outcome)


def _answered_here(raised: BaseException) -> bool:
    """Whether the wrapper answers a call that raised ``raised`` with a status of its
    own: a protocol error or a fault. An abort carries its status already, and a
    cancelled call has no one to answer."""
    return isinstance(raised, Exception) and not isinstance(raised, grpc.aio.AbortError)


async def _bound(admitted: AdmittedCall, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Iterate ``stream`` with ``admitted`` bound at every step.

    grpc may advance a response stream from different contexts, so a variable set
    once before the first message could not be reset after the last; binding it
    around each step keeps every set and reset in one context.
    """
    try:
        while True:
            token = bind_admitted(admitted)
            try:
                response = await anext(stream)
            except StopAsyncIteration:
                return
            finally:
                unbind_admitted(token)
            yield response
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


class PeerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Guards every PeerService call with one wrapper per method.

    :class:`~peer_grpc.server.peer_server.PeerServer` wraps the methods once at start-up
    (:meth:`guard`) and registers the result, so that nothing is looked up per call.
    A server assembled by hand may pass this to ``grpc.aio.server(interceptors=...)``
    instead, beside :func:`~peer_grpc.server.handlers.peer_service_handler`: it then
    wraps each method at its first call and reuses the wrapper.

    Args:
        manager: the session manager that admits calls and records their outcomes.
        validators: each method's request rules.
        allow_sessionless: methods that may be called without a session.
        check_identity: whether a call on a session must come from the client
            certificate identity that opened it (mutual TLS).
        observers: told of every call; without any, calls are not timed at all.
        gate: once closed, every call is refused UNAVAILABLE (``SHUTTING_DOWN``).
    """

    def __init__(
        self,
        manager: SessionManager,
        validators: Mapping[str, RequestValidator],
        *,
        allow_sessionless: Collection[str] = (),
        check_identity: bool = False,
        observers: Sequence[CallObserver] = (),
        gate: Gate | None = None,
    ) -> None:
        self.manager = manager
        self.validators = validators
        self.allow_sessionless = frozenset(allow_sessionless)
        self.check_identity = check_identity
        self.observers = tuple(observers)
        self.gate = gate if gate is not None else Gate()
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or not full_method.startswith(_METHOD_PREFIX):
            return handler
        cached = self._wrapped.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(full_method, handler)
        self._wrapped[full_method] = (handler, wrapped)
        return wrapped

    def guard(
        self, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> dict[str, grpc.RpcMethodHandler]:
        """PeerService's method handlers (by method name), each wrapped once, now: what a
        server registers in place of running this as an interceptor on every call."""
        return {
            name: self._wrap(_METHOD_PREFIX + name, handler) for name, handler in handlers.items()
        }

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        method = full_method[len(_METHOD_PREFIX) :]
        if handler.unary_unary is not None:
            serialize = _passing_bytes_through(handler.response_serializer)
            guard = _MethodGuard(method, servicer_method_of(handler.unary_unary), serialize, self)
            return grpc.unary_unary_rpc_method_handler(
                guard.unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=serialize,
            )
        if handler.unary_stream is not None:
            serialize = handler.response_serializer
            guard = _MethodGuard(method, servicer_method_of(handler.unary_stream), serialize, self)
            return grpc.unary_stream_rpc_method_handler(
                guard.stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=serialize,
            )
        # Fail closed: a shape this does not know would go unguarded.
        raise TypeError(f"{full_method}: only unary and server-streaming methods are served")


def _passing_bytes_through(serialize: Serializer | None) -> Serializer:
    """``serialize``, letting through the bytes a wrapper returns already serialized
    (the response recorded for resends)."""
    if serialize is None:
        return lambda response: response

    def serialize_or_pass(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return serialize_or_pass


def peer_interceptor(
    manager: SessionManager,
    validators: Mapping[str, RequestValidator],
    *,
    allow_sessionless: bool = False,
    check_identity: bool = False,
    observers: Sequence[CallObserver] = (),
    gate: Gate | None = None,
) -> PeerInterceptor:
    """The PeerService's interceptor: see :class:`PeerInterceptor`.

    ``allow_sessionless`` lets Ping and Status be called without a session.
    """
    return PeerInterceptor(
        manager,
        validators,
        allow_sessionless=OPTIONALLY_SESSIONLESS_METHODS if allow_sessionless else (),
        check_identity=check_identity,
        observers=observers,
        gate=gate,
    )
