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
from enum import Enum
from typing import Any, NamedTuple

from peer_grpc.core.errors import SequenceError, SequenceErrorKind
from peer_grpc.core.session import Session

__all__ = [
    "DEFAULT_RETRY_CACHE",
    "FORGOTTEN",
    "INTERRUPTED",
    "NOT_RUN",
    "CallEnd",
    "CallKey",
    "CallOutcome",
    "RetryCache",
    "answer_to_resend",
    "answered",
    "cut_short",
    "decode_outcome",
    "encode_outcome",
    "replay_refusal",
    "request_digest",
]

#: How many accepted calls a session remembers by default.
DEFAULT_RETRY_CACHE = 8


def request_digest(data: bytes) -> bytes:
    """A 128-bit digest of a request's bytes, to tell a resend from a different message."""
    return hashlib.blake2b(data, digest_size=16).digest()


# CallKey and CallOutcome are named tuples rather than frozen dataclasses: one of each
# is built on every call, and a frozen dataclass costs three times as much to build.


class CallKey(NamedTuple):
    """What makes two calls with one sequence number the same call."""

    method: str
    digest: bytes


class CallEnd(Enum):
    """How an admitted call ended, as far as a resend of it is concerned."""

    #: It succeeded: a resend gets the same response.
    ANSWERED = "answered"
    #: It failed with a status: a resend gets the same status.
    FAILED = "failed"
    #: It was admitted but never ran (the store's answer to the admission was lost): a
    #: resend is told to send it again, and that resend runs it.
    NOT_RUN = "not_run"
    #: It was cut short (its caller gone, its task torn down) with its effect unknown.
    INTERRUPTED = "interrupted"
    #: It was forgotten before it ended: more calls were accepted since than the record
    #: holds. Only a resend waiting for the outcome sees this; it is refused as a REPLAY.
    FORGOTTEN = "forgotten"


class CallOutcome(NamedTuple):
    """How an accepted call ended, enough to answer a resend identically."""

    end: CallEnd
    #: The serialized response, when :attr:`end` is ANSWERED.
    response: bytes = b""
    #: The failure, when :attr:`end` is FAILED, encoded by the transport (the rich-status
    #: module): the core keeps and compares it, never reads it.
    status: bytes = b""
    #: The server's ``peer-sequence`` for the original response.
    server_sequence: int = 0
    #: Metadata the failure carried besides its status, repeated to a resend.
    trailers: tuple[tuple[str, str | bytes], ...] = ()

    @property
    def message(self) -> str:
        """What a resend of a call that ended NOT_RUN or INTERRUPTED is told."""
        return _RESEND_MESSAGES.get(self.end, "")


_RESEND_MESSAGES = {
    CallEnd.NOT_RUN: (
        "the original call with this sequence was admitted but did not run; send it again"
    ),
    CallEnd.INTERRUPTED: (
        "the original call with this sequence was interrupted; its effect is unknown"
    ),
}

#: See :attr:`CallEnd.FORGOTTEN`.
FORGOTTEN = CallOutcome(CallEnd.FORGOTTEN)

#: See :attr:`CallEnd.NOT_RUN`.
NOT_RUN = CallOutcome(CallEnd.NOT_RUN)

#: See :attr:`CallEnd.INTERRUPTED`.
INTERRUPTED = CallOutcome(CallEnd.INTERRUPTED)


def answered(response: bytes, server_sequence: int) -> CallOutcome:
    """The outcome of a call that succeeded with ``response``."""
    return CallOutcome(CallEnd.ANSWERED, response, server_sequence=server_sequence)


def cut_short(store_failed: bool, effect_done: bytes | None, server_sequence: int) -> CallOutcome:
    """The outcome of an admitted call that ended without an answer of its own.

    ``store_failed``: the store failed mid-call, so a resend may run it again;
    otherwise the call was cancelled or torn down and its effect is unknown. Either
    way, a method whose effect is known to be done (``effect_done``: the response a
    resend learns it from) is answered with that.
    """
    if effect_done is not None:
        return CallOutcome(CallEnd.ANSWERED, effect_done, server_sequence=server_sequence)
    end = CallEnd.NOT_RUN if store_failed else CallEnd.INTERRUPTED
    return CallOutcome(end, server_sequence=server_sequence)


