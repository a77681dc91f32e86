"""Strict sequencing: a session accepts exactly the expected sequence number, nothing else.

A received number ahead of the expected one is a GAP (a call was lost or reordered);
one behind it, including 0, is a REPLAY.
"""

from __future__ import annotations

import pytest

from peer_grpc import SequenceError, SequenceErrorKind
from peer_grpc.core.sequence import FIRST_SEQUENCE, MAX_SEQUENCE, check_strict

SESSION_ID = "0123456789abcdef0123456789abcdef"


def test_sequence_constants() -> None:
    """The first call after a handshake is 1; sequences are unsigned 64-bit."""
    assert FIRST_SEQUENCE == 1
    assert MAX_SEQUENCE == 2**64 - 1


@pytest.mark.parametrize(
    "sequence",
    [
        pytest.param(1, id="first"),
        pytest.param(2, id="second"),
        pytest.param(1_000_000, id="large"),
        pytest.param(MAX_SEQUENCE, id="max-u64"),
    ],
)
def test_expected_sequence_is_accepted(sequence: int) -> None:
    check_strict(SESSION_ID, expected=sequence, received=sequence)


@pytest.mark.parametrize(
    ("expected", "received", "kind"),
    [
        pytest.param(1, 2, SequenceErrorKind.GAP, id="gap-ahead-by-1"),
        pytest.param(1, 4, SequenceErrorKind.GAP, id="gap-ahead-by-3"),
        pytest.param(7, 8, SequenceErrorKind.GAP, id="gap-mid-session"),
        pytest.param(1, MAX_SEQUENCE, SequenceErrorKind.GAP, id="gap-to-max-u64"),
        pytest.param(2, 1, SequenceErrorKind.REPLAY, id="replay-of-previous"),
        pytest.param(1, 0, SequenceErrorKind.REPLAY, id="replay-zero-before-first"),
        pytest.param(5, 0, SequenceErrorKind.REPLAY, id="replay-zero-mid-session"),
        pytest.param(100, 3, SequenceErrorKind.REPLAY, id="replay-far-behind"),
        pytest.param(MAX_SEQUENCE, 1, SequenceErrorKind.REPLAY, id="replay-from-max-u64"),
    ],
)
def test_unexpected_sequence_is_refused(
    expected: int, received: int, kind: SequenceErrorKind
) -> None:
    with pytest.raises(SequenceError) as caught:
        check_strict(SESSION_ID, expected, received)

    error = caught.value
    assert error.kind is kind
    assert error.expected_sequence == expected
    assert error.received_sequence == received
    assert error.session_id == SESSION_ID
    assert error.reason == "SEQUENCE_ERROR"
    assert str(expected) in error.message
    assert str(received) in error.message
    assert kind.name in error.message
    assert error.error_metadata() == {
        "expected_sequence": str(expected),
        "received_sequence": str(received),
        "kind": kind.name,
    }


@pytest.mark.parametrize(
    ("received", "wording"),
    [
        pytest.param(6, "ahead of", id="gap-says-ahead"),
        pytest.param(4, "behind", id="replay-says-behind"),
    ],
)
def test_message_says_which_way_the_sequence_is_off(received: int, wording: str) -> None:
    with pytest.raises(SequenceError, match=f"expected sequence 5, received {received}") as caught:
        check_strict(SESSION_ID, 5, received)
    assert wording in caught.value.message


def test_kind_values_match_the_proto_enum() -> None:
    assert (SequenceErrorKind.GAP, SequenceErrorKind.REPLAY) == (1, 2)
