"""How the memory store keeps a session: a compact record, unpacked into a snapshot on demand.

A :class:`~peer_grpc.core.session.Session` snapshot is a Python object with a Python
float or int behind each number: about 320 bytes before its id is counted. The
store holds a million of them, so it keeps each session's numbers and token hash
packed into one ``bytes`` instead, beside the strings a snapshot shares with
other sessions (protocol version, capabilities, identity) and its peer id. A
snapshot is built from the record when a caller asks for one.
"""

from __future__ import annotations

import struct

from peer_grpc.core import window
from peer_grpc.core.session import Session, SessionState

__all__ = ["Record", "deadline_of", "ended", "pack", "ring_of", "state_of", "unpack"]

#: The numbers of a session, little-endian: state, window, sequence_num, highest
#: accepted, created_at, last_activity, expires_at, ended_at, lifetime_ends_at. The
#: window's ring (window mode) follows, then the token hash (empty or 32 bytes).
_NUMBERS = struct.Struct("<BHQQddddd")
_TIME = struct.Struct("<d")
_EXPIRES_AT_OFFSET = 1 + 2 + 8 + 8 + 8 + 8
_ENDED_AT_OFFSET = _EXPIRES_AT_OFFSET + 8
_STATES = {state.value: state for state in SessionState}

#: A packed session: its numbers and token hash, peer id, protocol version,
#: capabilities and identity.
Record = tuple[bytes, str, str, tuple[str, ...], str]


def pack(session: Session, ring: bytes | bytearray = b"") -> Record:
    """The record of ``session`` and its window's ``ring`` (its id is the store's key,
    not part of the record)."""
    numbers = _NUMBERS.pack(
        session.state,
        session.window,
        session.sequence_num,
        session.highest_accepted,
        session.created_at,
        session.last_activity,
        session.expires_at,
        session.ended_at,
        session.lifetime_ends_at,
    )
    return (
        b"".join((numbers, ring, session.token_hash)),
        session.peer_id,
        session.protocol_version,
        session.capabilities,
        session.identity,
    )


def unpack(session_id: str, record: Record) -> Session:
    """The snapshot of the session with ``session_id`` that ``record`` keeps."""
    packed, peer_id, protocol_version, capabilities, identity = record
    (state, window, sequence_num, highest, created, last, expires, ended, lifetime_end) = (
        _NUMBERS.unpack_from(packed)
    )
    return Session(
        session_id,
        peer_id,
        _STATES[state],
        protocol_version,
        capabilities,
        created,
        last,
        expires,
        sequence_num,
        ended,
        window,
        highest,
        packed[_NUMBERS.size + _ring_size(window) :],
        identity,
        lifetime_end,
    )


def ring_of(record: Record) -> bytearray:
    """The window's ring in ``record``, to check and change (empty in strict mode)."""
    packed = record[0]
    return bytearray(packed[_NUMBERS.size : _NUMBERS.size + _ring_size(_window_of(packed))])


def _window_of(packed: bytes) -> int:
    return int.from_bytes(packed[1:3], "little")


def _ring_size(width: int) -> int:
    return window.ring_size(width) if width else 0


def state_of(record: Record) -> SessionState:
    """The state in ``record``, without unpacking the rest."""
    return _STATES[record[0][0]]


def deadline_of(record: Record) -> float:
    """The idle deadline (``expires_at``) in ``record``, without unpacking the rest."""
    return float(_TIME.unpack_from(record[0], _EXPIRES_AT_OFFSET)[0])


def ended(record: Record, state: SessionState, now: float) -> Record:
    """``record`` ended in final ``state`` at ``now``, changed in place of unpacking it
    (a sweep ends sessions by the thousand)."""
    numbers = bytearray(record[0])
    numbers[0] = state
    _TIME.pack_into(numbers, _ENDED_AT_OFFSET, now)
    return (bytes(numbers), *record[1:])
