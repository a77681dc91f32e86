"""The one place that maps protocol errors to gRPC statuses with rich details, and back.

Servers abort with :func:`to_grpc_status`; clients turn a failed call back into the
same typed exception with :func:`error_from_rpc_error`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.errors import (
    ERROR_DOMAIN,
    FieldViolation,
    HandshakeRateLimited,
    InternalError,
    InvalidArgument,
    InvalidSessionState,
    InvalidTransition,
    NoCommonProtocolVersion,
    PeerError,
    PeerIdNotAllowed,
    PermissionDenied,
    RemoteError,
    SequenceError,
    SequenceErrorKind,
    SequenceExhausted,
    SessionExpired,
    SessionFenced,
    SessionIdentityMismatch,
    SessionLimitReached,
    SessionNotFound,
    SessionRequired,
    SessionTerminated,
    SessionTokenInvalid,
    ShuttingDown,
    StoreUnavailable,
    TaskLimitReached,
    TaskNotCancelable,
    TaskNotFound,
    TaskNotWaitingForInput,
)
from peer_grpc.core.metadata import SEQUENCE_KEY
from peer_grpc.core.retry import CallEnd, CallOutcome

__all__ = [
    "DETAILS_KEY",
    "GrpcStatus",
    "error_from_rpc_error",
    "failed_outcome",
    "status_code_of",
    "status_of_outcome",
    "to_grpc_status",
]

#: The gRPC status code of each protocol error; subclasses inherit their base's code.
STATUS_CODES: Mapping[type[PeerError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    SequenceError: grpc.StatusCode.ABORTED,
    SessionRequired: grpc.StatusCode.UNAUTHENTICATED,
    SessionNotFound: grpc.StatusCode.UNAUTHENTICATED,
    SessionExpired: grpc.StatusCode.UNAUTHENTICATED,
    SessionTerminated: grpc.StatusCode.UNAUTHENTICATED,
    SessionTokenInvalid: grpc.StatusCode.UNAUTHENTICATED,
    SessionFenced: grpc.StatusCode.FAILED_PRECONDITION,
    SequenceExhausted: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidSessionState: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidTransition: grpc.StatusCode.FAILED_PRECONDITION,
    NoCommonProtocolVersion: grpc.StatusCode.FAILED_PRECONDITION,
    TaskNotFound: grpc.StatusCode.NOT_FOUND,
    TaskNotCancelable: grpc.StatusCode.FAILED_PRECONDITION,
    TaskNotWaitingForInput: grpc.StatusCode.FAILED_PRECONDITION,
    TaskLimitReached: grpc.StatusCode.RESOURCE_EXHAUSTED,
    SessionLimitReached: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HandshakeRateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    InternalError: grpc.StatusCode.INTERNAL,
}


#: The trailer that carries a status's details: a serialized ``google.rpc.Status``.
DETAILS_KEY = "grpc-status-details-bin"
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_NUMBERS = {code: number for number, code in _STATUS_BY_NUMBER.items()}
#: Detail type URLs, made once rather than by ``Any.Pack`` on every refusal.
_TYPE_URL = "type.googleapis.com/"
_BAD_REQUEST_URL = _TYPE_URL + error_details_pb2.BadRequest.DESCRIPTOR.full_name
_ERROR_INFO_URL = _TYPE_URL + error_details_pb2.ErrorInfo.DESCRIPTOR.full_name
_RETRY_INFO_URL = _TYPE_URL + error_details_pb2.RetryInfo.DESCRIPTOR.full_name
_SEQUENCE_ERROR_URL = _TYPE_URL + peer_pb2.SequenceError.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class GrpcStatus(grpc.Status):  # type: ignore[misc]
    """A status to end a call with (grpc.Status is an interface without a constructor)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()


def status_code_of(error: PeerError) -> grpc.StatusCode:
    """The status code for ``error``: that of the nearest class in :data:`STATUS_CODES`."""
    code = _CODE_BY_CLASS.get(type(error))
    if code is None:
        code = _CODE_BY_CLASS[type(error)] = _nearest_code(type(error))
    return code


