"""The session manager over every store: lifecycle, admission of calls, expiry and stats.

Time is a ManualClock: tests move it by hand and never sleep.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from peer_grpc import (
    InvalidSessionState,
    ManualClock,
    MemorySessionStore,
    PeerError,
    SequenceError,
    SequenceErrorKind,
    SequenceMode,
    Session,
    SessionExpired,
    SessionManager,
    SessionNotFound,
    SessionState,
    SessionStats,
    SessionStore,
    SessionTerminated,
)
from tests.conftest import admit

S = SessionState
IDLE = 30.0
UNKNOWN_ID = "f" * 32


@pytest.fixture
def manager(store: SessionStore, clock: ManualClock) -> SessionManager:
    return SessionManager(store, clock=clock, idle_timeout=IDLE)


async def handshaken(manager: SessionManager, peer_id: str = "peer-a") -> Session:
    """A session as the Handshake call leaves it: HANDSHAKE_SENT, expecting sequence 1."""
    session = await manager.create_session(peer_id, "1.0")
    return await manager.update_session_state(session.session_id, S.HANDSHAKE_SENT)


async def established(manager: SessionManager, peer_id: str = "peer-a") -> Session:
    """A session whose first call (sequence 1) was admitted."""
    session = await handshaken(manager, peer_id)
    return await admit(manager, session.session_id, 1)


async def stored(manager: SessionManager, session_id: str) -> Session:
    session = await manager.get_session(session_id)
    assert session is not None
    return session


# --- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("idle_timeout", [0.0, -1.0], ids=["zero", "negative"])
def test_idle_timeout_must_be_positive(store: SessionStore, idle_timeout: float) -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        SessionManager(store, idle_timeout=idle_timeout)


# --- creating and handshaking ----------------------------------------------------------------


async def test_create_session_opens_an_initial_session(
    manager: SessionManager, clock: ManualClock
) -> None:
    now = clock.now()
    session = await manager.create_session("peer-a", "1.0", ["tasks", "heartbeat"])

    assert session == Session(
        session_id=session.session_id,
        peer_id="peer-a",
        state=S.INITIAL,
        protocol_version="1.0",
        capabilities=("tasks", "heartbeat"),
        created_at=now,
        last_activity=now,
        expires_at=now + IDLE,
        sequence_num=0,
        ended_at=0.0,
        lifetime_ends_at=now + manager.max_lifetime,
    )
    assert await manager.get_session(session.session_id) == session
    assert await manager.get_session_by_peer("peer-a") == session


async def test_session_ids_are_unique_128_bit_hex(manager: SessionManager) -> None:
    ids = [(await manager.create_session(f"peer-{i}", "1.0")).session_id for i in range(64)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", session_id) for session_id in ids)
    assert len(set(ids)) == len(ids)


async def test_handshake_moves_the_session_to_handshake_sent(manager: SessionManager) -> None:
    created = await manager.create_session("peer-a", "1.0")
    session = await manager.update_session_state(created.session_id, S.HANDSHAKE_SENT)

    assert session == replace(created, state=S.HANDSHAKE_SENT)
    assert await stored(manager, created.session_id) == session


async def test_unknown_session_cannot_change_state(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFound):
        await manager.update_session_state(UNKNOWN_ID, S.HANDSHAKE_SENT)


async def test_get_unknown_session_is_none(manager: SessionManager) -> None:
    assert await manager.get_session(UNKNOWN_ID) is None
    assert await manager.get_session_by_peer("nobody") is None


# --- admitting calls -------------------------------------------------------------------------


async def test_first_call_establishes_the_session(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await handshaken(manager)
    clock.advance(5)

    admitted = await admit(manager, session.session_id, 1)

    assert admitted == replace(
        session,
        state=S.ESTABLISHED,
        highest_accepted=1,
        sequence_num=1,
        last_activity=clock.now(),
        expires_at=clock.now() + IDLE,
    )
    assert await stored(manager, session.session_id) == admitted


async def test_calls_are_admitted_in_order(manager: SessionManager, clock: ManualClock) -> None:
    session = await handshaken(manager)
    for sequence in range(1, 6):
        clock.advance(1)
        admitted = await admit(manager, session.session_id, sequence)
        assert admitted.expected_sequence == sequence + 1
        assert admitted.sequence_num == sequence
        assert admitted.state is S.ESTABLISHED
        assert admitted.expires_at == clock.now() + IDLE


Setup = Callable[[SessionManager, ManualClock], Awaitable[tuple[str, int]]]


async def _gap(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return (await established(manager)).session_id, 4  # expects 2


async def _gap_on_first_call(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return (await handshaken(manager)).session_id, 2  # expects 1


async def _replay(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return (await established(manager)).session_id, 1  # expects 2


async def _replay_zero(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return (await handshaken(manager)).session_id, 0  # expects 1


async def _unknown(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return UNKNOWN_ID, 1


async def _initial(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return (await manager.create_session("peer-a", "1.0")).session_id, 1


async def _expired_unswept(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    session = await established(manager)
    clock.advance(IDLE)  # exactly at the deadline: expired
    return session.session_id, 2


async def _expired_swept(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    session = await established(manager)
    clock.advance(IDLE)
    assert await manager.cleanup_expired_sessions() == 1
    return session.session_id, 2


async def _terminated(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    session = await established(manager)
    await manager.terminate_session(session.session_id)
    return session.session_id, 2


async def _replaced(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    session = await established(manager)
    await handshaken(manager)  # same peer handshakes again
    return session.session_id, 2


REJECTIONS = [
    pytest.param(_gap, SequenceError, True, id="gap"),
    pytest.param(_gap_on_first_call, SequenceError, True, id="gap-on-first-call"),
    pytest.param(_replay, SequenceError, True, id="replay"),
    pytest.param(_replay_zero, SequenceError, True, id="replay-zero"),
    pytest.param(_unknown, SessionNotFound, False, id="unknown-session"),
    pytest.param(_initial, InvalidSessionState, False, id="initial-state"),
    pytest.param(_expired_unswept, SessionExpired, False, id="expired-not-yet-swept"),
    pytest.param(_expired_swept, SessionExpired, False, id="expired-and-swept"),
    pytest.param(_terminated, SessionTerminated, False, id="terminated"),
    pytest.param(_replaced, SessionTerminated, False, id="replaced-by-new-handshake"),
]


@pytest.mark.parametrize(("setup", "error", "is_sequence_error"), REJECTIONS)
async def test_rejected_call_changes_nothing(
    manager: SessionManager,
    clock: ManualClock,
    setup: Setup,
    error: type[PeerError],
    is_sequence_error: bool,
) -> None:
    """A refused call leaves the session exactly as it was; only sequence errors are counted."""
    session_id, sequence = await setup(manager, clock)
    before = await manager.get_session(session_id)
    stats_before = await manager.get_session_stats()
    clock.advance(0.5)

    with pytest.raises(error):
        await admit(manager, session_id, sequence)

    assert await manager.get_session(session_id) == before
    expected_errors = stats_before.sequence_errors_total + (1 if is_sequence_error else 0)
    assert await manager.get_session_stats() == replace(
        stats_before, sequence_errors_total=expected_errors
    )


@pytest.mark.parametrize(
    ("setup", "kind", "expected"),
    [
        pytest.param(_gap, SequenceErrorKind.GAP, 2, id="gap"),
        pytest.param(_replay, SequenceErrorKind.REPLAY, 2, id="replay"),
        pytest.param(_replay_zero, SequenceErrorKind.REPLAY, 1, id="replay-zero"),
    ],
)
async def test_sequence_error_reports_expected_and_received(
    manager: SessionManager,
    clock: ManualClock,
    setup: Setup,
    kind: SequenceErrorKind,
    expected: int,
) -> None:
    session_id, sequence = await setup(manager, clock)
    with pytest.raises(SequenceError) as caught:
        await admit(manager, session_id, sequence)
    error = caught.value
    assert (error.session_id, error.kind) == (session_id, kind)
    assert (error.expected_sequence, error.received_sequence) == (expected, sequence)


async def test_call_on_initial_session_names_the_state(
    manager: SessionManager, clock: ManualClock
) -> None:
    session_id, sequence = await _initial(manager, clock)
    with pytest.raises(InvalidSessionState) as caught:
        await admit(manager, session_id, sequence)
    assert caught.value.state == "INITIAL"


async def test_right_call_after_rejections_is_admitted(manager: SessionManager) -> None:
    """Rejections do not move the expected sequence: the right number still works."""
    session = await established(manager)
    for wrong in (5, 1, 0, 3):
        with pytest.raises(SequenceError):
            await admit(manager, session.session_id, wrong)
    admitted = await admit(manager, session.session_id, 2)
    assert admitted.expected_sequence == 3
    assert (await manager.get_session_stats()).sequence_errors_total == 4


# --- activity and validity -------------------------------------------------------------------


async def test_activity_pushes_the_deadline(manager: SessionManager, clock: ManualClock) -> None:
    session = await handshaken(manager)
    clock.advance(20)

    touched = await manager.update_activity(session.session_id)

    assert touched == replace(session, last_activity=clock.now(), expires_at=clock.now() + IDLE)
    assert await stored(manager, session.session_id) == touched
    clock.advance(20)  # 40 s after creation, 20 s after the activity
    assert await manager.is_session_valid(session.session_id)


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        pytest.param(_unknown, SessionNotFound, id="unknown-session"),
        pytest.param(_expired_unswept, SessionExpired, id="expired-not-yet-swept"),
        pytest.param(_expired_swept, SessionExpired, id="expired-and-swept"),
        pytest.param(_terminated, SessionTerminated, id="terminated"),
    ],
)
async def test_activity_on_a_gone_session_is_refused(
    manager: SessionManager, clock: ManualClock, setup: Setup, error: type[PeerError]
) -> None:
    session_id, _ = await setup(manager, clock)
    before = await manager.get_session(session_id)
    with pytest.raises(error):
        await manager.update_activity(session_id)
    assert await manager.get_session(session_id) == before


async def _valid_handshaken(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return (await handshaken(manager)).session_id, 1


async def _valid_established(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    return (await established(manager)).session_id, 2


async def _just_before_deadline(manager: SessionManager, clock: ManualClock) -> tuple[str, int]:
    session = await established(manager)
    clock.advance(IDLE - 0.001)
    return session.session_id, 2


@pytest.mark.parametrize(
    ("setup", "valid"),
    [
        pytest.param(_valid_handshaken, True, id="handshake-sent"),
        pytest.param(_valid_established, True, id="established"),
        pytest.param(_just_before_deadline, True, id="just-before-deadline"),
        pytest.param(_initial, False, id="initial"),
        pytest.param(_unknown, False, id="unknown-session"),
        pytest.param(_expired_unswept, False, id="at-deadline-not-yet-swept"),
        pytest.param(_expired_swept, False, id="expired-and-swept"),
        pytest.param(_terminated, False, id="terminated"),
        pytest.param(_replaced, False, id="replaced-by-new-handshake"),
    ],
)
async def test_is_session_valid(
    manager: SessionManager, clock: ManualClock, setup: Setup, valid: bool
) -> None:
    session_id, _ = await setup(manager, clock)
    assert await manager.is_session_valid(session_id) is valid


# --- termination and the one-session-per-peer rule -------------------------------------------


async def test_terminate_session_ends_it(manager: SessionManager, clock: ManualClock) -> None:
    session = await established(manager)
    clock.advance(3)

    ended = await manager.terminate_session(session.session_id)

    assert ended == replace(session, state=S.TERMINATED, ended_at=clock.now())
    assert await stored(manager, session.session_id) == ended
    assert await manager.get_session_by_peer("peer-a") is None
    assert not await manager.is_session_valid(session.session_id)
    with pytest.raises(SessionTerminated):
        await admit(manager, session.session_id, 2)


async def test_terminating_twice_says_the_session_ended_and_changes_nothing(
    manager: SessionManager,
) -> None:
    session = await established(manager)
    ended = await manager.terminate_session(session.session_id)
    with pytest.raises(SessionTerminated):
        await manager.terminate_session(session.session_id)
    assert await stored(manager, session.session_id) == ended


async def test_terminating_an_expired_session_says_it_expired(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await established(manager)
    clock.advance(IDLE)
    await manager.cleanup_expired_sessions()
    with pytest.raises(SessionExpired):
        await manager.terminate_session(session.session_id)


async def test_terminating_an_unknown_session_is_not_found(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFound):
        await manager.terminate_session(UNKNOWN_ID)


@pytest.mark.parametrize("first_call_made", [False, True], ids=["handshake-sent", "established"])
async def test_new_handshake_replaces_the_peers_session(
    manager: SessionManager, clock: ManualClock, first_call_made: bool
) -> None:
    old = await (established if first_call_made else handshaken)(manager, "peer-a")
    other = await handshaken(manager, "peer-b")
    clock.advance(2)

    new = await manager.create_session("peer-a", "1.0")

    assert new.session_id != old.session_id
    assert await manager.get_session_by_peer("peer-a") == new
    assert await stored(manager, old.session_id) == replace(
        old, state=S.TERMINATED, ended_at=clock.now()
    )
    with pytest.raises(SessionTerminated):
        await admit(manager, old.session_id, old.expected_sequence)
    assert await manager.get_session_by_peer("peer-b") == other
    stats = await manager.get_session_stats()
    assert (stats.terminated, stats.terminated_total) == (1, 1)


async def test_new_handshake_replaces_a_session_still_in_initial(manager: SessionManager) -> None:
    old = await manager.create_session("peer-a", "1.0")

    new = await manager.create_session("peer-a", "1.0")

    assert await manager.get_session_by_peer("peer-a") == new
    assert (await stored(manager, old.session_id)).state is S.TERMINATED


# --- sweeping expired sessions ---------------------------------------------------------------


async def test_cleanup_expires_only_sessions_past_their_deadline(
    manager: SessionManager, clock: ManualClock
) -> None:
    early = await established(manager, "peer-early")
    clock.advance(10)
    late = await handshaken(manager, "peer-late")
    clock.advance(IDLE - 10)  # exactly the early session's deadline

    assert await manager.cleanup_expired_sessions() == 1

    assert await stored(manager, early.session_id) == replace(
        early, state=S.EXPIRED, ended_at=clock.now()
    )
    assert await stored(manager, late.session_id) == late
    assert await manager.get_session_by_peer("peer-early") is None
    assert await manager.cleanup_expired_sessions() == 0, "nothing expires twice"

    clock.advance(10)
    assert await manager.cleanup_expired_sessions() == 1
    assert (await stored(manager, late.session_id)).state is S.EXPIRED


async def test_cleanup_before_any_deadline_expires_nothing(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await established(manager)
    clock.advance(IDLE - 0.001)
    assert await manager.cleanup_expired_sessions() == 0
    assert await stored(manager, session.session_id) == session


async def _heartbeat(manager: SessionManager, session: Session) -> None:
    await manager.update_activity(session.session_id)


async def _call(manager: SessionManager, session: Session) -> None:
    await admit(manager, session.session_id, session.expected_sequence)


@pytest.mark.parametrize(
    "activity", [pytest.param(_heartbeat, id="heartbeat"), pytest.param(_call, id="admitted-call")]
)
async def test_cleanup_respects_activity_that_moved_a_deadline(
    manager: SessionManager,
    clock: ManualClock,
    activity: Callable[[SessionManager, Session], Awaitable[None]],
) -> None:
    busy = await handshaken(manager, "peer-busy")
    idle = await handshaken(manager, "peer-idle")
    clock.advance(20)
    await activity(manager, busy)  # busy now expires at t+50
    clock.advance(15)  # t+35: past the idle session's deadline only

    assert await manager.cleanup_expired_sessions() == 1
    assert (await stored(manager, idle.session_id)).state is S.EXPIRED
    assert await manager.is_session_valid(busy.session_id)

    clock.advance(15)  # t+50: the busy session's moved deadline
    assert await manager.cleanup_expired_sessions() == 1
    assert (await stored(manager, busy.session_id)).state is S.EXPIRED


async def test_cleanup_skips_ended_sessions(manager: SessionManager, clock: ManualClock) -> None:
    session = await established(manager)
    ended = await manager.terminate_session(session.session_id)
    clock.advance(IDLE)
    assert await manager.cleanup_expired_sessions() == 0
    assert await stored(manager, session.session_id) == ended


async def test_cleanup_works_through_more_sessions_than_one_batch(
    manager: SessionManager, clock: ManualClock
) -> None:
    sessions = [await handshaken(manager, f"peer-{i}") for i in range(10)]
    clock.advance(IDLE)

    assert await manager.cleanup_expired_sessions(batch=3) == 10

    for session in sessions:
        assert (await stored(manager, session.session_id)).state is S.EXPIRED
    stats = await manager.get_session_stats()
    assert (stats.handshaking, stats.expired, stats.expired_total) == (0, 10, 10)


async def test_cleanup_expires_a_session_left_in_initial(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create_session("peer-a", "1.0")
    clock.advance(IDLE)

    assert await manager.cleanup_expired_sessions() == 1
    assert (await stored(manager, session.session_id)).state is S.EXPIRED


async def test_memory_store_forgets_ended_sessions_after_retention(clock: ManualClock) -> None:
    manager = SessionManager(
        MemorySessionStore(ended_retention=100), clock=clock, idle_timeout=IDLE
    )
    terminated = await established(manager, "peer-t")
    expiring = await handshaken(manager, "peer-e")
    await manager.terminate_session(terminated.session_id)
    clock.advance(IDLE)
    assert await manager.cleanup_expired_sessions() == 1  # "expiring" ended at t+30

    clock.advance(69)  # t+99: the terminated session is still remembered
    assert await manager.cleanup_expired_sessions() == 0
    assert (await stored(manager, terminated.session_id)).state is S.TERMINATED

    clock.advance(1)  # t+100: its retention is over, so it is forgotten
    await manager.cleanup_expired_sessions()
    assert await manager.get_session(terminated.session_id) is None
    assert (await stored(manager, expiring.session_id)).state is S.EXPIRED

    clock.advance(IDLE)  # t+130: so is the expired one
    await manager.cleanup_expired_sessions()
    assert await manager.get_session(expiring.session_id) is None
    with pytest.raises(SessionNotFound):
        await admit(manager, expiring.session_id, 1)
    assert await manager.get_session_stats() == SessionStats(
        created_total=2, expired_total=1, terminated_total=1
    )


async def test_memory_store_forgetting_also_works_in_batches(clock: ManualClock) -> None:
    store = MemorySessionStore(ended_retention=0)
    manager = SessionManager(store, clock=clock, idle_timeout=IDLE)
    for i in range(10):
        await handshaken(manager, f"peer-{i}")
    clock.advance(IDLE)

    assert await manager.cleanup_expired_sessions(batch=3) == 10
    assert len(store) == 0


async def test_memory_store_remembers_at_most_max_ended_sessions(clock: ManualClock) -> None:
    store = MemorySessionStore(max_ended=2)
    manager = SessionManager(store, clock=clock, idle_timeout=IDLE)
    first, second, third = [await established(manager, f"peer-{n}") for n in range(3)]
    for session in (first, second, third):
        await manager.terminate_session(session.session_id)

    # The oldest ended session went at once, before its retention: memory stays bounded.
    assert await manager.get_session(first.session_id) is None
    assert (await stored(manager, second.session_id)).state is S.TERMINATED
    assert (await stored(manager, third.session_id)).state is S.TERMINATED
    assert len(store) == 2
    with pytest.raises(SessionNotFound):
        await admit(manager, first.session_id, 1)
    assert (await manager.get_session_stats()).terminated == 2


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"ended_retention": -1}, id="negative-retention"),
        pytest.param({"max_ended": -1}, id="negative-max-ended"),
    ],
)
def test_memory_store_refuses_negative_bounds(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        MemorySessionStore(**options)  # type: ignore[arg-type]


# --- statistics ------------------------------------------------------------------------------


async def test_stats_follow_every_step(manager: SessionManager, clock: ManualClock) -> None:
    assert await manager.get_session_stats() == SessionStats()

    a = await manager.create_session("peer-a", "1.0")
    assert await manager.get_session_stats() == SessionStats(handshaking=1, created_total=1)

    await manager.update_session_state(a.session_id, S.HANDSHAKE_SENT)
    assert await manager.get_session_stats() == SessionStats(handshaking=1, created_total=1)

    await admit(manager, a.session_id, 1)
    assert await manager.get_session_stats() == SessionStats(established=1, created_total=1)

    with pytest.raises(SequenceError):
        await admit(manager, a.session_id, 9)
    assert await manager.get_session_stats() == SessionStats(
        established=1, created_total=1, sequence_errors_total=1
    )

    b = await handshaken(manager, "peer-b")
    assert await manager.get_session_stats() == SessionStats(
        handshaking=1, established=1, created_total=2, sequence_errors_total=1
    )

    await handshaken(manager, "peer-a")  # replaces a
    assert await manager.get_session_stats() == SessionStats(
        handshaking=2,
        terminated=1,
        created_total=3,
        terminated_total=1,
        sequence_errors_total=1,
    )

    clock.advance(IDLE)
    assert await manager.cleanup_expired_sessions() == 2  # b and the new peer-a session
    assert await manager.get_session_stats() == SessionStats(
        terminated=1,
        expired=2,
        created_total=3,
        expired_total=2,
        terminated_total=1,
        sequence_errors_total=1,
    )

    with pytest.raises(SessionExpired):
        await admit(manager, b.session_id, 1)
    assert (await manager.get_session_stats()).sequence_errors_total == 1


# --- numbering what the server sends ---------------------------------------------------------


async def test_increment_sequence_numbers_sent_messages(manager: SessionManager) -> None:
    session = await handshaken(manager)

    assert [await manager.increment_sequence(session.session_id) for _ in range(3)] == [1, 2, 3]

    after = await stored(manager, session.session_id)
    assert after == replace(session, sequence_num=3)


async def test_admitted_call_takes_the_next_send_number(manager: SessionManager) -> None:
    """The response to an admitted call is the server's next message on the session."""
    session = await handshaken(manager)
    assert await manager.increment_sequence(session.session_id) == 1
    assert (await admit(manager, session.session_id, 1)).sequence_num == 2
    assert await manager.increment_sequence(session.session_id) == 3


