"""The client's view of its session: which id, which sequence comes next, what is in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.errors import SequenceExhausted
from peer_grpc.core.metadata import SEQUENCE_KEY
from peer_grpc.core.sequence import FIRST_SEQUENCE, MAX_SEQUENCE

__all__ = ["FlightLimit", "Metadata", "SessionCursor", "announcement", "server_sequence"]

#: Metadata as grpc hands it over: key and value pairs.
Metadata = Sequence[tuple[str, str | bytes]]


_WINDOW_MODE = peer_pb2.SEQUENCE_MODE_WINDOW


class FlightLimit:
    """Bounds the calls in flight; one object for the client's life, its limit adjustable.

    Replacing a semaphore when the limit changes would let calls queued on the old
    one through beside calls on the new one.
    """

    def __init__(self, limit: int = 1) -> None:
        self.limit = limit
        self._active = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._active < self.limit)
            self._active += 1

    async def __aexit__(self, *exc_info: object) -> None:
        async with self._changed:
            self._active -= 1
            self._changed.notify_all()

    async def set_limit(self, limit: int) -> None:
        async with self._changed:
            self.limit = limit
            self._changed.notify_all()


@dataclass
class SessionCursor:
    """The client's view of its session: which id, and which sequence comes next."""

    session_id: str | None = None
    session_token: str = ""
    next_sequence: int = FIRST_SEQUENCE
    #: The window's width in window mode; 0 in strict mode (one call in flight).
    window: int = 0
    #: The last ``peer-sequence`` the server sent on this session.
    server_sequence: int = 0
    #: The highest sequence the server acknowledged admitting on this session: a resume
    #: sends it, so that a server whose record rolled back never accepts it again.
    acknowledged: int = 0
    #: Set when a call's fate is unknown (the connection failed): resume before the next call.
    needs_resume: bool = False
    #: Bounds the calls in flight: 1 in strict mode, the window's width in window mode.
    in_flight: FlightLimit = field(default_factory=FlightLimit)

    async def start(self, response: peer_pb2.HandshakeResponse) -> None:
        """Follow the session a handshake (new or resumed) describes."""
        window = response.replay_window if response.sequence_mode == _WINDOW_MODE else 0
        same_window = response.resumed and response.session_id == self.session_id and window
        if same_window:
            # Calls still in flight hold numbers above the server's highest: never reuse them.
            self.next_sequence = max(self.next_sequence, response.next_sequence)
        else:
            self.next_sequence = response.next_sequence
            self.server_sequence = 0
        if response.session_id != self.session_id:
            self.acknowledged = 0
        self.session_id = response.session_id
        if response.session_token:
            self.session_token = response.session_token
        self.needs_resume = False
        self.window = window
        await self.in_flight.set_limit(max(window, 1))

    def take_number(self) -> int:
        """Reserve the sequence for a new call; no two calls ever carry the same one."""
        sequence = self.next_sequence
        if sequence > MAX_SEQUENCE:
            raise SequenceExhausted("this session used its last sequence number")
        self.next_sequence += 1
        return sequence

    def unused(self, session_id: str, sequence: int) -> None:
        """The server refused ``sequence`` before admitting it: strict mode gives it back."""
        if session_id == self.session_id and not self.window and self.next_sequence == sequence + 1:
            self.next_sequence = sequence

    def spent(self, session_id: str, sequence: int, metadata: Metadata | None) -> None:
        """The server admitted ``sequence``; ``metadata`` announced it."""
        if session_id == self.session_id:  # else it belonged to a session since replaced
            self.server_sequence = server_sequence(metadata, self.server_sequence)
            self.acknowledged = max(self.acknowledged, sequence)
            # A call sent again after a resume (a fence) may carry a number below the
            # one the resume set as next: it is spent now too.
            self.next_sequence = max(self.next_sequence, sequence + 1)


def announcement(initial: Metadata | None, trailing: Metadata | None) -> Metadata:
    """Where the server announces an admitted call's ``peer-sequence``: the trailers of
    a unary call, the initial metadata of a stream (and of an older server's calls)."""
    return (*(trailing or ()), *(initial or ()))


def server_sequence(metadata: Metadata | None, default: int) -> int:
    for key, value in metadata or ():
        if key == SEQUENCE_KEY and isinstance(value, str) and value.isdigit():
            return int(value)
    return default
