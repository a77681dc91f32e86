"""The session state machine: which state changes are legal, and that nothing else happens.

The spec (peer.proto): INITIAL -> HANDSHAKE_SENT -> ESTABLISHED -> TERMINATED or EXPIRED,
and INITIAL or HANDSHAKE_SENT -> TERMINATED or EXPIRED. Every other change, including staying put,
is refused with InvalidTransition and changes nothing.
"""

from __future__ import annotations

import pytest

from peer_grpc import (
    InvalidTransition,
    ManualClock,
    Session,
    SessionManager,
    SessionState,
    SessionStore,
)
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.session import SESSION_MACHINE
from peer_grpc.core.state_machine import StateMachine
from tests.conftest import admit, state_slug, transition_params

S = SessionState
IDLE_TIMEOUT = 30.0

#: The legal moves, written out from the protocol spec (not derived from the code's table).
LEGAL: frozenset[tuple[SessionState, SessionState]] = frozenset(
    {
        (S.INITIAL, S.HANDSHAKE_SENT),
        (S.INITIAL, S.TERMINATED),
        (S.INITIAL, S.EXPIRED),
        (S.HANDSHAKE_SENT, S.ESTABLISHED),
        (S.HANDSHAKE_SENT, S.TERMINATED),
        (S.HANDSHAKE_SENT, S.EXPIRED),
        (S.ESTABLISHED, S.TERMINATED),
        (S.ESTABLISHED, S.EXPIRED),
    }
)


LEGAL_PAIRS = transition_params(SessionState, LEGAL, legal_ones=True)
ILLEGAL_PAIRS = transition_params(SessionState, LEGAL, legal_ones=False)


def test_the_pairs_cover_every_combination_of_states() -> None:
    assert len(LEGAL_PAIRS) == 8
    assert len(LEGAL_PAIRS) + len(ILLEGAL_PAIRS) == len(SessionState) ** 2


def test_transition_table_is_the_spec() -> None:
    """The code's table lists exactly the legal moves, with an entry for every state."""
    assert set(SESSION_MACHINE.transitions) == set(SessionState)
    assert {(s, t) for s, targets in SESSION_MACHINE.transitions.items() for t in targets} == LEGAL


@pytest.mark.parametrize(
    ("state", "wire_value"),
    [
        pytest.param(S.INITIAL, peer_pb2.SESSION_STATE_INITIAL, id="initial"),
        pytest.param(S.HANDSHAKE_SENT, peer_pb2.SESSION_STATE_HANDSHAKE_SENT, id="handshake-sent"),
        pytest.param(S.ESTABLISHED, peer_pb2.SESSION_STATE_ESTABLISHED, id="established"),
        pytest.param(S.TERMINATED, peer_pb2.SESSION_STATE_TERMINATED, id="terminated"),
        pytest.param(S.EXPIRED, peer_pb2.SESSION_STATE_EXPIRED, id="expired"),
    ],
)
def test_state_values_match_the_proto_enum(state: SessionState, wire_value: int) -> None:
    assert int(state) == wire_value


@pytest.mark.parametrize(("source", "target"), LEGAL_PAIRS)
def test_legal_transition_returns_the_target(source: SessionState, target: SessionState) -> None:
    assert SESSION_MACHINE.check(source, target) is target


@pytest.mark.parametrize(("source", "target"), ILLEGAL_PAIRS)
def test_illegal_transition_is_refused(source: SessionState, target: SessionState) -> None:
    with pytest.raises(InvalidTransition) as caught:
        SESSION_MACHINE.check(source, target)
    error = caught.value
    assert error.source == source.name
    assert error.target == target.name
    assert error.reason == "INVALID_TRANSITION"
    assert error.error_metadata() == {
        "from_state": source.name,
        "to_state": target.name,
        "subject": "session",
    }
    assert f"{source.name} -> {target.name}" in error.message


@pytest.mark.parametrize(
    ("state", "is_final", "accepts_calls"),
    [
        pytest.param(S.INITIAL, False, False, id="initial"),
        pytest.param(S.HANDSHAKE_SENT, False, True, id="handshake-sent"),
        pytest.param(S.ESTABLISHED, False, True, id="established"),
        pytest.param(S.TERMINATED, True, False, id="terminated"),
        pytest.param(S.EXPIRED, True, False, id="expired"),
    ],
)
def test_state_properties(state: SessionState, is_final: bool, accepts_calls: bool) -> None:
    """Only TERMINATED and EXPIRED are final; only handshaken, live sessions take calls."""
    assert state.is_final is is_final
    assert state.accepts_calls is accepts_calls


