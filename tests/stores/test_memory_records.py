"""The memory store's packed records give back exactly the session and window they were given."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peer_grpc.core import window
from peer_grpc.core.sequence import MAX_SEQUENCE
from peer_grpc.core.session import Session, SessionState
from peer_grpc.stores.memory.records import deadline_of, ended, pack, ring_of, state_of, unpack

times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
widths = st.sampled_from([0, 1, 8, 64, 65, window.MAX_WINDOW])


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    return Session(
        session_id=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        peer_id=draw(st.text(min_size=1, max_size=128)),
        state=draw(st.sampled_from(SessionState)),
        protocol_version=draw(st.sampled_from(["1.0", "1.1"])),
        capabilities=tuple(draw(st.lists(st.text(max_size=10), max_size=3))),
        created_at=draw(times),
        last_activity=draw(times),
        expires_at=draw(times),
        sequence_num=draw(st.integers(0, MAX_SEQUENCE)),
        ended_at=draw(times),
        window=draw(widths),
        highest_accepted=draw(st.integers(0, MAX_SEQUENCE)),
        token_hash=draw(st.sampled_from([b"", bytes(range(32))])),
        identity=draw(st.text(max_size=40)),
        lifetime_ends_at=draw(times),
    )


@given(session=sessions(), data=st.data())
def test_a_packed_session_unpacks_to_itself_with_its_ring(session: Session, data: st.DataObject):
    ring = (
        bytearray(data.draw(st.binary(min_size=size, max_size=size)))
        if (size := window.ring_size(session.window) if session.window else 0)
        else bytearray()
    )
    record = pack(session, ring)

    assert unpack(session.session_id, record) == session
    assert ring_of(record) == ring
    assert state_of(record) is session.state
    assert deadline_of(record) == session.expires_at


@given(session=sessions(), now=times)
def test_ending_a_record_changes_its_state_and_end_alone(session: Session, now: float):
    record = pack(session, bytearray(window.ring_size(session.window)) if session.window else b"")

    after = unpack(session.session_id, ended(record, SessionState.EXPIRED, now))

    assert after.state is SessionState.EXPIRED
    assert after.ended_at == now
    assert (after.sequence_num, after.highest_accepted, after.token_hash) == (
        session.sequence_num,
        session.highest_accepted,
        session.token_hash,
    )
