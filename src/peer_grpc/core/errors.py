"""The errors of the peer protocol, free of any transport.

The core raises these; :mod:`peer_grpc.wire.rich_status` maps each one to a gRPC status
with rich details on the server, and back to the same exception on the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "ERROR_DOMAIN",
    "FieldViolation",
    "HandshakeRateLimited",
    "InternalError",
    "InvalidArgument",
    "InvalidSessionState",
    "InvalidTransition",
    "NoCommonProtocolVersion",
    "PeerError",
    "PeerIdNotAllowed",
    "PermissionDenied",
    "RemoteError",
    "SequenceError",
    "SequenceErrorKind",
    "SequenceExhausted",
    "SessionError",
    "SessionExpired",
    "SessionFenced",
    "SessionIdentityMismatch",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionRequired",
    "SessionTerminated",
    "SessionTokenInvalid",
    "ShuttingDown",
    "StoreUnavailable",
    "TaskError",
    "TaskLimitReached",
    "TaskNotCancelable",
    "TaskNotFound",
    "TaskNotWaitingForInput",
]

#: The ``google.rpc.ErrorInfo.domain`` of every error this service reports.
ERROR_DOMAIN = "peer.v1"


class PeerError(Exception):
    """Base class of every error of the peer protocol.

    ``reason`` is the stable, machine-readable name carried as
    ``google.rpc.ErrorInfo.reason``; the message is for people.
    """

    reason: str = "PEER_ERROR"
    #: Seconds the caller should wait before trying again (``google.rpc.RetryInfo``);
    #: None when trying again would not help.
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def error_metadata(self) -> Mapping[str, str]:
        """Extra ``ErrorInfo.metadata`` entries that describe this error."""
        return {}


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field or metadata key (``google.rpc.BadRequest``)."""

    field: str
    description: str


class InvalidArgument(PeerError):
    """The request or its metadata is malformed; each violation names the culprit."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def of(cls, field: str, description: str) -> InvalidArgument:
        """An error with a single violation."""
        return cls([FieldViolation(field, description)])


class SequenceErrorKind(IntEnum):
    """How a received sequence differs from the expected one (mirrors the proto enum)."""

    GAP = 1
    REPLAY = 2


class SequenceError(PeerError):
    """A call carried a sequence number other than the one the session expected."""

    reason = "SEQUENCE_ERROR"

    def __init__(
        self,
        session_id: str,
        expected_sequence: int,
        received_sequence: int,
        kind: SequenceErrorKind,
        *,
        outside_window: bool = False,
        replay_window: int = 0,
    ) -> None:
        self.session_id = session_id
        self.expected_sequence = expected_sequence
        self.received_sequence = received_sequence
        self.kind = kind
        #: For a REPLAY in window mode: it fell behind the window (else: used before).
        self.outside_window = outside_window
        #: The window's width in window mode; 0 in strict mode.
        self.replay_window = replay_window
        super().__init__(
            f"{kind.name}: expected sequence {expected_sequence}, received {received_sequence} "
            f"({self._explain()})"
        )

    def _explain(self) -> str:
        if self.kind is SequenceErrorKind.GAP:
            if self.replay_window:
                return f"more than the window of {self.replay_window} ahead of the highest accepted"
            return "ahead of the expected one"
        if self.outside_window:
            return f"behind the window of {self.replay_window}: too old to accept"
        if self.replay_window:
            return "already accepted"
        return "behind the expected one"

    def error_metadata(self) -> Mapping[str, str]:
        metadata = {
            "expected_sequence": str(self.expected_sequence),
            "received_sequence": str(self.received_sequence),
            "kind": self.kind.name,
        }
        if self.replay_window:
            metadata["replay_window"] = str(self.replay_window)
            metadata["outside_window"] = "true" if self.outside_window else "false"
        return metadata


class SequenceExhausted(PeerError):
    """The session used its last sequence number (2^64-1); sequences never wrap."""

    reason = "SEQUENCE_EXHAUSTED"


class SessionError(PeerError):
    """A call's session is missing or cannot be used."""


class SessionRequired(SessionError):
    """The call needs session metadata and carried none."""

    reason = "SESSION_REQUIRED"


class SessionNotFound(SessionError):
    """No session has the given id (never existed, or forgotten long ago)."""

    reason = "SESSION_NOT_FOUND"


class SessionExpired(SessionError):
    """The session saw no activity within its idle timeout."""

    reason = "SESSION_EXPIRED"


class SessionTerminated(SessionError):
    """The session was terminated, or replaced by a newer handshake of its peer."""

    reason = "SESSION_TERMINATED"


class SessionFenced(SessionError):
    """The store may have lost the session's latest records (its Redis failed over or
    restarted), so its sequences cannot be trusted until the peer resumes it.

    The call did not run. The peer resumes the session, sending the highest sequence
    the server acknowledged to it (``ResumeSession.last_acknowledged``), and sends
    the call again.
    """

    reason = "SESSION_FENCED"


class SessionTokenInvalid(SessionError):
    """A resume named a session with a missing or wrong token (or another peer's session)."""

    reason = "SESSION_TOKEN_INVALID"


class InvalidSessionState(PeerError):
    """The call is not allowed in the session's current state."""

    reason = "INVALID_SESSION_STATE"

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state

    def error_metadata(self) -> Mapping[str, str]:
        return {"state": self.state}


