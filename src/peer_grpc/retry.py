"""Retry is not replay: remembering the outcomes of a session's last accepted calls.

The idempotent-producer rule of Kafka's KIP-98: a resend of an accepted sequence
with the same method and the same request bytes gets the original outcome again,
and the call does not run twice. A resend that arrives while the original still
runs waits for its outcome. No gRPC here: outcomes are plain values.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["DEFAULT_RETRY_CACHE", "CallKey", "CallOutcome", "RetryCache", "request_digest"]

#: How many accepted calls a session remembers by default.
DEFAULT_RETRY_CACHE = 8


def request_digest(data: bytes) -> bytes:
    """A 128-bit digest of a request's bytes, to tell a resend from a different message."""
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class CallKey:
    """What makes two calls with one sequence number the same call."""

    method: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How an accepted call ended, enough to answer a resend identically."""

    #: The status code's number: 0 (OK) or a gRPC error code.
    code: int
    #: The serialized response, on success.
    response: bytes = b""
    #: The status message, on failure.
    message: str = ""
    #: Trailing metadata sent with a failure (e.g. grpc-status-details-bin).
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()
    #: The server's ``peer-sequence`` for the original response.
    server_sequence: int = 0


@dataclass(slots=True)
class _Entry:
    key: CallKey
    outcome: asyncio.Future[CallOutcome]


class RetryCache:
    """The outcomes of one session's last ``size`` accepted calls, by sequence."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int = DEFAULT_RETRY_CACHE) -> None:
        if size < 0:
            raise ValueError("the retry cache size must not be negative")
        self._size = size
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    def remember(self, sequence: int, key: CallKey) -> None:
        """Note an accepted call whose outcome is still to come; forgets the oldest."""
        if self._size == 0:
            return
        loop = asyncio.get_running_loop()
        self._entries[sequence] = _Entry(key, loop.create_future())
        while len(self._entries) > self._size:
            _, evicted = self._entries.popitem(last=False)
            if not evicted.outcome.done():
                evicted.outcome.cancel()  # waiters learn it is gone; see find()

    def find(self, sequence: int, key: CallKey) -> asyncio.Future[CallOutcome] | None:
        """The outcome of the accepted call ``sequence`` if ``key`` matches it, else None."""
        entry = self._entries.get(sequence)
        if entry is None or entry.key != key:
            return None
        return entry.outcome

    def record(self, sequence: int, outcome: CallOutcome) -> None:
        """Store how call ``sequence`` ended and wake any resend waiting for it."""
        entry = self._entries.get(sequence)
        if entry is not None and not entry.outcome.done():
            entry.outcome.set_result(outcome)

    def __len__(self) -> int:
        return len(self._entries)
