"""Sequence rules: which received sequence number a session accepts. No gRPC here."""

from __future__ import annotations

from enum import IntEnum

from peer_grpc.core.errors import SequenceError, SequenceErrorKind

__all__ = ["FIRST_SEQUENCE", "MAX_SEQUENCE", "SequenceMode", "check_strict"]

#: The sequence number of the first call after a handshake.
FIRST_SEQUENCE = 1
#: The largest sequence number: sequences are unsigned 64-bit integers.
MAX_SEQUENCE = 2**64 - 1


class SequenceMode(IntEnum):
    """How a session orders the sequences it accepts (values of ``peer.v1.SequenceMode``)."""

    #: Exactly the next sequence, nothing else.
    STRICT = 1
    #: Each sequence once, in any order, within a sliding window (see :mod:`peer_grpc.core.window`).
    WINDOW = 2


def check_strict(session_id: str, expected: int, received: int) -> None:
    """Strict ordering: accept exactly the expected sequence, nothing else.

    Raises:
        SequenceError: GAP when ``received`` is ahead of ``expected``, REPLAY when behind.
    """
    if received == expected:
        return
    kind = SequenceErrorKind.GAP if received > expected else SequenceErrorKind.REPLAY
    raise SequenceError(session_id, expected, received, kind)
