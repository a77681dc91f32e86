"""Server interceptors: the gRPC glue that guards every PeerService call.

In this order (:func:`peer_interceptors`, which chains them into one grpc
interceptor so that grpc enters one per call):

1. :class:`ErrorStatusInterceptor` turns protocol errors into rich statuses.
   :class:`ObservingInterceptor` comes next when metrics, call logs or traces are
   on: it times each call and tells the observers how it ended.
2. :class:`SessionMetadataInterceptor` parses the session metadata and turns
   away calls that need a session and carry none, before their body is looked at.
3. :class:`RequestValidationInterceptor` rejects undecodable or invalid requests.
4. :class:`SessionInterceptor` admits the call's identity (under mutual TLS),
   session and sequence in one atomic store step and hands the session to the
   servicer, or answers a resend of an accepted call with that call's outcome.

A call rejected by any of them never reaches a servicer and changes no session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextvars import Token
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc
import grpc.aio

from peer_grpc.core.errors import (
    InternalError,
    PeerError,
    SequenceError,
    SequenceErrorKind,
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
from peer_grpc.core.retry import FORGOTTEN, NOT_RUN, CallKey, CallOutcome
from peer_grpc.core.session import Session
from peer_grpc.observability.calls import CallObserver, ObservedCall, notify_ended, notify_started
from peer_grpc.server.call_context import (
    NOT_PARSED,
    CallRecord,
    bind_call_facts,
    bind_call_record,
    bind_credentials,
    bind_session,
    current_call_facts,
    current_credentials,
    unbind_call_facts,
    unbind_call_record,
    unbind_credentials,
    unbind_session,
)
from peer_grpc.server.handlers import ReceivedRequest
from peer_grpc.server.validation import RequestValidator
from peer_grpc.sessions.manager import SessionManager
from peer_grpc.wire.contract import SERVICE_NAME
from peer_grpc.wire.rich_status import to_grpc_status
from peer_grpc.wire.tls import identity_of

__all__ = [
    "ErrorStatusInterceptor",
    "Gate",
    "ObservingInterceptor",
    "RequestValidationInterceptor",
    "SessionInterceptor",
    "SessionMetadataInterceptor",
    "peer_interceptors",
]

log = logging.getLogger(__name__)

_Value = TypeVar("_Value")
Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
Serializer = Callable[[Any], bytes]
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_METHOD_PREFIX = f"/{SERVICE_NAME}/"
#: Methods that open sessions and so carry none.
SESSIONLESS_METHODS = frozenset({"Handshake"})
#: Methods that ``allow_sessionless`` lets older peers call without a session.
OPTIONALLY_SESSIONLESS_METHODS = frozenset({"Ping", "Status"})


class _MethodWrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps PeerService's handlers, once per method: unary ones with :meth:`wrap`,
    server-streaming ones with :meth:`wrap_stream`."""

    def __init__(self) -> None:
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
        method = full_method[len(_METHOD_PREFIX) :]
        if handler.unary_unary is not None:
            serialize = _passing_bytes_through(handler.response_serializer)
            wrapped = grpc.unary_unary_rpc_method_handler(
                self.wrap(method, handler.unary_unary, serialize),
                request_deserializer=handler.request_deserializer,
                response_serializer=serialize,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self.wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        else:  # fail closed: a shape no interceptor here knows would go unguarded
            raise TypeError(f"{full_method}: only unary and server-streaming methods are served")
        self._wrapped[full_method] = (handler, wrapped)
        return wrapped

    def wrap(self, method: str, behavior: Behavior, serialize: Serializer) -> Behavior:
        """Return the unary ``behavior`` wrapped for PeerService method ``method``.

        ``serialize`` turns the method's responses into bytes; a wrapper may also
        return bytes, which go out as they are.
        """
        raise NotImplementedError

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        """Return the server-streaming ``behavior`` wrapped for PeerService method ``method``."""
        raise NotImplementedError


def _passing_bytes_through(serialize: Serializer | None) -> Serializer:
    if serialize is None:
        return lambda response: response
    if getattr(serialize, "passes_bytes", False):
        return serialize

    def serialize_or_pass(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    serialize_or_pass.passes_bytes = True  # type: ignore[attr-defined]
    return serialize_or_pass


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


def _shutting_down() -> ShuttingDown:
    # A new one per call: a raised instance keeps its traceback, which would grow.
    return ShuttingDown("the server is shutting down; send the call again elsewhere")


class ErrorStatusInterceptor(_MethodWrappingInterceptor):
    """Aborts with the rich status of any :class:`PeerError` raised further in, and
    refuses every call once ``gate`` is closed.

    Anything else that escapes is a server fault: it is logged with its traceback
    and answered INTERNAL without details.
    """

    def __init__(self, gate: Gate | None = None) -> None:
        super().__init__()
        self._gate = gate if gate is not None else Gate()

    def wrap(self, method: str, behavior: Behavior, serialize: Serializer) -> Behavior:
        gate = self._gate

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if not gate.open:
                    raise _shutting_down()
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort_for(error, method, context)

        return guarded

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        gate = self._gate

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                if not gate.open:
                    raise _shutting_down()
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort_for(error, method, context)

        return guarded


async def _abort_for(error: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
    """Abort the call with the status ``error`` deserves, keeping the trailers set so far
    (the ``peer-sequence`` of an admitted call)."""
    if not isinstance(error, PeerError):
        log.exception("unhandled error in %s", method, exc_info=error)
        error = InternalError("internal error")
    status = to_grpc_status(error)
    announced = tuple(context.trailing_metadata() or ())
    if announced:
        status = _Status(status.code, status.details, (*status.trailing_metadata, *announced))
    await context.abort_with_status(status)


@dataclass(frozen=True, slots=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class ObservingInterceptor(_MethodWrappingInterceptor):
    """Times every call and tells the :class:`CallObserver` s how it ended.

    The call's :class:`ObservedCall` is bound as its :class:`CallFacts`, which the
    session interceptor fills in with the session and its peer.
    """

    def __init__(self, observers: Sequence[CallObserver]) -> None:
        super().__init__()
        self._observers = tuple(observers)

    def wrap(self, method: str, behavior: Behavior, serialize: Serializer) -> Behavior:
        observers = self._observers

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = ObservedCall(method=method, started=time.perf_counter())
            notify_started(observers, call, context)
            token = bind_call_facts(call)
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                unbind_call_facts(token)
                call.ended(error, context)
                notify_ended(observers, call)
                call.forget()

        return observed

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        observers = self._observers

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = ObservedCall(method=method, streaming=True, started=time.perf_counter())
            notify_started(observers, call, context)
            error: BaseException | None = None
            try:
                stream = behavior(request, context)
                async for response in _bound(bind_call_facts, unbind_call_facts, call, stream):  # type: ignore[arg-type]
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                call.ended(error, context)
                notify_ended(observers, call)
                call.forget()

        return observed


class RequestValidationInterceptor(_MethodWrappingInterceptor):
    """Rejects requests that do not decode, or whose fields break the method's rules."""

    def __init__(self, validators: Mapping[str, RequestValidator]) -> None:
        super().__init__()
        self._validators = validators

    def wrap(self, method: str, behavior: Behavior, serialize: Serializer) -> Behavior:
        validate = self._validators.get(method)

        async def validated(request: ReceivedRequest, context: grpc.aio.ServicerContext) -> Any:
            self._check(validate, request)
            return await behavior(request, context)

        return validated

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        validate = self._validators.get(method)

        async def validated(
            request: ReceivedRequest, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            self._check(validate, request)
            async for response in behavior(request, context):
                yield response

        return validated

    @staticmethod
    def _check(validate: RequestValidator | None, request: ReceivedRequest) -> None:
        message = request.decoded()
        if validate is not None:
            validate(message)


class SessionMetadataInterceptor(_MethodWrappingInterceptor):
    """Parses each call's session metadata; refuses calls that need a session and lack one.

    The parsed credentials are bound for :class:`SessionInterceptor`, so metadata
    is read once per call.
    """

    def __init__(self, *, allow_sessionless: Collection[str] = ()) -> None:
        super().__init__()
        self._allow_sessionless = frozenset(allow_sessionless)

    def wrap(self, method: str, behavior: Behavior, serialize: Serializer) -> Behavior:
        if method in SESSIONLESS_METHODS:
            return behavior
        sessionless_ok = method in self._allow_sessionless

        async def parsed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = bind_credentials(_credentials_of(method, context, sessionless_ok))
            try:
                return await behavior(request, context)
            finally:
                unbind_credentials(token)

        return parsed

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        async def parsed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            credentials = _credentials_of(method, context, sessionless_ok=False)
            stream = behavior(request, context)
            async for response in _bound(bind_credentials, unbind_credentials, credentials, stream):
                yield response

        return parsed


def _credentials_of(
    method: str, context: grpc.aio.ServicerContext, sessionless_ok: bool
) -> SessionCredentials | None:
    """The call's session metadata; SessionRequired if it has none and must."""
    credentials = parse_session_metadata(context.invocation_metadata())
    if credentials is None:
        if not sessionless_ok:
            raise SessionRequired(
                f"{method} needs the {SESSION_ID_KEY} and {SEQUENCE_KEY} metadata from a Handshake"
            )
        return None
    facts = current_call_facts()
    if facts is not None:  # from here on, even a refused call is told by its session
        facts.session_id = credentials.session_id
    return credentials


class SessionInterceptor(_MethodWrappingInterceptor):
    """Admits each call's session and sequence before its servicer runs.

    The admitted session is bound for the servicer (see
    :func:`peer_grpc.server.call_context.current_session`), and the server's own sequence
    number for the response goes out as ``peer-sequence``: in the trailing metadata
    of a unary call, in the initial metadata of a stream. The
    call's outcome is recorded, so that a resend of it (same sequence, method and
    bytes) is answered with the same outcome instead of running again. Calls
    without credentials got here only if their method may go sessionless. A
    streaming call is admitted the same way before its first message; its
    messages are not kept, so a resend of it is refused as a REPLAY.
    """

    def __init__(self, manager: SessionManager, *, check_identity: bool = False) -> None:
        super().__init__()
        self._manager = manager
        # Off without mutual TLS: no call has a certificate identity to compare.
        self._check_identity = check_identity

    def wrap(self, method: str, behavior: Behavior, serialize: Serializer) -> Behavior:
        if method in SESSIONLESS_METHODS:
            return behavior
        manager = self._manager
        check_identity = self._check_identity

        async def admitted(request: ReceivedRequest, context: grpc.aio.ServicerContext) -> Any:
            credentials = _parsed_credentials()
            if credentials is None:
                return await behavior(request, context)
            facts = current_call_facts()
            sequence = credentials.sequence
            admission = await manager.admit(
                credentials.session_id,
                sequence,
                CallKey(method, request.digest),
                identity_of(context) if check_identity else "",
            )
            session = admission.session
            if facts is not None:
                facts.peer_id = session.peer_id
            if admission.replay is not None:
                return await _answer_resend(session, sequence, admission.replay, context)
            served = _Serving(manager, session, sequence)
            # A unary call's response and status leave together, so the number rides in
            # the trailers: initial metadata of its own would cost the call another batch.
            context.set_trailing_metadata(served.announcement)
            session_token = bind_session(session)
            record_token = bind_call_record(served.record)
            try:
                response = serialize(await behavior(request, context))
            except BaseException as error:
                await served.ended_by(error, context)
                raise
            finally:
                unbind_call_record(record_token)
                unbind_session(session_token)
            await served.answered(response)
            return response

        return admitted

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        manager = self._manager
        check_identity = self._check_identity

        async def admitted(
            request: ReceivedRequest, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            credentials = _parsed_credentials()
            if credentials is None:  # the metadata interceptor lets no stream through without
                raise InternalError(f"{method} reached admission without a session")
            facts = current_call_facts()
            sequence = credentials.sequence
            admission = await manager.admit(
                credentials.session_id,
                sequence,
                CallKey(method, request.digest),
                identity_of(context) if check_identity else "",
            )
            session = admission.session
            if facts is not None:
                facts.peer_id = session.peer_id
            if admission.replay is not None:
                # A stream's messages are not kept, so a resend cannot be answered from
                # the record: the caller opens a new stream under a new sequence.
                raise _replay(session, sequence)
            served = _Serving(manager, session, sequence)
            # The caller learns its stream was admitted before the first message comes.
            await context.send_initial_metadata(served.announcement)
            try:
                stream = behavior(request, context)
                bound = _bound(bind_session, unbind_session, session, stream)  # type: ignore[arg-type]
                async for response in bound:
                    yield response
            except BaseException as error:
                await served.ended_by(error, context)
                raise
            await served.answered(b"")

        return admitted


async def _bound(
    bind: Callable[[_Value], Token[_Value]],
    unbind: Callable[[Token[_Value]], None],
    value: _Value,
    stream: AsyncIterator[Any],
) -> AsyncIterator[Any]:
    """Iterate ``stream`` with ``value`` bound to its context variable at every step.

    grpc may advance a response stream from different contexts, so a variable set
    once before the first message could not be reset after the last; binding it
    around each step keeps every set and reset in one context.
    """
    try:
        while True:
            token = bind(value)
            try:
                response = await anext(stream)
            except StopAsyncIteration:
                return
            finally:
                unbind(token)
            yield response
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def _replay(session: Session, sequence: int) -> SequenceError:
    """The error for a call that reuses ``sequence`` and cannot be answered from the record."""
    return SequenceError(
        session.session_id,
        session.expected_sequence,
        sequence,
        SequenceErrorKind.REPLAY,
        replay_window=session.window,
    )


def _parsed_credentials() -> SessionCredentials | None:
    credentials = current_credentials()
    if credentials is NOT_PARSED:  # fail closed if the interceptors are misassembled
        raise InternalError("SessionMetadataInterceptor must run before SessionInterceptor")
    return credentials


class _Serving:
    """An admitted call being served: it records how the call ended, so that a resend
    of it gets the same answer."""

    __slots__ = ("announcement", "manager", "record", "sequence", "server_sequence", "session_id")

    def __init__(self, manager: SessionManager, session: Session, sequence: int) -> None:
        self.manager = manager
        self.session_id = session.session_id
        self.sequence = sequence
        self.server_sequence = session.sequence_num
        #: The ``peer-sequence`` metadata that tells the caller its call was admitted.
        self.announcement = ((SEQUENCE_KEY, str(self.server_sequence)),)
        self.record = CallRecord()

    async def answered(self, response: bytes) -> None:
        """The call succeeded with ``response`` (serialized; empty for a stream)."""
        await self._remember(CallOutcome(0, response, server_sequence=self.server_sequence))

    async def ended_by(self, error: BaseException, context: grpc.aio.ServicerContext) -> None:
        """The call ended with ``error``: an abort, a protocol error, a fault, or a
        cancellation (its caller gone)."""
        await self._remember(self._outcome_of(error, context))

    def _outcome_of(self, error: BaseException, context: grpc.aio.ServicerContext) -> CallOutcome:
        made = self.record.if_interrupted
        done = made().SerializeToString() if made is not None else b""
        if isinstance(error, grpc.aio.AbortError):
            return _outcome_of_abort(context)
        if isinstance(error, StoreUnavailable):
            # The store failed mid-call. Unless the call's effect is known to be done (then
            # a resend learns it), the call is marked as not run, so that a resend runs it.
            return CallOutcome(code=0, response=done) if done else NOT_RUN
        if isinstance(error, PeerError):
            return _outcome_of_status(to_grpc_status(error))
        if isinstance(error, Exception):
            return _outcome_of_status(to_grpc_status(InternalError("internal error")))
        # Cancelled, or torn down: the effect is unknown unless the method said otherwise.
        return CallOutcome(code=0, response=done) if done else _INTERRUPTED

    async def _remember(self, outcome: CallOutcome) -> None:
        if outcome.server_sequence != self.server_sequence:
            outcome = replace(outcome, server_sequence=self.server_sequence)
        await self.manager.record_outcome(self.session_id, self.sequence, outcome)


#: The outcome of a call that never finished (cancelled, or its task torn down).
_INTERRUPTED = CallOutcome(
    code=grpc.StatusCode.ABORTED.value[0],
    message="the original call with this sequence was interrupted; its effect is unknown",
)


def _outcome_of_status(status: grpc.Status) -> CallOutcome:
    return CallOutcome(
        code=status.code.value[0],
        message=status.details,
        trailing_metadata=tuple(status.trailing_metadata),
    )


def _outcome_of_abort(context: grpc.aio.ServicerContext) -> CallOutcome:
    code = context.code() or grpc.StatusCode.UNKNOWN
    number = code.value[0] if isinstance(code, grpc.StatusCode) else int(code)
    # Without the announcement: a resend's answer announces the number itself.
    trailing = tuple(
        (key, value) for key, value in context.trailing_metadata() or () if key != SEQUENCE_KEY
    )
    return CallOutcome(code=number, message=context.details() or "", trailing_metadata=trailing)


async def _answer_resend(
    session: Session,
    sequence: int,
    replay: Awaitable[CallOutcome],
    context: grpc.aio.ServicerContext,
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
    if outcome == FORGOTTEN:  # more calls were accepted since than the record holds
        raise _replay(session, sequence)
    announced = ((SEQUENCE_KEY, str(outcome.server_sequence)),) if outcome.server_sequence else ()
    if outcome.code == 0:
        context.set_trailing_metadata(announced)
        return outcome.response
    await context.abort(
        _STATUS_BY_NUMBER.get(outcome.code, grpc.StatusCode.ABORTED),
        outcome.message,
        trailing_metadata=(*outcome.trailing_metadata, *announced),
    )
    raise AssertionError("unreachable: abort raises")


class _Chain(_MethodWrappingInterceptor):
    """Several method-wrapping interceptors served as one.

    Each method's handler is wrapped by every link once, outermost first, and the
    result reused: grpc then runs one interceptor per call instead of one per
    concern, which it would otherwise enter and leave on every call.
    """

    def __init__(self, links: Sequence[_MethodWrappingInterceptor]) -> None:
        super().__init__()
        self._links = tuple(links)

    def wrap(self, method: str, behavior: Behavior, serialize: Serializer) -> Behavior:
        for link in reversed(self._links):
            behavior = link.wrap(method, behavior, serialize)
        return behavior

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        for link in reversed(self._links):
            behavior = link.wrap_stream(method, behavior)
        return behavior


def peer_interceptors(
    manager: SessionManager,
    validators: Mapping[str, RequestValidator],
    *,
    allow_sessionless: bool = False,
    check_identity: bool = False,
    observers: Sequence[CallObserver] = (),
    gate: Gate | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The PeerService's interceptors, in the order they must run (chained into one).

    With ``check_identity`` (mutual TLS), a call on a session must come from the
    client certificate identity that opened it. ``observers`` are told of every
    call; without any, calls are not timed at all. Once ``gate`` closes, every call
    is refused UNAVAILABLE (``SHUTTING_DOWN``).
    """
    observing = [ObservingInterceptor(observers)] if observers else []
    chain = _Chain(
        [
            ErrorStatusInterceptor(gate),
            *observing,
            SessionMetadataInterceptor(
                allow_sessionless=OPTIONALLY_SESSIONLESS_METHODS if allow_sessionless else ()
            ),
            RequestValidationInterceptor(validators),
            SessionInterceptor(manager, check_identity=check_identity),
        ]
    )
    return [chain]
