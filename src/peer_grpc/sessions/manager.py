"""The session manager: session lifecycle on top of a store, with time and ids."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable

from peer_grpc.core import window
from peer_grpc.core.clock import Clock, SystemClock
from peer_grpc.core.errors import (
    InvalidTransition,
    PeerError,
    SessionNotFound,
    SessionTokenInvalid,
)
from peer_grpc.core.retry import CallKey, CallOutcome
from peer_grpc.core.sequence import SequenceMode
from peer_grpc.core.session import (
    Session,
    SessionState,
    SessionStats,
    check_owner,
    check_usable,
    short_id,
)
from peer_grpc.stores.memory.sessions import MemorySessionStore
from peer_grpc.stores.protocols import Admission, SessionStore, WindowSnapshot

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_LIFETIME",
    "DEFAULT_MAX_SESSIONS",
    "SessionEndListener",
    "SessionManager",
    "hash_session_token",
    "new_session_id",
    "new_session_token",
]

log = logging.getLogger(__name__)

#: Seconds a session may stay idle before it expires.
DEFAULT_IDLE_TIMEOUT = 60.0
#: Seconds a session may live at most, however active: a day.
DEFAULT_MAX_LIFETIME = 86_400.0
#: Live sessions a server holds at most.
DEFAULT_MAX_SESSIONS = 10_000
#: Units of store work per sweep batch; the sweep yields to the event loop between batches.
#: At a few microseconds a unit, a batch holds the loop for about a millisecond
#: (``make bench`` measures it).
SWEEP_BATCH = 256


#: Called with each session that was terminated or replaced (see
#: :meth:`SessionManager.on_session_end`).
SessionEndListener = Callable[[Session], Awaitable[object]]


def new_session_id() -> str:
    """A fresh session id: 128 bits from the OS's CSPRNG, hex encoded. Never a counter."""
    return secrets.token_hex(16)


def new_session_token() -> str:
    """A fresh resumption secret: 256 bits from the OS's CSPRNG, URL-safe base64."""
    return secrets.token_urlsafe(32)


