"""The session model: its states and their machine, what a session is, when it may carry a call."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from peer_grpc.core.errors import (
    InvalidSessionState,
    SessionExpired,
    SessionIdentityMismatch,
    SessionNotFound,
    SessionTerminated,
)
from peer_grpc.core.sequence import FIRST_SEQUENCE
from peer_grpc.core.state_machine import StateMachine

__all__ = [
    "SESSION_MACHINE",
    "Session",
    "SessionState",
    "SessionStats",
    "capped_deadline",
    "check_owner",
    "check_usable",
    "expiry_cause",
    "identity_mismatch",
    "short_id",
]


class SessionState(IntEnum):
    """Where a session stands; the values are those of ``peer.v1.SessionState``."""

    INITIAL = 1
    HANDSHAKE_SENT = 2
    ESTABLISHED = 3
    TERMINATED = 4
    EXPIRED = 5

    @property
    def is_final(self) -> bool:
        """Whether no transition leaves this state."""
        return SESSION_MACHINE.is_final(self)

    @property
    def accepts_calls(self) -> bool:
        """Whether sequenced calls may be made on a session in this state."""
        return self in (SessionState.HANDSHAKE_SENT, SessionState.ESTABLISHED)


#: The session state machine: every legal transition. Anything else is refused with
#: InvalidTransition (``SESSION_MACHINE.check(source, target)``).
SESSION_MACHINE = StateMachine(
    "session",
    {
        # A handshake that never got its reply out (cancelled, or overtaken by a newer
        # handshake of the same peer) must still be able to end, or it would leak.
        SessionState.INITIAL: {
            SessionState.HANDSHAKE_SENT,
            SessionState.TERMINATED,
            SessionState.EXPIRED,
        },
        SessionState.HANDSHAKE_SENT: {
            SessionState.ESTABLISHED,
            SessionState.TERMINATED,
            SessionState.EXPIRED,
        },
        SessionState.ESTABLISHED: {SessionState.TERMINATED, SessionState.EXPIRED},
        SessionState.TERMINATED: set(),
        SessionState.EXPIRED: set(),
    },
)


@dataclass(slots=True)
class Session:
    """A snapshot of one session. Stores hand out snapshots, never live records: each
    is a copy of its own, and changing it changes nothing stored. (Not a frozen
    dataclass: a frozen one costs eight times as much to build, and every call
    builds two.) Treat it as a value; :func:`dataclasses.replace` makes a changed copy.

    Times are seconds since the Unix epoch, read from the server's clock.
    """

    session_id: str
    peer_id: str
    state: SessionState
    protocol_version: str
    capabilities: tuple[str, ...]
    created_at: float
    last_activity: float
    #: The idle deadline: activity and heartbeats push it forward.
    expires_at: float
    #: The last sequence number the server sent on this session (0: none yet).
    sequence_num: int = 0
    #: When the session reached TERMINATED or EXPIRED (0 while live).
    ended_at: float = 0.0
    #: The anti-replay window's width in window mode; 0 in strict mode.
    window: int = 0
    #: The highest sequence accepted so far (0: none yet).
    highest_accepted: int = 0
    #: SHA-256 of the session token that allows resuming it; empty: cannot be resumed.
    token_hash: bytes = b""
    #: The client certificate identity that opened the session (mutual TLS); every
    #: later call must come from it. Empty without mutual TLS.
    identity: str = ""
    #: The absolute end of the session's life, however active it is (0: none).
    #: The idle deadline never moves past it.
    lifetime_ends_at: float = 0.0

    @property
    def expected_sequence(self) -> int:
        """The sequence number the next received call must carry in strict mode; in
        window mode, the one just above the window."""
        return self.highest_accepted + FIRST_SEQUENCE

    def after_call(
        self, state: SessionState, highest_accepted: int, now: float, expires_at: float
    ) -> Session:
        """This session after it accepted a call: ``highest_accepted`` is now the highest
        sequence accepted, and the server numbered one more message.

        Built field by field rather than with :func:`dataclasses.replace`, which costs
        several times as much on the path every call takes.
        """
        return Session(
            self.session_id,
            self.peer_id,
            state,
            self.protocol_version,
            self.capabilities,
            self.created_at,
            now,
            expires_at,
            self.sequence_num + 1,
            self.ended_at,
            self.window,
            highest_accepted,
            self.token_hash,
            self.identity,
            self.lifetime_ends_at,
        )

    def is_expired_at(self, now: float) -> bool:
        """Whether the session is expired at ``now``, swept or not."""
        return self.state is SessionState.EXPIRED or (
            not self.state.is_final and now >= self.expires_at
        )


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Session counts by state, and totals since the store was created."""

    handshaking: int = 0
    established: int = 0
    terminated: int = 0
    expired: int = 0
    created_total: int = 0
    expired_total: int = 0
    terminated_total: int = 0
    sequence_errors_total: int = 0


def check_usable(session: Session | None, session_id: str, now: float) -> Session:
    """Return ``session`` if it may carry a sequenced call at ``now``, else raise why not.

    Raises:
        SessionNotFound: no such session.
        SessionExpired: idle past its deadline (swept or not yet).
        SessionTerminated: terminated or replaced.
        InvalidSessionState: the session has not finished its handshake.
    """
    if session is None:
        raise SessionNotFound(f"no session {short_id(session_id)}; open one with Handshake")
    if session.is_expired_at(now):
        raise SessionExpired(
            f"session {short_id(session_id)} expired ({expiry_cause(session)}); handshake again"
        )
    if session.state is SessionState.TERMINATED:
        raise SessionTerminated(
            f"session {short_id(session_id)} was terminated or replaced by a newer handshake"
        )
    if not session.state.accepts_calls:
        raise InvalidSessionState(
            f"session {short_id(session_id)} is {session.state.name} and takes no calls yet",
            session.state.name,
        )
    return session


def check_owner(session: Session, identity: str) -> None:
    """Raise unless ``identity`` is the one that opened ``session``.

    Checked before anything else about the session, so that another identity
    learns nothing of its state or sequence.

    Raises:
        SessionIdentityMismatch: the call comes from another identity.
    """
    if session.identity != identity:
        raise identity_mismatch(session.session_id)


def identity_mismatch(session_id: str) -> SessionIdentityMismatch:
    """The error for a call on ``session_id`` from an identity other than its owner's."""
    return SessionIdentityMismatch(
        f"session {short_id(session_id)} belongs to another identity "
        "than this call's client certificate"
    )


def capped_deadline(session: Session, expires_at: float) -> float:
    """An idle deadline that does not outlive the session's maximum lifetime."""
    if session.lifetime_ends_at:
        return min(expires_at, session.lifetime_ends_at)
    return expires_at


def expiry_cause(session: Session) -> str:
    """Why a session expired: its idle timeout, or its maximum lifetime."""
    # The idle deadline is capped at the lifetime's end; reaching the cap is the lifetime.
    if session.lifetime_ends_at and session.expires_at >= session.lifetime_ends_at:
        return "it reached its maximum lifetime"
    return "no activity within its idle timeout"


def short_id(session_id: str) -> str:
    """A prefix of a session id, enough to correlate in messages without disclosing it."""
    return session_id[:8] + "..." if len(session_id) > 8 else session_id