def _nearest_code(cls: type[PeerError]) -> grpc.StatusCode:
    for base in cls.__mro__:
        code = STATUS_CODES.get(base)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


#: Each error class's code, found once (a class's code never changes).
_CODE_BY_CLASS: dict[type[PeerError], grpc.StatusCode] = {}


def to_grpc_status(error: PeerError) -> GrpcStatus:
    """The status a server aborts with for ``error``, details in ``grpc-status-details-bin``."""
    code = status_code_of(error)
    status = status_pb2.Status(code=_NUMBERS[code], message=error.message)
    details = status.details
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.add(type_url=_BAD_REQUEST_URL, value=bad_request.SerializeToString())
    else:
        info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
        entries = info.metadata
        for key, value in error.error_metadata().items():  # the map's own update is Python
            entries[key] = value
        details.add(type_url=_ERROR_INFO_URL, value=info.SerializeToString())
    if error.retry_after is not None:
        retry_info = error_details_pb2.RetryInfo()
        retry_info.retry_delay.FromNanoseconds(round(error.retry_after * 1e9))
        details.add(type_url=_RETRY_INFO_URL, value=retry_info.SerializeToString())
    if isinstance(error, SequenceError):
        typed = peer_pb2.SequenceError(
            session_id=error.session_id,
            expected_sequence=error.expected_sequence,
            received_sequence=error.received_sequence,
            kind=_KIND_NAMES[error.kind],
            outside_window=error.outside_window,
            replay_window=error.replay_window,
        )
        details.add(type_url=_SEQUENCE_ERROR_URL, value=typed.SerializeToString())
    return GrpcStatus(code, error.message, ((DETAILS_KEY, status.SerializeToString()),))


_KIND_NAMES = {kind: f"SEQUENCE_ERROR_KIND_{kind.name}" for kind in SequenceErrorKind}


def failed_outcome(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
    server_sequence: int,
) -> CallOutcome:
    """The outcome of an admitted call that failed with this status, for resends of it.

    The status is kept as a ``google.rpc.Status``: its details if it had any (the
    ``grpc-status-details-bin`` trailer already is one), else its code and message;
    its other trailers are kept beside it, but for ``peer-sequence``, which a resend's
    answer announces itself.
    """
    status = b""
    others: list[tuple[str, str | bytes]] = []
    for key, value in trailing_metadata or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = value
        elif key != SEQUENCE_KEY:
            others.append((key, value))
    if not status:
        status = status_pb2.Status(code=_NUMBERS[code], message=message).SerializeToString()
    return CallOutcome(CallEnd.FAILED, b"", status, server_sequence, tuple(others))


def status_of_outcome(outcome: CallOutcome) -> GrpcStatus:
    """The status a resend gets for an accepted call that did not end ANSWERED."""
    if outcome.end is CallEnd.NOT_RUN:
        return GrpcStatus(grpc.StatusCode.UNAVAILABLE, outcome.message)
    if outcome.end is not CallEnd.FAILED:
        return GrpcStatus(grpc.StatusCode.ABORTED, outcome.message)
    status = status_pb2.Status.FromString(outcome.status)
    code = _STATUS_BY_NUMBER.get(status.code, grpc.StatusCode.ABORTED)
    details = ((DETAILS_KEY, outcome.status),) if status.details else ()
    return GrpcStatus(code, status.message, (*details, *outcome.trailers))


_Decoder = Callable[[str, Mapping[str, str], peer_pb2.SequenceError | None], PeerError]


def _sequence_error(
    message: str, meta: Mapping[str, str], typed: peer_pb2.SequenceError | None
) -> PeerError:
    if typed is not None:
        return SequenceError(
            typed.session_id,
            typed.expected_sequence,
            typed.received_sequence,
            SequenceErrorKind(typed.kind),
            outside_window=typed.outside_window,
            replay_window=typed.replay_window,
        )
    return SequenceError(
        "",
        int(meta["expected_sequence"]),
        int(meta["received_sequence"]),
        SequenceErrorKind[meta["kind"]],
        outside_window=meta.get("outside_window") == "true",
        replay_window=int(meta.get("replay_window", "0")),
    )