def hash_session_token(token: str) -> bytes:
    """What the store keeps of a session token: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).digest()


class SessionManager:
    """Creates, advances and ends sessions; the one API the servicers use.

    Args:
        store: where sessions live; an in-memory store when omitted.
        clock: the time source; the system clock when omitted.
        idle_timeout: seconds without activity after which a session expires.
        sequence_mode: how new sessions order sequences.
        replay_window: the window's width for new sessions in window mode.
        max_sessions: live sessions held at most (0: no limit); a handshake
            beyond it is refused with SessionLimitReached.
        max_lifetime: seconds a session lives at most however active (0: no limit).
    """

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        clock: Clock | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        sequence_mode: SequenceMode = SequenceMode.STRICT,
        replay_window: int = window.DEFAULT_WINDOW,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if max_sessions < 0 or max_lifetime < 0:
            raise ValueError("max_sessions and max_lifetime must not be negative")
        window.ring_size(replay_window)  # validates the width
        self.store: SessionStore = store if store is not None else MemorySessionStore()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.idle_timeout = idle_timeout
        self.sequence_mode = sequence_mode
        self.replay_window = replay_window if sequence_mode is SequenceMode.WINDOW else 0
        self.max_sessions = max_sessions
        self.max_lifetime = max_lifetime
        self._end_listeners: list[SessionEndListener] = []

    def on_session_end(self, listener: SessionEndListener) -> None:
        """Call ``listener`` with each session this manager terminates or replaces.

        Sessions that expire are not announced: a store may let them lapse without
        a word (Redis key expiry). Whoever must know checks
        :meth:`is_session_valid` from time to time.
        """
        self._end_listeners.append(listener)

    async def _announce_end(self, session: Session) -> None:
        for listener in self._end_listeners:
            try:
                await listener(session)
            except Exception:
                log.exception("a session end listener failed")

    async def create_session(
        self,
        peer_id: str,
        protocol_version: str,
        capabilities: Iterable[str] = (),
        *,
        session_token: str | None = None,
        identity: str = "",
    ) -> Session:
        """Open a session in state INITIAL; the peer's previous session is terminated.

        With ``session_token`` (see :func:`new_session_token`) the session can later
        be resumed by whoever holds that token; only its hash is stored. With
        ``identity`` (the client certificate's) every later call must come from it.

        Raises:
            SessionLimitReached: ``max_sessions`` are live and this peer has none
                to replace; nothing changed.
        """
        now = self.clock.now()
        lifetime_ends_at = now + self.max_lifetime if self.max_lifetime else 0.0
        idle_deadline = now + self.idle_timeout
        session = Session(
            session_id=new_session_id(),
            peer_id=peer_id,
            state=SessionState.INITIAL,
            protocol_version=protocol_version,
            capabilities=tuple(capabilities),
            created_at=now,
            last_activity=now,
            expires_at=min(idle_deadline, lifetime_ends_at or idle_deadline),
            window=self.replay_window,
            token_hash=hash_session_token(session_token) if session_token else b"",
            identity=identity,
            lifetime_ends_at=lifetime_ends_at,
        )
        replaced = await self.store.create(session, self.max_sessions)
        if replaced is not None and not replaced.state.is_final:
            log.info(
                "peer %s handshook again; its previous session was terminated",
                peer_id,
                extra={"event": "session_replaced", "session": short_id(replaced.session_id)},
            )
            await self._announce_end(replaced)
        log.debug(  # --log-calls logs the Handshake at INFO, with the same facts
            "session opened",
            extra={
                "event": "session_opened",
                "session": short_id(session.session_id),
                "peer": peer_id,
            },
        )
        return session

    async def get_session(self, session_id: str) -> Session | None:
        """The session with this id, live or recently ended, or None."""
        return await self.store.get(session_id)

    async def get_session_by_peer(self, peer_id: str) -> Session | None:
        """The peer's live session, or None."""
        return await self.store.get_by_peer(peer_id)

    async def update_session_state(self, session_id: str, state: SessionState) -> Session:
        """Move the session to ``state``; raises InvalidTransition if the machine forbids it."""
        return await self.store.transition(session_id, state, self.clock.now())

    async def update_activity(self, session_id: str) -> Session:
        """Record activity now and push the idle deadline a full timeout ahead."""
        now = self.clock.now()
        return await self.store.touch(session_id, now, now + self.idle_timeout)

    async def is_session_valid(self, session_id: str) -> bool:
        """Whether the session exists, is not ended or expired, and takes calls."""
        try:
            check_usable(await self.store.get(session_id), session_id, self.clock.now())
        except PeerError:
            return False
        return True

    async def terminate_session(self, session_id: str) -> Session:
        """End the session; its id is refused from then on.

        Raises:
            SessionNotFound, SessionTerminated, SessionExpired: it has ended already
                (say, a concurrent Terminate or a newer handshake got there first).
        """
        try:
            ended = await self.update_session_state(session_id, SessionState.TERMINATED)
        except InvalidTransition:
            check_usable(await self.store.get(session_id), session_id, self.clock.now())
            raise
        log.debug(
            "session terminated",
            extra={
                "event": "session_terminated",
                "session": short_id(session_id),
                "peer": ended.peer_id,
            },
        )
        await self._announce_end(ended)
        return ended

    # admit and record_outcome hand back the store's own awaitables rather than being
    # coroutines themselves: every call takes both, and a coroutine layer that only
    # passes a call on costs each of them a frame.

    def admit(
        self, session_id: str, sequence: int, key: CallKey, identity: str = ""
    ) -> Awaitable[Admission]:
        """Validate a received call's identity, session and sequence and advance them,
        atomically (await the result).

        See :meth:`SessionStore.admit` for what changes, what a resend gets, and
        what is raised.
        """
        now = self.clock.now()
        return self.store.admit(session_id, sequence, key, now, now + self.idle_timeout, identity)

    def record_outcome(
        self, session_id: str, sequence: int, outcome: CallOutcome
    ) -> Awaitable[None]:
        """Remember how accepted call ``sequence`` ended, so a resend gets the same answer
        (await the result)."""
        return self.store.record(session_id, sequence, outcome)

    async def resume_session(
        self,
        session_id: str,
        session_token: str,
        peer_id: str,
        identity: str = "",
        last_acknowledged: int = 0,
    ) -> Session:
        """Continue a session after a restart, a lost connection or a fence.

        The token is checked first and in constant time, so that nobody without it
        learns anything of the session but that its id exists. Resuming records
        activity and lifts a fence (:class:`SessionFenced`). It changes neither the
        sequence nor the window, unless the store's record lost acceptances that the
        peer saw acknowledged: then the highest accepted sequence moves up to
        ``last_acknowledged`` (see :meth:`SessionStore.resume`).

        Raises:
            SessionNotFound: no such session.
            SessionIdentityMismatch: another identity opened the session.
            SessionTokenInvalid: the token is missing or wrong, or the session is
                another peer's; nothing changed.
            SessionExpired, SessionTerminated, InvalidSessionState: it cannot resume.
        """
        session = await self.store.get(session_id)
        if session is None:
            raise SessionNotFound(f"no session {short_id(session_id)} to resume")
        check_owner(session, identity)
        presented = hash_session_token(session_token) if session_token else b""
        owner_ok = hmac.compare_digest(session.peer_id.encode(), peer_id.encode())
        token_ok = bool(session.token_hash) and hmac.compare_digest(presented, session.token_hash)
        if not (token_ok and owner_ok):
            raise SessionTokenInvalid(
                f"cannot resume session {short_id(session_id)}: "
                "the session token is missing or wrong for this peer"
            )
        now = self.clock.now()
        check_usable(session, session_id, now)
        return await self.store.resume(session_id, now, now + self.idle_timeout, last_acknowledged)

    async def window_snapshot(self, session_id: str) -> WindowSnapshot:
        """Which sequences a window-mode session accepted."""
        return await self.store.window(session_id)

    async def increment_sequence(self, session_id: str) -> int:
        """Number a message the server sends on the session; returns its sequence."""
        return await self.store.next_send_sequence(session_id)

    async def cleanup_expired_sessions(self, batch: int = SWEEP_BATCH) -> int:
        """Expire every session past its deadline; returns how many expired.

        Works in bounded batches and yields to the event loop between them, so a
        large sweep never holds up calls.
        """
        expired = 0
        while True:
            result = await self.store.sweep(self.clock.now(), batch)
            expired += result.expired
            if not result.more:
                return expired
            await asyncio.sleep(0)

    async def get_session_stats(self) -> SessionStats:
        """Counts by state and lifetime totals, including sequence errors."""
        return await self.store.stats()