async def test_increment_sequence_of_unknown_session_is_not_found(
    manager: SessionManager,
) -> None:
    with pytest.raises(SessionNotFound):
        await manager.increment_sequence(UNKNOWN_ID)


# --- resuming with what the peer saw acknowledged ---------------------------------------------


async def resumable(manager: SessionManager, accepted: int) -> Session:
    """A session with a token, that accepted sequences 1..``accepted``."""
    session = await manager.create_session("peer-r", "1.0", session_token="secret")
    await manager.update_session_state(session.session_id, S.HANDSHAKE_SENT)
    for sequence in range(1, accepted + 1):
        await admit(manager, session.session_id, sequence)
    return session


@pytest.mark.parametrize("width", [0, 16], ids=["strict", "window"])
async def test_a_resume_moves_a_record_up_to_the_sequence_its_peer_saw_acknowledged(
    store: SessionStore, clock: ManualClock, width: int
):
    mode = SequenceMode.WINDOW if width else SequenceMode.STRICT
    manager = SessionManager(store, clock=clock, sequence_mode=mode, replay_window=width or 64)
    session = await resumable(manager, accepted=3)

    # As after a rollback that lost 4 and 5, which the peer saw accepted.
    resumed = await manager.resume_session(session.session_id, "secret", "peer-r", "", 5)

    assert (resumed.highest_accepted, resumed.expected_sequence) == (5, 6)
    for lost in (4, 5):  # never accepted twice, in either mode
        with pytest.raises(SequenceError) as refused:
            await admit(manager, session.session_id, lost)
        assert refused.value.kind is SequenceErrorKind.REPLAY
    assert (await admit(manager, session.session_id, 6)).highest_accepted == 6


async def test_a_resume_below_the_record_changes_no_sequence(manager: SessionManager):
    session = await resumable(manager, accepted=3)

    resumed = await manager.resume_session(session.session_id, "secret", "peer-r", "", 2)

    assert resumed.expected_sequence == 4
    assert (await admit(manager, session.session_id, 4)).highest_accepted == 4