class InvalidTransition(PeerError):
    """A state change that a session's or a task's state machine forbids; never applied."""

    reason = "INVALID_TRANSITION"

    def __init__(self, source: str, target: str, *, subject: str = "session") -> None:
        super().__init__(f"illegal {subject} state transition {source} -> {target}")
        self.source = source
        self.target = target
        #: Whose state machine refused: ``"session"`` or ``"task"``.
        self.subject = subject

    def error_metadata(self) -> Mapping[str, str]:
        return {"from_state": self.source, "to_state": self.target, "subject": self.subject}


class NoCommonProtocolVersion(PeerError):
    """The peer and the server share no protocol version."""

    reason = "NO_COMMON_PROTOCOL_VERSION"

    def __init__(self, offered: Sequence[str], supported: Sequence[str]) -> None:
        self.offered = tuple(offered)
        self.supported = tuple(supported)
        super().__init__(
            f"no common protocol version: the peer offered {', '.join(self.offered)}; "
            f"the server supports {', '.join(self.supported)}"
        )

    def error_metadata(self) -> Mapping[str, str]:
        return {
            "offered_versions": ",".join(self.offered),
            "supported_versions": ",".join(self.supported),
        }


class TaskError(PeerError):
    """A task request that cannot be served."""


class TaskNotFound(TaskError):
    """No task of the caller's has this id (it never existed, was swept, or is another peer's)."""

    reason = "TASK_NOT_FOUND"


class TaskNotCancelable(TaskError):
    """The task already reached a final state, so there is nothing to cancel."""

    reason = "TASK_NOT_CANCELABLE"

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state

    def error_metadata(self) -> Mapping[str, str]:
        return {"state": self.state}


class TaskNotWaitingForInput(TaskError):
    """ProvideInput named a task that asks nothing now (or asks a later question)."""

    reason = "TASK_NOT_WAITING_FOR_INPUT"

    def __init__(self, message: str, state: str, questions_asked: int) -> None:
        super().__init__(message)
        self.state = state
        self.questions_asked = questions_asked

    def error_metadata(self) -> Mapping[str, str]:
        return {"state": self.state, "questions_asked": str(self.questions_asked)}


_LIMIT_TEXT = {
    "server": "{} tasks are already running on this server",
    "session": "{} tasks are already running for this session",
    "queue": "{} tasks are already waiting in the queue, every runner being busy",
}


class TaskLimitReached(TaskError):
    """Too many tasks are running or queued (on the server, for the session, or in the
    shared queue); none was created."""

    reason = "TASK_LIMIT_REACHED"

    def __init__(self, scope: str, limit: int, retry_after: float) -> None:
        super().__init__(
            f"{_LIMIT_TEXT.get(scope, scope).format(limit)}; try again in {retry_after:g}s"
        )
        #: Which limit was reached: ``"server"``, ``"session"`` or ``"queue"``.
        self.scope = scope
        self.limit = limit
        self.retry_after = retry_after

    def error_metadata(self) -> Mapping[str, str]:
        return {"scope": self.scope, "limit": str(self.limit)}


class ShuttingDown(PeerError):
    """The server is stopping and takes no new work; another replica (or a restart) will."""

    reason = "SHUTTING_DOWN"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(PeerError):
    """The session or task store cannot be reached (Redis down, failing over, or too slow).

    Nothing is known to have changed: the caller sends the same call again after
    ``retry_after`` seconds, and a resend of a call that did run gets its outcome.
    """

    reason = "STORE_UNAVAILABLE"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermissionDenied(PeerError):
    """The caller's identity (its client certificate) may not do this; nothing changed."""

    reason = "PERMISSION_DENIED"


class SessionIdentityMismatch(PermissionDenied):
    """A call on a session that another identity opened."""

    reason = "SESSION_IDENTITY_MISMATCH"


class PeerIdNotAllowed(PermissionDenied):
    """A Handshake claimed a peer_id that the caller's identity may not speak for."""

    reason = "PEER_ID_NOT_ALLOWED"


class SessionLimitReached(PeerError):
    """The server holds as many live sessions as it may; no session was opened."""

    reason = "SESSION_LIMIT_REACHED"

    def __init__(self, limit: int, retry_after: float = 5.0) -> None:
        super().__init__(
            f"the server holds its maximum of {limit} live sessions; "
            f"try again in {retry_after:g}s or terminate an idle session"
        )
        self.limit = limit
        self.retry_after = retry_after

    def error_metadata(self) -> Mapping[str, str]:
        return {"limit": str(self.limit)}


class HandshakeRateLimited(PeerError):
    """Handshakes came faster than allowed for a peer_id or a client; none was served."""

    reason = "HANDSHAKE_RATE_LIMITED"

    def __init__(self, scope: str, retry_after: float) -> None:
        whose = "this peer_id" if scope == "peer" else "this client"
        super().__init__(f"too many handshakes from {whose}; try again in {retry_after:.3g}s")
        #: Whose rate was exceeded: ``"peer"`` (the claimed peer_id) or ``"client"``
        #: (the client's certificate identity, else its address).
        self.scope = scope
        self.retry_after = retry_after

    def error_metadata(self) -> Mapping[str, str]:
        return {"scope": self.scope}


class InternalError(PeerError):
    """A fault inside the server; its details are logged, never sent."""

    reason = "INTERNAL"


class RemoteError(PeerError):
    """A failed call whose status carries none of this protocol's details.

    The client raises it for transport failures (``UNAVAILABLE``, deadlines, ...);
    ``code`` is the gRPC status code's name, e.g. ``"UNAVAILABLE"``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = code