def answer_to_resend(outcome: CallOutcome, session: Session, sequence: int) -> CallOutcome:
    """What a resend of accepted call ``sequence`` gets: the original's ``outcome``.

    Raises:
        SequenceError: REPLAY, if the call was forgotten before its outcome came.
    """
    if outcome.end is CallEnd.FORGOTTEN:
        raise replay_refusal(session, sequence)
    return outcome


def replay_refusal(session: Session, sequence: int) -> SequenceError:
    """The refusal of a call that reuses ``sequence`` and cannot be answered from the
    record (forgotten, or a stream, whose messages are not kept)."""
    return SequenceError(
        session.session_id,
        session.expected_sequence,
        sequence,
        SequenceErrorKind.REPLAY,
        replay_window=session.window,
    )


#: The trailer a failure's status travels in (the gRPC convention), which records from
#: before the core owned outcomes kept among their trailers.
_LEGACY_DETAILS_KEY = "grpc-status-details-bin"


def encode_outcome(outcome: CallOutcome) -> bytes:
    """``outcome`` as bytes for a shared store (see :func:`decode_outcome`)."""
    answered_ok = outcome.end is CallEnd.ANSWERED
    return json.dumps(
        {
            "end": outcome.end.value,
            "response": base64.b64encode(outcome.response).decode(),
            "status": base64.b64encode(outcome.status).decode(),
            "trailing": _encode_trailers(outcome.trailers),
            "server_sequence": outcome.server_sequence,
            # What a replica from before the core owned outcomes reads (a rolling upgrade):
            # a success as it was, anything else as "interrupted, effect unknown" (ABORTED).
            "code": 0 if answered_ok else 10,
            "message": "" if answered_ok else INTERRUPTED.message,
        },
        separators=(",", ":"),
    ).encode()


def decode_outcome(data: bytes) -> CallOutcome:
    """The outcome :func:`encode_outcome` wrote."""
    raw: dict[str, Any] = json.loads(data)
    trailers = _decode_trailers(raw["trailing"])
    if "end" not in raw:
        return _decode_legacy(raw, trailers)
    return CallOutcome(
        CallEnd(raw["end"]),
        base64.b64decode(raw["response"]),
        base64.b64decode(raw["status"]),
        raw["server_sequence"],
        trailers,
    )


def _decode_legacy(
    raw: dict[str, Any], trailers: tuple[tuple[str, str | bytes], ...]
) -> CallOutcome:
    """An outcome written by a replica from before the core owned outcomes: a failure
    with a rich status is repeated (the status is in its trailers); one without details
    cannot be, and reads as "interrupted, effect unknown"."""
    server_sequence = raw["server_sequence"]
    if raw["code"] == 0:
        return answered(base64.b64decode(raw["response"]), server_sequence)
    status = next(
        (
            value
            for key, value in trailers
            if key == _LEGACY_DETAILS_KEY and isinstance(value, bytes)
        ),
        None,
    )
    if status is None:
        return CallOutcome(CallEnd.INTERRUPTED, server_sequence=server_sequence)
    others = tuple(item for item in trailers if item[0] != _LEGACY_DETAILS_KEY)
    return CallOutcome(CallEnd.FAILED, b"", status, server_sequence, others)


def _encode_trailers(trailers: tuple[tuple[str, str | bytes], ...]) -> list[list[Any]]:
    return [
        [key, base64.b64encode(value).decode(), True]
        if isinstance(value, bytes)
        else [key, value, False]
        for key, value in trailers
    ]


def _decode_trailers(encoded: list[list[Any]]) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, base64.b64decode(value) if is_bytes else value) for key, value, is_bytes in encoded
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
