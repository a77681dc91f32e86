"""The expiry structure: a sweep visits what expired, never the sessions that stayed active."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer_grpc.core.retry import CallKey
from peer_grpc.core.session import Session, SessionState
from peer_grpc.stores.memory.expiry import ExpiryWheel
from peer_grpc.stores.memory.sessions import MemorySessionStore


def never_asked(key: str) -> float:
    raise AssertionError(f"the deadline of {key} was looked up")


def test_keys_come_due_at_their_deadline_and_not_before():
    wheel = ExpiryWheel()
    deadlines = {"a": 10.2, "b": 10.7, "c": 12.0}
    for key, deadline in deadlines.items():
        wheel.add(key, deadline)

    assert wheel.pop_due(10.1, 10, deadlines.__getitem__) == ([], False)
    assert wheel.pop_due(10.5, 10, deadlines.__getitem__) == (["a"], False)
    assert wheel.pop_due(11.99, 10, deadlines.__getitem__) == (["b"], False)
    assert wheel.pop_due(12.0, 10, deadlines.__getitem__) == (["c"], False)
    assert len(wheel) == 0


def test_a_moved_deadline_is_not_visited_at_the_old_one():
    wheel = ExpiryWheel()
    for number in range(1000):
        wheel.add(f"k{number}", 5.0)
    for number in range(1000):
        wheel.move(f"k{number}", 5.0, 65.0)

    assert wheel.pop_due(64.0, 1, never_asked) == ([], False)
    assert len(wheel) == 1000


def test_a_discarded_key_never_comes_due():
    wheel = ExpiryWheel()
    wheel.add("gone", 3.0)
    wheel.discard("gone", 3.0)

    assert wheel.pop_due(100.0, 10, never_asked) == ([], False)


def test_a_batch_stops_at_its_limit_and_says_more_is_due():
    wheel = ExpiryWheel()
    for number in range(25):
        wheel.add(f"k{number}", 1.0 + number / 10)  # seconds 1, 2 and 3

    batches = []
    more = True
    while more:
        due, more = wheel.pop_due(10.0, 10, never_asked)
        batches.append(len(due))
    assert batches == [10, 10, 5]


@given(
    deadlines=st.dictionaries(
        st.text(min_size=1, max_size=4), st.floats(0, 50, allow_nan=False), max_size=40
    ),
    now=st.floats(0, 60, allow_nan=False),
    limit=st.integers(1, 50),
)
def test_sweeping_in_batches_yields_exactly_the_due_keys(deadlines, now, limit):
    wheel = ExpiryWheel()
    for key, deadline in deadlines.items():
        wheel.add(key, deadline)

    swept: list[str] = []
    more = True
    while more:
        due, more = wheel.pop_due(now, limit, deadlines.__getitem__)
        assert len(due) <= limit
        swept += due
    assert sorted(swept) == sorted(key for key, deadline in deadlines.items() if deadline <= now)
    assert len(wheel) == len(deadlines) - len(swept)


def established(number: int, now: float, idle: float) -> Session:
    return Session(
        session_id=f"{number:032x}",
        peer_id=f"peer-{number}",
        state=SessionState.HANDSHAKE_SENT,
        protocol_version="1.0",
        capabilities=(),
        created_at=now,
        last_activity=now,
        expires_at=now + idle,
    )


@pytest.mark.parametrize("activity", ["touch", "admit"])
async def test_a_store_sweep_costs_the_expired_sessions_not_the_active_ones(activity):
    store = MemorySessionStore()
    for number in range(1000):
        await store.create(established(number, 0.0, 60.0))
    # 990 sessions stay active past the first deadline; 10 fall silent.
    for number in range(10, 1000):
        session_id = f"{number:032x}"
        if activity == "touch":
            await store.touch(session_id, 30.0, 90.0)
        else:
            await store.admit(session_id, 1, CallKey("Ping", b"d"), 30.0, 90.0)

    # A batch of exactly 10 units of work finds all 10, and nothing more is due.
    result = await store.sweep(61.0, 10)

    assert (result.expired, result.more) == (10, False)
    assert (await store.stats()).expired == 10