def _with_message(cls: Callable[[str], PeerError]) -> _Decoder:
    return lambda message, _meta, _typed: cls(message)


_DECODERS: Mapping[str, _Decoder] = {
    SequenceError.reason: _sequence_error,
    SessionRequired.reason: _with_message(SessionRequired),
    SessionNotFound.reason: _with_message(SessionNotFound),
    SessionExpired.reason: _with_message(SessionExpired),
    SessionTerminated.reason: _with_message(SessionTerminated),
    SessionTokenInvalid.reason: _with_message(SessionTokenInvalid),
    SessionFenced.reason: _with_message(SessionFenced),
    SequenceExhausted.reason: _with_message(SequenceExhausted),
    InternalError.reason: _with_message(InternalError),
    InvalidSessionState.reason: lambda message, meta, _: InvalidSessionState(
        message, meta.get("state", "")
    ),
    InvalidTransition.reason: lambda _message, meta, _: InvalidTransition(
        meta.get("from_state", ""), meta.get("to_state", ""), subject=meta.get("subject", "session")
    ),
    TaskNotFound.reason: _with_message(TaskNotFound),
    TaskNotCancelable.reason: lambda message, meta, _: TaskNotCancelable(
        message, meta.get("state", "")
    ),
    TaskNotWaitingForInput.reason: lambda message, meta, _: TaskNotWaitingForInput(
        message, meta.get("state", ""), int(meta.get("questions_asked", "0") or 0)
    ),
    TaskLimitReached.reason: lambda _message, meta, _: TaskLimitReached(
        meta.get("scope", ""), int(meta.get("limit", "0") or 0), 0.0
    ),
    ShuttingDown.reason: _with_message(ShuttingDown),
    PermissionDenied.reason: _with_message(PermissionDenied),
    SessionIdentityMismatch.reason: _with_message(SessionIdentityMismatch),
    PeerIdNotAllowed.reason: _with_message(PeerIdNotAllowed),
    SessionLimitReached.reason: lambda _message, meta, _: SessionLimitReached(
        int(meta.get("limit", "0") or 0)
    ),
    HandshakeRateLimited.reason: lambda _message, meta, _: HandshakeRateLimited(
        meta.get("scope", ""), 0.0
    ),
    StoreUnavailable.reason: _with_message(StoreUnavailable),
    NoCommonProtocolVersion.reason: lambda _message, meta, _: NoCommonProtocolVersion(
        meta.get("offered_versions", "").split(","), meta.get("supported_versions", "").split(",")
    ),
}


def error_from_rpc_error(error: grpc.RpcError) -> PeerError:
    """Turn a failed call back into the typed exception the server raised.

    A status without this protocol's details becomes a :class:`RemoteError`
    carrying the status code's name and message.
    """
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    if status is not None:
        decoded = _decode_details(status)
        if decoded is not None:
            return decoded
    return RemoteError(code.name, message)


def _decode_details(status: status_pb2.Status) -> PeerError | None:
    info: error_details_pb2.ErrorInfo | None = None
    typed: peer_pb2.SequenceError | None = None
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
            if violations and status.code == code_pb2.INVALID_ARGUMENT:
                return InvalidArgument(violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(peer_pb2.SequenceError.DESCRIPTOR):
            typed = peer_pb2.SequenceError()
            detail.Unpack(typed)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            retry_after = retry_info.retry_delay.ToNanoseconds() / 1e9
    if info is None or info.domain != ERROR_DOMAIN:
        return None
    decoder = _DECODERS.get(info.reason)
    if decoder is None:
        return None
    error = decoder(status.message, info.metadata, typed)
    if retry_after is not None:
        error.retry_after = retry_after
    # The server's words, not a re-rendering of them from the details.
    error.message = status.message
    error.args = (status.message,)
    return error
