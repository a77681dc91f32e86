"""Session metadata parsing: what a sequenced call must carry, read strictly.

A call carries ``peer-session-id`` and ``peer-sequence`` (a decimal unsigned 64-bit
integer), each exactly once. Parsing says only whether they are well formed; whether
the sequence is the expected one is the store's business.
"""

from __future__ import annotations

import pytest

from peer_grpc import InvalidArgument, SessionRequired
from peer_grpc.core.metadata import (
    SEQUENCE_KEY,
    SESSION_ID_KEY,
    SessionCredentials,
    parse_session_metadata,
)

SID = "0123456789abcdef0123456789abcdef"
Metadata = list[tuple[str, str | bytes]]


def test_metadata_keys() -> None:
    assert (SESSION_ID_KEY, SEQUENCE_KEY) == ("peer-session-id", "peer-sequence")


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(None, id="no-metadata"),
        pytest.param([], id="empty-metadata"),
        pytest.param([("user-agent", "grpc-python"), ("x-trace", "1")], id="only-unrelated-keys"),
    ],
)
def test_call_without_session_keys_has_no_credentials(metadata: Metadata | None) -> None:
    assert parse_session_metadata(metadata) is None


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(
            [(SESSION_ID_KEY, SID), (SEQUENCE_KEY, "1")],
            SessionCredentials(SID, 1),
            id="first-call",
        ),
        pytest.param(
            [(SEQUENCE_KEY, "42"), (SESSION_ID_KEY, SID)],
            SessionCredentials(SID, 42),
            id="any-key-order",
        ),
        pytest.param(
            [
                ("user-agent", "x"),
                (SESSION_ID_KEY, SID),
                ("x-other-bin", b"\x00"),
                (SEQUENCE_KEY, "7"),
            ],
            SessionCredentials(SID, 7),
            id="unrelated-keys-ignored",
        ),
        pytest.param(
            [(SESSION_ID_KEY, SID), (SEQUENCE_KEY, "18446744073709551615")],
            SessionCredentials(SID, 2**64 - 1),
            id="max-u64-sequence",
        ),
        pytest.param(
            [(SESSION_ID_KEY, SID), (SEQUENCE_KEY, "0")],
            SessionCredentials(SID, 0),
            id="zero-sequence-parses",
        ),
        pytest.param(
            [(SESSION_ID_KEY, "a" * 128), (SEQUENCE_KEY, "1")],
            SessionCredentials("a" * 128, 1),
            id="session-id-of-128-chars",
        ),
        pytest.param(
            [(SESSION_ID_KEY, "A_b-9"), (SEQUENCE_KEY, "1")],
            SessionCredentials("A_b-9", 1),
            id="session-id-letters-digits-underscore-dash",
        ),
    ],
)
def test_valid_metadata_gives_credentials(metadata: Metadata, expected: SessionCredentials) -> None:
    assert parse_session_metadata(metadata) == expected


def _sequence(value: str | bytes) -> Metadata:
    return [(SESSION_ID_KEY, SID), (SEQUENCE_KEY, value)]


def _session_id(value: str | bytes) -> Metadata:
    return [(SESSION_ID_KEY, value), (SEQUENCE_KEY, "1")]


@pytest.mark.parametrize(
    ("metadata", "bad_key"),
    [
        pytest.param(_sequence("abc"), SEQUENCE_KEY, id="sequence-not-a-number"),
        pytest.param(_sequence("1.5"), SEQUENCE_KEY, id="sequence-decimal-fraction"),
        pytest.param(_sequence(" 1"), SEQUENCE_KEY, id="sequence-leading-space"),
        pytest.param(_sequence("1 "), SEQUENCE_KEY, id="sequence-trailing-space"),
        pytest.param(_sequence("+1"), SEQUENCE_KEY, id="sequence-plus-sign"),
        pytest.param(_sequence("0x10"), SEQUENCE_KEY, id="sequence-hex"),
        pytest.param(_sequence("1e3"), SEQUENCE_KEY, id="sequence-exponent"),
        pytest.param(_sequence("1_000"), SEQUENCE_KEY, id="sequence-underscore"),
        pytest.param(_sequence("\u0661"), SEQUENCE_KEY, id="sequence-non-ascii-digit"),
        pytest.param(_sequence("-1"), SEQUENCE_KEY, id="sequence-negative"),
        pytest.param(_sequence("18446744073709551616"), SEQUENCE_KEY, id="sequence-2^64"),
        pytest.param(_sequence("9" * 25), SEQUENCE_KEY, id="sequence-25-digits"),
        pytest.param(_sequence(""), SEQUENCE_KEY, id="sequence-empty"),
        pytest.param(_sequence(b"1"), SEQUENCE_KEY, id="sequence-binary-value"),
        pytest.param([(SESSION_ID_KEY, SID)], SEQUENCE_KEY, id="sequence-missing"),
        pytest.param([*_sequence("1"), (SEQUENCE_KEY, "2")], SEQUENCE_KEY, id="sequence-repeated"),
        pytest.param(
            [*_sequence("1"), (SEQUENCE_KEY, "1")], SEQUENCE_KEY, id="sequence-repeated-same"
        ),
        pytest.param(_session_id(""), SESSION_ID_KEY, id="session-id-empty"),
        pytest.param(_session_id("abc def"), SESSION_ID_KEY, id="session-id-space"),
        pytest.param(_session_id("abc/def"), SESSION_ID_KEY, id="session-id-slash"),
        pytest.param(_session_id("abc.def"), SESSION_ID_KEY, id="session-id-dot"),
        pytest.param(_session_id("s\u00e9ssion"), SESSION_ID_KEY, id="session-id-non-ascii"),
        pytest.param(_session_id("a" * 129), SESSION_ID_KEY, id="session-id-129-chars"),
        pytest.param(_session_id(b"abc"), SESSION_ID_KEY, id="session-id-binary-value"),
        pytest.param(
            [*_session_id(SID), (SESSION_ID_KEY, SID)], SESSION_ID_KEY, id="session-id-repeated"
        ),
    ],
)
def test_malformed_metadata_is_invalid_argument_naming_the_key(
    metadata: Metadata, bad_key: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_session_metadata(metadata)

    error = caught.value
    assert [v.field for v in error.violations] == [bad_key]
    assert error.violations[0].description
    assert error.message.startswith(f"{bad_key}: ")


def test_every_bad_key_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_session_metadata([(SESSION_ID_KEY, "not valid!"), (SEQUENCE_KEY, "-3")])
    assert [v.field for v in caught.value.violations] == [SESSION_ID_KEY, SEQUENCE_KEY]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("-1", "negative", id="negative"),
        pytest.param("18446744073709551616", "2^64-1", id="too-large"),
        pytest.param("abc", "decimal unsigned integer", id="not-a-number"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_violation_says_what_is_wrong(value: str, shown: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_session_metadata(_sequence(value))
    assert shown in caught.value.violations[0].description


def test_oversized_value_is_truncated_in_the_message() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_session_metadata(_sequence("x" * 10_000))
    assert len(caught.value.message) < 200


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([(SEQUENCE_KEY, "1")], id="sequence-alone"),
        pytest.param([("user-agent", "x"), (SEQUENCE_KEY, "abc")], id="malformed-sequence-alone"),
        pytest.param([(SEQUENCE_KEY, "1"), (SEQUENCE_KEY, "2")], id="repeated-sequence-alone"),
    ],
)
def test_sequence_without_session_id_requires_a_session(metadata: Metadata) -> None:
    with pytest.raises(SessionRequired) as caught:
        parse_session_metadata(metadata)
    assert caught.value.reason == "SESSION_REQUIRED"
