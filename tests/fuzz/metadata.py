"""Strategies for call metadata: session ids and sequence numbers in every form, near
misses of our keys, transport keys, and rarely huge values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.fuzz.requests import _HEX32, _ID_CHARS, _INDEX, ascii_text

if TYPE_CHECKING:
    from tests.fuzz.known import Known

import string
from collections.abc import Callable, Sequence
from typing import TypeVar

from hypothesis import strategies as st

from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.core.sequence import MAX_SEQUENCE

_T = TypeVar("_T")

_SEQUENCE_FORMS: dict[str, Callable[[int], str]] = {
    "e": str,
    "e-1": lambda e: str(e - 1),
    "e+1": lambda e: str(e + 1),
    "-e": lambda e: f"-{e}",
    "+e": lambda e: f"+{e}",
    "space e": lambda e: f" {e}",
    "e space": lambda e: f"{e} ",
    "0e": lambda e: f"0{e}",
    "25 zeros e": lambda e: "0" * 25 + str(e),
    "e 20 zeros": lambda e: str(e) + "0" * 20,
    "e.0": lambda e: f"{e}.0",
    "0": lambda e: "0",
    "-0": lambda e: "-0",
    "-1": lambda e: "-1",
    "2^64-1": lambda e: str(MAX_SEQUENCE),
    "2^64": lambda e: str(MAX_SEQUENCE + 1),
    "400 nines": lambda e: "9" * 400,
    "1e3": lambda e: "1e3",
    "0x1": lambda e: "0x1",
    "empty": lambda e: "",
    "space": lambda e: " ",
}
_sequence_form = st.one_of(
    st.sampled_from(sorted(_SEQUENCE_FORMS)),
    st.integers(-70, 70),  # an offset from the expected sequence
    st.integers(-(2**70), 2**70).map(lambda n: f"#{n}"),  # a number, whatever expected is
    ascii_text.map(lambda text: f"'{text}"),  # any text
)


def _sequence(form: str | int, expected: int) -> str:
    if isinstance(form, int):
        return str(expected + form)
    if form.startswith(("#", "'")):
        return form[1:]
    return _SEQUENCE_FORMS[form](expected)


#: ``peer-session-id`` values near a session's id ``s``: itself, altered, malformed.
_SESSION_ID_FORMS: dict[str, Callable[[str], str]] = {
    "s": str,
    "upper": str.upper,
    "truncated": lambda s: s[:-1],
    "extended": lambda s: s + "0",
    "reversed": lambda s: s[::-1],
    "space s": lambda s: f" {s}",
    "s space": lambda s: f"{s} ",
    "s four times": lambda s: s * 4,
    "129 chars": lambda s: "a" * 129,
    "empty": lambda s: "",
    "dash": lambda s: "-",
    "first char changed": lambda s: "_" + s[1:],
}
_session_id_form = st.one_of(
    st.sampled_from(sorted(_SESSION_ID_FORMS)),
    st.text(_ID_CHARS, min_size=1, max_size=128).map(lambda text: f"'{text}"),
    ascii_text.map(lambda text: f"'{text}"),
)


def _session_id(form: str, session_id: str) -> str:
    return form[1:] if form.startswith("'") else _SESSION_ID_FORMS[form](session_id)


_KINDS = [
    "none",
    "valid",
    "wrong sequence",
    "another session's id",
    "ended session",
    "unknown session",
    "id only",
    "sequence only",
    "malformed id",
    "repeated",
]


def _pick(items: Sequence[_T], index: int, fallback: _T) -> _T:
    return items[index % len(items)] if items else fallback


_metadata_kinds = st.sampled_from(_KINDS)
_repeats = st.lists(st.sampled_from([0, 1]), min_size=1, max_size=3)


def _session_metadata(known: Known) -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    @st.composite
    def draw_metadata(draw: st.DrawFn) -> list[tuple[str, str | bytes]]:
        kind = draw(_metadata_kinds, label="metadata kind")
        session = _pick(known.live, draw(_INDEX), None)
        assert session is not None, "no live session"
        sid, number = session.session_id, str(session.expected_sequence)
        right: list[tuple[str, str | bytes]] = [(SESSION_ID_KEY, sid), (SEQUENCE_KEY, number)]
        if kind == "none":
            return []
        if kind == "valid":
            return right
        if kind == "wrong sequence":
            sequence = _sequence(draw(_sequence_form), session.expected_sequence)
            return [(SESSION_ID_KEY, sid), (SEQUENCE_KEY, sequence)]
        if kind == "another session's id":
            other = _pick(known.live, draw(_INDEX), session)
            return [(SESSION_ID_KEY, other.session_id), (SEQUENCE_KEY, number)]
        if kind == "ended session":
            gone = _pick(known.ended, draw(_INDEX), None)
            own_number = draw(st.booleans())
            if gone is None:  # none ended yet: a session that never existed
                return [(SESSION_ID_KEY, "0" * 32), (SEQUENCE_KEY, number)]
            sequence = number if own_number else str(gone.expected_sequence)
            return [(SESSION_ID_KEY, gone.session_id), (SEQUENCE_KEY, sequence)]
        if kind == "unknown session":
            return [(SESSION_ID_KEY, draw(_HEX32)), (SEQUENCE_KEY, number)]
        if kind == "id only":
            return right[:1]
        if kind == "sequence only":
            return right[1:]
        if kind == "malformed id":
            return [(SESSION_ID_KEY, _session_id(draw(_session_id_form), sid)), right[1]]
        return [*right, *(right[i] for i in draw(_repeats))]

    return draw_metadata()


#: Keys that look like ours but are not.
NEAR_MISS_KEYS = [
    "peer-session",
    "peer-sessionid",
    "peer_session_id",
    "peer-session-ids",
    "peer-session-id.",
    "x-peer-session-id",
    "session-id",
    "peer-sequences",
    "peer_sequence",
    "peer-seq",
    "peer.sequence",
    "peersequence",
    "sequence",
    "peer-",
]
#: Keys HTTP/2 or gRPC's transport give a meaning of their own. Keys starting with
#: ``grpc-`` are left out: gRPC reserves them, and grpcio's own client mishandles a
#: request that carries one (with ``grpc-status: 13`` it reports OK without the
#: response message the server sent), so their outcomes say nothing about the server.
TRANSPORT_KEYS = [
    "te",
    "host",
    "content-type",
    "user-agent",
    "authorization",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
]
#: Keys a client may send: lowercase letters, digits, ``_.-`` (``grpc-`` is reserved).
_legal_keys = st.text(
    string.ascii_lowercase + string.digits + "_.-", min_size=1, max_size=24
).filter(lambda key: not key.startswith("grpc-"))
_legal_text_keys = _legal_keys.filter(lambda key: not key.endswith("-bin"))
#: Lengths of huge values: some KiB, within the server's metadata limit (16 KiB by
#: default) even several at a time. Metadata past the limit is refused by the transport,
#: and each such call costs some 100 ms: it has a test of its own.
_huge_length = st.integers(1_000, 4_000)
_huge_text = st.builds(lambda c, n: c * n, st.sampled_from("a0 -~"), _huge_length)
_huge_bytes = st.builds(lambda c, n: c * n, st.sampled_from([b"\x00", b"\xff", b"a"]), _huge_length)


def _rarely_huge(
    usual: st.SearchStrategy[_T], huge: st.SearchStrategy[_T]
) -> st.SearchStrategy[_T]:
    """``usual`` values, and one time in eight a huge one."""
    return st.integers(0, 7).flatmap(lambda n: huge if n == 7 else usual)


#: Whether to send a huge value instead, and which.
_huge_instead: st.SearchStrategy[str | None] = _rarely_huge(st.none(), _huge_text)
_text_values = _rarely_huge(ascii_text, _huge_text)
#: Binary values: anything, including the UTF-8 of any unicode text.
_binary_values = _rarely_huge(
    st.one_of(st.binary(max_size=64), st.text(max_size=20).map(str.encode)), _huge_bytes
)
_ENTRY_KINDS = [
    "session id",
    "sequence",
    "ours -bin",
    "near-miss key",
    "transport",
    "random",
    "random -bin",
]
_entry_kinds = st.sampled_from(_ENTRY_KINDS)
_our_bin_keys = st.sampled_from([SESSION_ID_KEY + "-bin", SEQUENCE_KEY + "-bin"])
_near_miss_keys = st.sampled_from(NEAR_MISS_KEYS)
_transport_keys = st.sampled_from(TRANSPORT_KEYS)
_which_value = st.integers(0, 2)


def _metadata_entry(known: Known) -> st.SearchStrategy[tuple[str, str | bytes]]:
    @st.composite
    def draw_entry(draw: st.DrawFn) -> tuple[str, str | bytes]:
        kind = draw(_entry_kinds)
        session = _pick(known.live, draw(_INDEX), None)
        assert session is not None, "no live session"
        sid, expected = session.session_id, session.expected_sequence
        if kind == "session id":
            value = _session_id(draw(_session_id_form), sid)
            return SESSION_ID_KEY, draw(_huge_instead) or value
        if kind == "sequence":
            value = _sequence(draw(_sequence_form), expected)
            return SEQUENCE_KEY, draw(_huge_instead) or value
        if kind == "ours -bin":
            key = draw(_our_bin_keys)
            right = (sid if key.startswith(SESSION_ID_KEY) else str(expected)).encode()
            return key, right if draw(st.booleans()) else draw(_binary_values)
        if kind == "near-miss key":
            key = draw(_near_miss_keys)
            which = draw(_which_value)
            return key, sid if which == 1 else str(expected) if which == 2 else draw(_text_values)
        if kind == "transport":
            return draw(_transport_keys), draw(_text_values)
        if kind == "random":
            return draw(_legal_text_keys), draw(_text_values)
        return draw(_legal_keys) + "-bin", draw(_binary_values)

    return draw_entry()
