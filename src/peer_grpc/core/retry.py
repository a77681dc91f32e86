"""Retry is not replay: remembering the outcomes of a session's last accepted calls.

The idempotent-producer rule of Kafka's KIP-98: a resend of an accepted sequence
with the same method and the same request bytes gets the original outcome again,
and the call does not run twice. A resend that arrives while the original still
runs waits for its outcome. No gRPC here: outcomes are plain values.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_RETRY_CACHE",
    "FORGOTTEN",
    "NOT_RUN",
    "CallKey",
    "CallOutcome",
    "RetryCache",
    "decode_outcome",
    "encode_outcome",
    "request_digest",
]

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


#: What a resend waiting for an outcome gets when the call was forgotten before its
#: outcome came (more calls accepted since than the cache holds): it is refused as a REPLAY.
FORGOTTEN = CallOutcome(code=-1, message="forgotten")

#: What a resend gets when the original was admitted but never ran (the store's
#: answer to the admission was lost): UNAVAILABLE, so the caller sends it again,
#: and that resend runs it.
NOT_RUN = CallOutcome(
    code=14,  # UNAVAILABLE
    message="the original call with this sequence was admitted but did not run; send it again",
)


def encode_outcome(outcome: CallOutcome) -> bytes:
    """``outcome`` as bytes for a shared store (see :func:`decode_outcome`)."""
    trailing = [
        [key, base64.b64encode(value).decode(), True]
        if isinstance(value, bytes)
        else [key, value, False]
        for key, value in outcome.trailing_metadata
    ]
    return json.dumps(
        {
            "code": outcome.code,
            "response": base64.b64encode(outcome.response).decode(),
            "message": outcome.message,
            "trailing": trailing,
            "server_sequence": outcome.server_sequence,
        },
        separators=(",", ":"),
    ).encode()


def decode_outcome(data: bytes) -> CallOutcome:
    """The outcome :func:`encode_outcome` wrote."""
    raw: dict[str, Any] = json.loads(data)
    trailing: tuple[tuple[str, str | bytes], ...] = tuple(
        (key, base64.b64decode(value) if is_bytes else value)
        for key, value, is_bytes in raw["trailing"]
    )
    return CallOutcome(
        code=raw["code"],
        response=base64.b64decode(raw["response"]),
        message=raw["message"],
        trailing_metadata=trailing,
        server_sequence=raw["server_sequence"],
    )


@dataclass(slots=True)
class _Entry:
    key: CallKey
    #: How the call ended; None while it runs.
    outcome: CallOutcome | None = None
    #: Made only when a resend comes while the call runs: most calls are never resent.
    waiter: asyncio.Future[CallOutcome] | None = None

    def settle(self, outcome: CallOutcome) -> None:
        self.outcome = outcome
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(outcome)


class RetryCache:
    """The outcomes of one session's last ``size`` accepted calls, by sequence."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int = DEFAULT_RETRY_CACHE) -> None:
        if size < 0:
            raise ValueError("the retry cache size must not be negative")
        self._size = size
        # Insertion order is acceptance order: the first key is the oldest.
        self._entries: dict[int, _Entry] = {}

    def remember(self, sequence: int, key: CallKey) -> None:
        """Note an accepted call whose outcome is still to come; forgets the oldest."""
        if self._size == 0:
            return
        self._entries[sequence] = _Entry(key)
        while len(self._entries) > self._size:
            evicted = self._entries.pop(next(iter(self._entries)))
            if evicted.outcome is None:
                evicted.settle(FORGOTTEN)  # waiters learn it is gone

    def find(self, sequence: int, key: CallKey) -> asyncio.Future[CallOutcome] | None:
        """The outcome of the accepted call ``sequence`` if ``key`` matches it, else None.

        The future is done if the call has ended, and is resolved when it ends otherwise.
        """
        entry = self._entries.get(sequence)
        if entry is None or entry.key != key:
            return None
        if entry.waiter is None:
            entry.waiter = asyncio.get_running_loop().create_future()
            if entry.outcome is not None:
                entry.waiter.set_result(entry.outcome)
        return entry.waiter

    def record(self, sequence: int, outcome: CallOutcome) -> None:
        """Store how call ``sequence`` ended and wake any resend waiting for it."""
        entry = self._entries.get(sequence)
        if entry is not None and entry.outcome is None:
            entry.settle(outcome)

    def __len__(self) -> int:
        return len(self._entries)
