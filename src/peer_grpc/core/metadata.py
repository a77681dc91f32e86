"""Session metadata: the keys a sequenced call carries, and their strict parsing. No gRPC here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from peer_grpc.core.errors import FieldViolation, InvalidArgument, SessionRequired
from peer_grpc.core.sequence import MAX_SEQUENCE

__all__ = ["SEQUENCE_KEY", "SESSION_ID_KEY", "SessionCredentials", "parse_session_metadata"]

#: Request metadata key of the session id from the handshake.
SESSION_ID_KEY = "peer-session-id"
#: Request metadata key of the call's sequence number; response metadata key of the server's.
SEQUENCE_KEY = "peer-sequence"

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_DIGITS = re.compile(r"[0-9]+")
_MAX_DIGITS = len(str(MAX_SEQUENCE))


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """The session id and sequence number a call carries."""

    session_id: str
    sequence: int


def parse_session_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> SessionCredentials | None:
    """Read the session metadata of a call.

    Returns None when the call carries neither key.

    Raises:
        InvalidArgument: a key is repeated, empty or malformed, or the sequence is
            missing beside a session id; each violation names its key.
        SessionRequired: a sequence arrived without a session id.
    """
    session_ids: list[str | bytes] = []
    sequences: list[str | bytes] = []
    for key, value in metadata or ():
        if key == SESSION_ID_KEY:
            session_ids.append(value)
        elif key == SEQUENCE_KEY:
            sequences.append(value)
    if not session_ids and not sequences:
        return None
    if not session_ids:
        raise SessionRequired(f"{SEQUENCE_KEY} was sent without {SESSION_ID_KEY}")

    violations: list[FieldViolation] = []
    session_id = _parse_session_id(session_ids, violations)
    sequence = _parse_sequence(sequences, violations)
    if violations:
        raise InvalidArgument(violations)
    assert session_id is not None
    assert sequence is not None
    return SessionCredentials(session_id, sequence)


def _single_text(
    key: str, values: list[str | bytes], violations: list[FieldViolation]
) -> str | None:
    """The one non-empty text value sent for ``key``, or None with a violation recorded."""
    if not values:
        return None
    if len(values) > 1:
        violations.append(FieldViolation(key, f"sent {len(values)} times; send it once"))
        return None
    value = values[0]
    if not isinstance(value, str):
        violations.append(FieldViolation(key, "must be ASCII text, not binary"))
        return None
    if not value:
        violations.append(FieldViolation(key, "must not be empty"))
        return None
    return value


def _parse_session_id(values: list[str | bytes], violations: list[FieldViolation]) -> str | None:
    value = _single_text(SESSION_ID_KEY, values, violations)
    if value is None:
        return None
    if not _SESSION_ID.fullmatch(value):
        violations.append(
            FieldViolation(SESSION_ID_KEY, "must be 1-128 characters of letters, digits, _ and -")
        )
        return None
    return value


def _parse_sequence(values: list[str | bytes], violations: list[FieldViolation]) -> int | None:
    if not values:
        violations.append(FieldViolation(SEQUENCE_KEY, f"is required with {SESSION_ID_KEY}"))
        return None
    value = _single_text(SEQUENCE_KEY, values, violations)
    if value is None:
        return None
    if value.startswith("-") and _DIGITS.fullmatch(value[1:]) and value[1:].strip("0"):
        violations.append(FieldViolation(SEQUENCE_KEY, f"must not be negative, got {value}"))
        return None
    if not _DIGITS.fullmatch(value):
        violations.append(
            FieldViolation(SEQUENCE_KEY, f"must be a decimal unsigned integer, got {value[:32]!r}")
        )
        return None
    # Bound the digits before int() so a huge value costs nothing to refuse.
    significant = value.lstrip("0") or "0"
    if len(significant) > _MAX_DIGITS or int(significant) > MAX_SEQUENCE:
        violations.append(
            FieldViolation(
                SEQUENCE_KEY, f"must be at most 2^64-1 ({MAX_SEQUENCE}), got {value[:32]}"
            )
        )
        return None
    return int(significant)
