"""The in-memory session store: the default, for one server process."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import replace

from peer_grpc import window
from peer_grpc.errors import (
    SequenceError,
    SequenceErrorKind,
    SequenceExhausted,
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionTerminated,
)
from peer_grpc.retry import DEFAULT_RETRY_CACHE, CallKey, CallOutcome, RetryCache
from peer_grpc.sequence import MAX_SEQUENCE, check_strict
from peer_grpc.session import (
    Session,
    SessionStats,
    capped_deadline,
    check_owner,
    check_usable,
    short_id,
)
from peer_grpc.state import SessionState, check_transition
from peer_grpc.stores.base import Admission, SweepResult, WindowSnapshot

__all__ = ["DEFAULT_ENDED_RETENTION", "MemorySessionStore"]

#: How long ended sessions are remembered so late calls get the right reason.
DEFAULT_ENDED_RETENTION = 600.0


class MemorySessionStore:
    """Sessions in dictionaries of this process.

    Every method runs without awaiting anything, so on one event loop each call is
    atomic. Expiry uses a lazy heap of deadlines: activity does not touch the heap;
    a sweep that pops a deadline which has since moved pushes the new one. A sweep
    therefore costs in proportion to the deadlines that came due, not to the
    number of sessions.
    """

    def __init__(
        self,
        *,
        ended_retention: float = DEFAULT_ENDED_RETENTION,
        retry_cache_size: int = DEFAULT_RETRY_CACHE,
    ) -> None:
        if ended_retention < 0:
            raise ValueError("ended_retention must not be negative")
        self._ended_retention = ended_retention
        self._retry_cache_size = retry_cache_size
        self._sessions: dict[str, Session] = {}
        # Beside the immutable snapshots: per-session state mutated in place.
        self._rings: dict[str, bytearray] = {}
        self._retries: dict[str, RetryCache] = {}
        self._live_by_peer: dict[str, str] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._ended: deque[tuple[float, str]] = deque()
        self._by_state = dict.fromkeys(SessionState, 0)
        self._created_total = 0
        self._expired_total = 0
        self._terminated_total = 0
        self._sequence_errors_total = 0

    async def create(self, session: Session, max_live: int = 0) -> Session | None:
        if session.session_id in self._sessions:
            raise ValueError(f"session id collision: {short_id(session.session_id)}")
        previous_id = self._live_by_peer.get(session.peer_id)
        previous = self._sessions.get(previous_id) if previous_id else None
        if max_live and previous is None and self._live_count() >= max_live:
            raise SessionLimitReached(max_live)
        if previous is not None and not previous.state.is_final:
            now = session.created_at
            # Expired but not yet swept: it ends as what it already is.
            final = SessionState.EXPIRED if previous.is_expired_at(now) else SessionState.TERMINATED
            self._end(previous, final, now)
        self._put(session)
        if session.window:
            self._rings[session.session_id] = window.new_ring(session.window)
        self._retries[session.session_id] = RetryCache(self._retry_cache_size)
        self._live_by_peer[session.peer_id] = session.session_id
        heapq.heappush(self._deadlines, (session.expires_at, session.session_id))
        self._created_total += 1
        return previous

    async def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def get_by_peer(self, peer_id: str) -> Session | None:
        session_id = self._live_by_peer.get(peer_id)
        return self._sessions.get(session_id) if session_id else None

    async def transition(self, session_id: str, target: SessionState, now: float) -> Session:
        session = self._require(session_id)
        check_transition(session.state, target)
        if target.is_final:
            return self._end(session, target, now)
        return self._put(replace(session, state=target))

    async def touch(self, session_id: str, now: float, expires_at: float) -> Session:
        session = self._require(session_id)
        if session.is_expired_at(now):
            raise SessionExpired(f"session {short_id(session_id)} expired")
        if session.state.is_final:
            raise SessionTerminated(f"session {short_id(session_id)} was terminated")
        expires_at = capped_deadline(session, expires_at)
        return self._put(replace(session, last_activity=now, expires_at=expires_at))

    async def admit(
        self,
        session_id: str,
        sequence: int,
        key: CallKey,
        now: float,
        expires_at: float,
        identity: str = "",
    ) -> Admission:
        found = self._sessions.get(session_id)
        if found is not None:
            check_owner(found, identity)
            replay = self._retries[session_id].find(sequence, key)
            if replay is not None:
                return Admission(found, replay)
        session = check_usable(found, session_id, now)
        try:
            highest = self._accept(session, sequence)
        except (SequenceError, SequenceExhausted):
            self._sequence_errors_total += 1
            raise
        state = session.state
        if state is SessionState.HANDSHAKE_SENT:
            state = check_transition(state, SessionState.ESTABLISHED)
        admitted = self._put(
            replace(
                session,
                state=state,
                highest_accepted=highest,
                expected_sequence=highest + 1,
                sequence_num=session.sequence_num + 1,
                last_activity=now,
                expires_at=capped_deadline(session, expires_at),
            )
        )
        self._retries[session_id].remember(sequence, key)
        return Admission(admitted)

    def _accept(self, session: Session, sequence: int) -> int:
        """Apply the session's sequence rule; returns the new highest accepted sequence."""
        session_id = session.session_id
        if not session.window:
            if session.expected_sequence > MAX_SEQUENCE:
                raise _exhausted(session_id)
            check_strict(session_id, session.expected_sequence, sequence)
            return sequence
        ring = self._rings[session_id]
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
        ring = self._rings.get(session_id)
        if ring is None:
            return WindowSnapshot(session.highest_accepted, b"")
        accepted = window.window_bitmap(ring, session.window, session.highest_accepted)
        return WindowSnapshot(session.highest_accepted, accepted)

    async def next_send_sequence(self, session_id: str) -> int:
        session = self._require(session_id)
        return self._put(replace(session, sequence_num=session.sequence_num + 1)).sequence_num

    async def sweep(self, now: float, limit: int) -> SweepResult:
        expired = purged = work = 0
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now and work < limit:
            _, session_id = heapq.heappop(deadlines)
            work += 1
            session = self._sessions.get(session_id)
            if session is None or session.state.is_final:
                continue
            if session.expires_at > now:  # activity moved the deadline since it was pushed
                heapq.heappush(deadlines, (session.expires_at, session_id))
                continue
            self._end(session, SessionState.EXPIRED, now)
            expired += 1
        ended = self._ended
        while ended and ended[0][0] <= now and work < limit:
            _, session_id = ended.popleft()
            work += 1
            session = self._sessions.pop(session_id, None)
            self._rings.pop(session_id, None)
            self._retries.pop(session_id, None)
            if session is not None:
                self._by_state[session.state] -= 1
                purged += 1
        more = bool(deadlines and deadlines[0][0] <= now) or bool(ended and ended[0][0] <= now)
        return SweepResult(expired=expired, purged=purged, more=more)

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
        return len(self._sessions)

    def _live_count(self) -> int:
        """Sessions not yet ended (expired ones count until the sweep ends them)."""
        counts = self._by_state
        return sum(counts[state] for state in SessionState if not state.is_final)

    def _require(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFound(f"no session {short_id(session_id)}")
        return session

    def _put(self, session: Session) -> Session:
        """Store ``session``, keeping the per-state counts in step."""
        old = self._sessions.get(session.session_id)
        if old is not None:
            self._by_state[old.state] -= 1
        self._by_state[session.state] += 1
        self._sessions[session.session_id] = session
        return session

    def _end(self, session: Session, final: SessionState, now: float) -> Session:
        """Move a live session to a final state and schedule it to be forgotten."""
        ended = self._put(
            replace(session, state=check_transition(session.state, final), ended_at=now)
        )
        if self._live_by_peer.get(session.peer_id) == session.session_id:
            del self._live_by_peer[session.peer_id]
        self._ended.append((now + self._ended_retention, session.session_id))
        if final is SessionState.EXPIRED:
            self._expired_total += 1
        else:
            self._terminated_total += 1
        return ended


def _exhausted(session_id: str) -> SequenceExhausted:
    return SequenceExhausted(
        f"session {short_id(session_id)} used its last sequence number (2^64-1); "
        "sequences never wrap: terminate it and open a new session"
    )