# --- the store and the manager apply the same machine -------------------------------------


@pytest.fixture
def manager(store: SessionStore, clock: ManualClock) -> SessionManager:
    return SessionManager(store, clock=clock, idle_timeout=IDLE_TIMEOUT)


async def session_in(manager: SessionManager, clock: ManualClock, state: SessionState) -> Session:
    """A session of peer ``peer-a`` brought to ``state`` along legal moves only."""
    session = await manager.create_session("peer-a", "1.0")
    session_id = session.session_id
    if state is S.INITIAL:
        return session
    session = await manager.update_session_state(session_id, S.HANDSHAKE_SENT)
    if state is S.HANDSHAKE_SENT:
        return session
    if state is S.ESTABLISHED:
        return await admit(manager, session_id, 1)
    if state is S.TERMINATED:
        return await manager.terminate_session(session_id)
    clock.advance(IDLE_TIMEOUT)
    assert await manager.cleanup_expired_sessions() == 1
    expired = await manager.get_session(session_id)
    assert expired is not None
    return expired


@pytest.mark.parametrize("state", list(SessionState), ids=state_slug)
async def test_helper_reaches_every_state(
    manager: SessionManager, clock: ManualClock, state: SessionState
) -> None:
    session = await session_in(manager, clock, state)
    assert session.state is state
    assert await manager.get_session(session.session_id) == session


@pytest.mark.parametrize(("source", "target"), LEGAL_PAIRS)
async def test_manager_applies_a_legal_transition(
    manager: SessionManager, clock: ManualClock, source: SessionState, target: SessionState
) -> None:
    session = await session_in(manager, clock, source)
    clock.advance(1)

    moved = await manager.update_session_state(session.session_id, target)

    assert moved.state is target
    assert await manager.get_session(session.session_id) == moved
    if target.is_final:
        assert moved.ended_at == clock.now()
        assert await manager.get_session_by_peer("peer-a") is None
    else:
        assert moved.ended_at == 0.0


@pytest.mark.parametrize(("source", "target"), ILLEGAL_PAIRS)
async def test_manager_refuses_an_illegal_transition_and_changes_nothing(
    manager: SessionManager, clock: ManualClock, source: SessionState, target: SessionState
) -> None:
    session = await session_in(manager, clock, source)
    stats_before = await manager.get_session_stats()
    clock.advance(1)

    with pytest.raises(InvalidTransition) as caught:
        await manager.update_session_state(session.session_id, target)

    assert (caught.value.source, caught.value.target) == (source.name, target.name)
    assert await manager.get_session(session.session_id) == session
    assert await manager.get_session_stats() == stats_before


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(S.TERMINATED, S.ESTABLISHED, id="terminated-to-established"),
        pytest.param(S.INITIAL, S.ESTABLISHED, id="initial-to-established"),
        pytest.param(S.EXPIRED, S.HANDSHAKE_SENT, id="expired-to-handshake-sent"),
    ],
)
async def test_store_refuses_an_illegal_transition_and_changes_nothing(
    store: SessionStore,
    manager: SessionManager,
    clock: ManualClock,
    source: SessionState,
    target: SessionState,
) -> None:
    """The store itself enforces the machine, whoever calls it."""
    session = await session_in(manager, clock, source)

    with pytest.raises(InvalidTransition):
        await store.transition(session.session_id, target, clock.now() + 1)

    assert await store.get(session.session_id) == session


# --- the helper both machines are made with -----------------------------------------------------


def test_a_machine_must_give_every_state_a_row() -> None:
    with pytest.raises(ValueError, match=r"session states without a row: \['EXPIRED'\]"):
        StateMachine(
            "session",
            {state: set() for state in SessionState if state is not S.EXPIRED},
        )


def test_a_machine_knows_where_each_state_can_be_reached_from() -> None:
    assert SESSION_MACHINE.sources_of(S.EXPIRED) == {S.INITIAL, S.HANDSHAKE_SENT, S.ESTABLISHED}
    assert SESSION_MACHINE.sources_of(S.INITIAL) == frozenset()
    assert [s for s in SessionState if SESSION_MACHINE.is_final(s)] == [S.TERMINATED, S.EXPIRED]
