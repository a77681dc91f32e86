"""The in-memory session store: the default, for one server process."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from peer_grpc.core import window
from peer_grpc.core.errors import (
    SequenceError,
    SequenceErrorKind,
    SequenceExhausted,
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionTerminated,
)
from peer_grpc.core.retry import DEFAULT_RETRY_CACHE, CallKey, CallOutcome, RetryCache
from peer_grpc.core.sequence import MAX_SEQUENCE, check_strict
from peer_grpc.core.session import (
    SESSION_MACHINE,
    Session,
    SessionState,
    SessionStats,
    capped_deadline,
    check_owner,
    check_usable,
    short_id,
)
from peer_grpc.stores.memory.expiry import ExpiryWheel
from peer_grpc.stores.memory.records import (
    Record,
    deadline_of,
    ended,
    pack,
    ring_of,
    state_of,
    unpack,
)
from peer_grpc.stores.protocols import Admission, SweepResult, WindowSnapshot

__all__ = ["DEFAULT_ENDED_RETENTION", "DEFAULT_MAX_ENDED_SESSIONS", "MemorySessionStore"]

#: How long ended sessions are remembered so late calls get the right reason.
DEFAULT_ENDED_RETENTION = 600.0
#: Ended sessions remembered at most (about 1.2 KB each): under a flood of short
#: sessions the oldest are forgotten early, and a late call on one of those gets
#: SESSION_NOT_FOUND instead of SESSION_TERMINATED or SESSION_EXPIRED.
DEFAULT_MAX_ENDED_SESSIONS = 100_000


class MemorySessionStore:
    """Sessions in dictionaries of this process.

    Every method runs without awaiting anything, so on one event loop each call is
    atomic. Deadlines sit in an :class:`~peer_grpc.stores.memory.expiry.ExpiryWheel` of
    one-second buckets, moved by activity only when it crosses a second, so a
    sweep costs in proportion to the sessions that expired, not to the number of
    sessions.

    Args:
        ended_retention: seconds an ended session is remembered, so that a late call
            learns why it ended.
        retry_cache_size: accepted calls per session remembered to answer resends.
        max_ended: ended sessions remembered at most; beyond, the oldest are forgotten.
    """

    def __init__(
        self,
        *,
        ended_retention: float = DEFAULT_ENDED_RETENTION,
        retry_cache_size: int = DEFAULT_RETRY_CACHE,
        max_ended: int = DEFAULT_MAX_ENDED_SESSIONS,
    ) -> None:
        if ended_retention < 0:
            raise ValueError("ended_retention must not be negative")
        if max_ended < 0:
            raise ValueError("max_ended must not be negative")
        self._ended_retention = ended_retention
        self._max_ended = max_ended
        self._retry_cache_size = retry_cache_size
        # Compact records, not snapshots: see memory_records. Snapshots are built on demand.
        self._records: dict[str, Record] = {}
        self._retries: dict[str, RetryCache] = {}
        self._live_by_peer: dict[str, str] = {}
        self._expiry = ExpiryWheel()
        self._ended: deque[tuple[float, str]] = deque()
        self._by_state = dict.fromkeys(SessionState, 0)
        self._created_total = 0
        self._expired_total = 0
        self._terminated_total = 0
        self._sequence_errors_total = 0

    async def create(self, session: Session, max_live: int = 0) -> Session | None:
        if session.session_id in self._records:
            raise ValueError(f"session id collision: {short_id(session.session_id)}")
        previous_id = self._live_by_peer.get(session.peer_id)
        previous = self._load(previous_id) if previous_id else None
        if max_live and previous is None and self._live_count() >= max_live:
            raise SessionLimitReached(max_live)
        if previous is not None and not previous.state.is_final:
            now = session.created_at
            # Expired but not yet swept: it ends as what it already is.
            final = SessionState.EXPIRED if previous.is_expired_at(now) else SessionState.TERMINATED
            self._end(previous.session_id, final, now)
        self._put(session, window.new_ring(session.window) if session.window else b"")
        self._live_by_peer[session.peer_id] = session.session_id
        self._expiry.add(session.session_id, session.expires_at)
        self._created_total += 1
        return previous

    async def get(self, session_id: str) -> Session | None:
        return self._load(session_id)

    async def get_by_peer(self, peer_id: str) -> Session | None:
        session_id = self._live_by_peer.get(peer_id)
        return self._load(session_id) if session_id else None

    async def transition(self, session_id: str, target: SessionState, now: float) -> Session:
        session = self._require(session_id)
        SESSION_MACHINE.check(session.state, target)
        if target.is_final:
            return self._end(session_id, target, now)
        return self._put(replace(session, state=target))

    async def touch(self, session_id: str, now: float, expires_at: float) -> Session:
        session = self._require(session_id)
        if session.is_expired_at(now):
            raise SessionExpired(f"session {short_id(session_id)} expired")
        if session.state.is_final:
            raise SessionTerminated(f"session {short_id(session_id)} was terminated")
        expires_at = capped_deadline(session, expires_at)
        self._expiry.move(session_id, session.expires_at, expires_at)
        return self._put(replace(session, last_activity=now, expires_at=expires_at))

    async def resume(
        self, session_id: str, now: float, expires_at: float, last_acknowledged: int
    ) -> Session:
        # Memory loses nothing it acknowledged (a restart loses everything): the floor
        # only matters when the peer claims more than it was told, which moves it on.
        session = await self.touch(session_id, now, expires_at)
        if last_acknowledged <= session.highest_accepted:
            return session
        ring = ring_of(self._records[session_id]) if session.window else _NO_RING
        highest = window.accept_up_to(ring, session.highest_accepted, last_acknowledged)
        return self._put(replace(session, highest_accepted=highest), ring or None)

    async def admit(
        self,
        session_id: str,
        sequence: int,
        key: CallKey,
        now: float,
        expires_at: float,
        identity: str = "",
    ) -> Admission:
        found = self._load(session_id)
        retries = None
        if found is not None:
            check_owner(found, identity)
            retries = self._retries.get(session_id)
            replay = retries.find(sequence, key) if retries is not None else None
            if replay is not None:
                return Admission(found, replay)
        session = check_usable(found, session_id, now)
        ring = ring_of(self._records[session_id]) if session.window else _NO_RING
        try:
            highest = self._accept(session, sequence, ring)
        except (SequenceError, SequenceExhausted):
            self._sequence_errors_total += 1
            raise
        state = session.state
        if state is SessionState.HANDSHAKE_SENT:
            state = SESSION_MACHINE.check(state, SessionState.ESTABLISHED)
        expires_at = capped_deadline(session, expires_at)
        self._expiry.move(session_id, session.expires_at, expires_at)
        admitted = self._put(session.after_call(state, highest, now, expires_at), ring)
        if retries is None and self._retry_cache_size:
            # Made at the first call, so that a session that never calls costs nothing here.
            retries = self._retries[session_id] = RetryCache(self._retry_cache_size)
        if retries is not None:
            retries.remember(sequence, key)
        return Admission(admitted)

    def _accept(self, session: Session, sequence: int, ring: bytearray) -> int:
        """Apply the session's sequence rule (changing the window's ``ring``); returns the
        new highest accepted sequence."""
        session_id = session.session_id
        if not session.window:
            if session.expected_sequence > MAX_SEQUENCE:
                raise _exhausted(session_id)
            check_strict(session_id, session.expected_sequence, sequence)
            return sequence
        highest = session.highest_accepted
        verdict = window.check(ring, session.window, highest, sequence)
        if verdict is window.Verdict.ACCEPT:
            return window.accept(ring, highest, sequence)
        if highest == MAX_SEQUENCE:
            raise _exhausted(session_id)
        kind = (
            SequenceErrorKind.GAP if verdict is window.Verdict.AHEAD else SequenceErrorKind.REPLAY
        )
        raise SequenceError(
            session_id,
            highest + 1,
            sequence,
            kind,
            outside_window=verdict is window.Verdict.BEHIND,
            replay_window=session.window,
        )

    async def record(self, session_id: str, sequence: int, outcome: CallOutcome) -> None:
        cache = self._retries.get(session_id)
        if cache is not None:
            cache.record(sequence, outcome)

    async def window(self, session_id: str) -> WindowSnapshot:
        session = self._require(session_id)
        ring = ring_of(self._records[session_id])
        if not ring:
            return WindowSnapshot(session.highest_accepted, b"")
        accepted = window.window_bitmap(ring, session.window, session.highest_accepted)
        return WindowSnapshot(session.highest_accepted, accepted)

    async def next_send_sequence(self, session_id: str) -> int:
        session = self._require(session_id)
        return self._put(replace(session, sequence_num=session.sequence_num + 1)).sequence_num

    async def sweep(self, now: float, limit: int) -> SweepResult:
        due, more_due = self._expiry.pop_due(now, limit, self._deadline_of)
        for session_id in due:  # only live sessions are scheduled
            self._end_record(session_id, SessionState.EXPIRED, now, scheduled=False)
        work = len(due)
        purged = 0
        ended = self._ended
        while ended and ended[0][0] <= now and work < limit:
            _, session_id = ended.popleft()
            work += 1
            purged += self._forget(session_id)
        more = more_due or bool(ended and ended[0][0] <= now)
        return SweepResult(expired=len(due), purged=purged, more=more)

    def _forget(self, session_id: str) -> bool:
        """Drop an ended session's record; whether there was one."""
        record = self._records.pop(session_id, None)
        self._retries.pop(session_id, None)
        if record is None:
            return False
        self._by_state[state_of(record)] -= 1
        return True

    def _deadline_of(self, session_id: str) -> float:
        return deadline_of(self._records[session_id])

    async def stats(self) -> SessionStats:
        counts = self._by_state
        return SessionStats(
            handshaking=counts[SessionState.INITIAL] + counts[SessionState.HANDSHAKE_SENT],
            established=counts[SessionState.ESTABLISHED],
            terminated=counts[SessionState.TERMINATED],
            expired=counts[SessionState.EXPIRED],
            created_total=self._created_total,
            expired_total=self._expired_total,
            terminated_total=self._terminated_total,
            sequence_errors_total=self._sequence_errors_total,
        )

    async def check(self) -> None:
        """Always available: it lives in this process."""

    async def close(self) -> None:
        """Nothing to release; sessions vanish with the process."""

    def __len__(self) -> int:
        """Sessions held, live and ended."""
        return len(self._records)

    def _live_count(self) -> int:
        """Sessions not yet ended (expired ones count until the sweep ends them)."""
        counts = self._by_state
        return sum(counts[state] for state in SessionState if not state.is_final)

    def _require(self, session_id: str) -> Session:
        session = self._load(session_id)
        if session is None:
            raise SessionNotFound(f"no session {short_id(session_id)}")
        return session

    def _put(self, session: Session, ring: bytes | bytearray | None = None) -> Session:
        """Store ``session`` and its window's ``ring`` (None: the ring stored already),
        keeping the per-state counts in step."""
        records = self._records
        old = records.get(session.session_id)
        old_state = state_of(old) if old is not None else None
        if old_state is not session.state:
            if old_state is not None:
                self._by_state[old_state] -= 1
            self._by_state[session.state] += 1
        if ring is None:
            ring = ring_of(old) if old is not None and session.window else b""
        records[session.session_id] = pack(session, ring)
        return session

    def _load(self, session_id: str) -> Session | None:
        record = self._records.get(session_id)
        return unpack(session_id, record) if record is not None else None

    def _end(self, session_id: str, final: SessionState, now: float) -> Session:
        """Move a live session to a final state and schedule it to be forgotten."""
        return unpack(session_id, self._end_record(session_id, final, now))

    def _end_record(
        self, session_id: str, final: SessionState, now: float, scheduled: bool = True
    ) -> Record:
        """:meth:`_end` on the record alone. ``scheduled`` is False when the sweep has
        already taken the session's deadline."""
        record = self._records[session_id]
        state = state_of(record)
        SESSION_MACHINE.check(state, final)
        self._records[session_id] = ended_record = ended(record, final, now)
        self._by_state[state] -= 1
        self._by_state[final] += 1
        peer_id = record[1]
        if self._live_by_peer.get(peer_id) == session_id:
            del self._live_by_peer[peer_id]
        if scheduled:
            self._expiry.discard(session_id, deadline_of(record))
        self._ended.append((now + self._ended_retention, session_id))
        if len(self._ended) > self._max_ended:  # the bound on memory: forget the oldest now
            self._forget(self._ended.popleft()[1])
        if final is SessionState.EXPIRED:
            self._expired_total += 1
        else:
            self._terminated_total += 1
        return ended_record


#: The ring of a strict-mode session: none.
_NO_RING = bytearray()


def _exhausted(session_id: str) -> SequenceExhausted:
    return SequenceExhausted(
        f"session {short_id(session_id)} used its last sequence number (2^64-1); "
        "sequences never wrap: terminate it and open a new session"
    )
