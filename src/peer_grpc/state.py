"""The session state machine: the one table that says how a session may change state."""

from __future__ import annotations

from enum import IntEnum

from peer_grpc.errors import InvalidTransition

__all__ = ["TRANSITIONS", "SessionState", "check_transition"]


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
        return not TRANSITIONS[self]

    @property
    def accepts_calls(self) -> bool:
        """Whether sequenced calls may be made on a session in this state."""
        return self in (SessionState.HANDSHAKE_SENT, SessionState.ESTABLISHED)


#: Every legal transition. Anything not listed here is refused with InvalidTransition.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    # A handshake that never got its reply out (cancelled, or overtaken by a newer
    # handshake of the same peer) must still be able to end, or it would leak.
    SessionState.INITIAL: frozenset(
        {SessionState.HANDSHAKE_SENT, SessionState.TERMINATED, SessionState.EXPIRED}
    ),
    SessionState.HANDSHAKE_SENT: frozenset(
        {SessionState.ESTABLISHED, SessionState.TERMINATED, SessionState.EXPIRED}
    ),
    SessionState.ESTABLISHED: frozenset({SessionState.TERMINATED, SessionState.EXPIRED}),
    SessionState.TERMINATED: frozenset(),
    SessionState.EXPIRED: frozenset(),
}


def check_transition(source: SessionState, target: SessionState) -> SessionState:
    """Return ``target`` if ``source -> target`` is legal, else raise InvalidTransition."""
    if target not in TRANSITIONS[source]:
        raise InvalidTransition(source.name, target.name)
    return target
