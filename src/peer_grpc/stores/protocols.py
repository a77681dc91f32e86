"""The session store interface: the seam where memory, Redis or any other engine plugs in."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from peer_grpc.core.retry import CallKey, CallOutcome
from peer_grpc.core.session import Session, SessionState, SessionStats
from peer_grpc.core.task import Task, TaskChange, TaskState

__all__ = [
    "Admission",
    "Claim",
    "Enqueued",
    "QueueLimits",
    "ReclaimResult",
    "SessionStore",
    "SweepResult",
    "TaskQueue",
    "TaskStore",
    "WindowSnapshot",
]


@dataclass(slots=True)  # not frozen: one is built per call, and frozen ones cost more
class Admission:
    """The store's answer to an admissible call."""

    #: The session after admitting the call (unchanged for a resend).
    session: Session
    #: For a resend of an accepted call: the original call's outcome, awaited.
    #: None for a new call, which the caller must run and then :meth:`SessionStore.record`.
    replay: Awaitable[CallOutcome] | None = None


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """A window-mode session's accepted sequences.

    See :func:`peer_grpc.core.window.window_bitmap`.
    """

    highest_accepted: int
    accepted: bytes


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one bounded sweep batch did."""

    #: Live sessions past their idle deadline, now EXPIRED.
    expired: int = 0
    #: Ended sessions past their retention, now forgotten.
    purged: int = 0
    #: Whether more work was due than the batch limit allowed.
    more: bool = False


class SessionStore(Protocol):
    """Where sessions live. Every method is one atomic step on the store.

    Implementations keep ended (TERMINATED or EXPIRED) sessions for a retention
    time, so that late calls learn why their session is gone, then forget them.
    """

    async def create(self, session: Session, max_live: int = 0) -> Session | None:
        """Insert a new session and make it its peer's session.

        The peer's previous session, if still live, is terminated in the same step
        and returned as it was before; its id is refused from then on.

        Raises:
            SessionLimitReached: ``max_live`` (if not 0) sessions are live and the
                peer has none to replace; nothing changed.
        """
        ...

    async def get(self, session_id: str) -> Session | None:
        """The session with this id, live or ended, or None."""
        ...

    async def get_by_peer(self, peer_id: str) -> Session | None:
        """The live session of this peer, or None."""
        ...

    async def transition(self, session_id: str, target: SessionState, now: float) -> Session:
        """Move a session to ``target`` if the state machine allows it.

        Raises:
            SessionNotFound: no such session.
            InvalidTransition: the state machine forbids the move; nothing changed.
        """
        ...

    async def touch(self, session_id: str, now: float, expires_at: float) -> Session:
        """Record activity: set ``last_activity`` and push the idle deadline
        (no further than the session's ``lifetime_ends_at``).

        Raises:
            SessionNotFound, SessionExpired, SessionTerminated: the session is gone.
        """
        ...

    async def resume(
        self, session_id: str, now: float, expires_at: float, last_acknowledged: int
    ) -> Session:
        """A peer resumes the session: record activity as :meth:`touch` does, and take
        the peer's word that the session accepted every sequence up to
        ``last_acknowledged``.

        A record below it lost acceptances (a failover or restart of the store that
        dropped its latest writes): its highest accepted sequence moves up to it, and
        in window mode every sequence at or below it counts as accepted. A store that
        fences sessions after such a loss (see :class:`SessionFenced`) lifts the fence.

        Raises:
            SessionNotFound, SessionExpired, SessionTerminated: the session is gone.
        """
        ...

    async def admit(
        self,
        session_id: str,
        sequence: int,
        key: CallKey,
        now: float,
        expires_at: float,
        identity: str = "",
    ) -> Admission:
        """Check a received call against the session and advance it: one atomic step.

        The call's ``identity`` (its client certificate's, empty without mutual
        TLS) must be the session's, before anything else is looked at.

        A resend of one of the session's recently accepted calls (same sequence,
        same :class:`CallKey`) changes nothing and comes back with the original's
        outcome to await. Otherwise, on success the session accepts ``sequence``
        (strict: it was the expected one; window: see :mod:`peer_grpc.core.window`), the
        server's own ``sequence_num`` advances (the response is its next message),
        activity is recorded, a HANDSHAKE_SENT session becomes ESTABLISHED, and the
        call is remembered for resends until :meth:`record` gives its outcome.
        On failure nothing in the session changes.

        The new idle deadline ``expires_at`` is capped at the session's
        ``lifetime_ends_at``.

        Raises:
            SessionIdentityMismatch: another identity opened the session.
            SessionNotFound, SessionExpired, SessionTerminated, InvalidSessionState:
                the session cannot carry calls.
            SequenceError: the session refuses ``sequence`` (a GAP or a REPLAY).
            SequenceExhausted: the session used its last sequence number.
            SessionFenced: the store may have lost the session's latest records; the
                peer must :meth:`resume` it first.
        """
        ...

    async def record(self, session_id: str, sequence: int, outcome: CallOutcome) -> None:
        """Store how the accepted call ``sequence`` ended, for resends of it."""
        ...

    async def window(self, session_id: str) -> WindowSnapshot:
        """The accepted sequences of a window-mode session."""
        ...

    async def next_send_sequence(self, session_id: str) -> int:
        """Advance and return the session's ``sequence_num`` for a message the server sends."""
        ...

    async def sweep(self, now: float, limit: int) -> SweepResult:
        """Expire live sessions past their deadline and forget ended ones past retention.

        Does at most about ``limit`` units of work, so callers can yield between batches.
        """
        ...

    async def stats(self) -> SessionStats:
        """Counts by state and lifetime totals."""
        ...

    async def check(self) -> None:
        """Return if the store can serve calls now, else raise StoreUnavailable.

        The server asks every second or so and reports the answer on its health
        service; a store may also use the call to catch up on writes that waited
        for it.
        """
        ...

    async def close(self) -> None:
        """Release the store's resources."""
        ...


class TaskStore(Protocol):
    """Where delegated tasks live, beside the sessions. Every method is one atomic step.

    Tasks that reached a final state are kept for a retention time (so their owner
    can still read the outcome), then forgotten by :meth:`sweep`.
    """

    #: Whether other processes share the store: only then can a task end elsewhere.
    shared: bool

    @property
    def queue(self) -> TaskQueue | None:
        """The queue that hands the store's tasks to runners in any process, or None
        when tasks run in the process that accepted them."""
        ...

    async def create(self, task: Task) -> Task:
        """Insert a new task; returns it with its :attr:`Task.ordinal` assigned."""
        ...

    async def get(self, task_id: str) -> Task | None:
        """The task with this id, or None (never existed, or swept)."""
        ...

    async def change(self, task_id: str, change: TaskChange, now: float) -> Task:
        """Apply ``change`` if the task state machine allows it; returns the task after it.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task is in a state ``change.state`` cannot follow
                (say, it ended already); nothing changed.
        """
        ...

    async def changes_after(self, task_id: str, version: int) -> Sequence[Task]:
        """Every snapshot of the task newer than ``version``, oldest first.

        Waits until there is at least one. Together with :meth:`get` this lets a
        watcher see every change in order, however fast they come.

        Raises:
            TaskNotFound: no such task (or it was swept while waited on).
        """
        ...

    async def list_owned(
        self, owner_peer_id: str, *, after: int, limit: int, state: TaskState | None = None
    ) -> Sequence[Task]:
        """Up to ``limit`` of the peer's tasks with an ordinal above ``after``, oldest first.

        With ``state``, only tasks in that state.
        """
        ...

    async def sweep(self, now: float, limit: int) -> SweepResult:
        """Forget final tasks past their retention (reported as ``purged``).

        Does at most about ``limit`` units of work, so callers can yield between batches.
        """
        ...

    async def check(self) -> None:
        """Return if the store can serve calls now, else raise StoreUnavailable."""
        ...

    async def close(self) -> None:
        """Release the store's resources."""
        ...


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """The limits a queue enforces, counted in the store so that every replica shares them."""

    #: Tasks WORKING at once, over every runner.
    max_running: int
    #: Unfinished tasks (queued or running) of one session.
    max_per_session: int
    #: Tasks waiting SUBMITTED beyond ``max_running``.
    max_queued: int
    #: Seconds a refused caller is told to wait.
    retry_after: float


@dataclass(frozen=True, slots=True)
class Claim:
    """A task a runner took from the queue: WORKING, at its new attempt, under a lease."""

    task: Task
    payload: Mapping[str, Any]
    #: This hold of the task, never the same twice (on Redis, the queue entry): the
    #: runner's writes are fenced with it, so no later hold can be mistaken for this one.
    lease: str = ""


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A task just stored and queued, and what the delegating runner claimed meanwhile."""

    task: Task
    claims: tuple[Claim, ...] = ()


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    """What one reclaim pass did with tasks whose lease had lapsed."""

    #: Queued again for another attempt.
    requeued: int = 0
    #: Ended FAILED ``WORKER_LOST``: not retryable, or out of attempts.
    ended: int = 0


class TaskQueue(Protocol):
    """Hands a shared task store's tasks to runners in any process, under leases.

    A runner holds each task it claimed under a lease that it renews (all its
    tasks in one step); a task whose lease lapses is reclaimed by anyone: queued
    again if its handler is retryable and attempts remain, else ended FAILED
    ``WORKER_LOST``. A runner writes a task's end only while its attempt still
    holds the task (the write is fenced by the claim's lease, in the store).
    """

    async def enqueue(
        self,
        task: Task,
        payload: Mapping[str, Any],
        limits: QueueLimits,
        *,
        runner_id: str = "",
        claim: int = 0,
    ) -> Enqueued:
        """Store the SUBMITTED ``task`` and queue it, in one atomic step.

        With ``runner_id``, up to ``claim`` queued tasks (the oldest first, so this
        one only if none waits before it) are claimed for that runner in the same step.

        Raises:
            TaskLimitReached: the session's limit, or running plus queued tasks over
                every runner, is reached; no task was stored.
        """
        ...

    async def claim(self, runner_id: str, count: int, now: float) -> Sequence[Claim]:
        """Claim up to ``count`` queued tasks, oldest first, within the running limit."""
        ...

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 - a poll bound
        """Return when a task may have been queued, or after ``timeout`` seconds."""
        ...

    async def renew(
        self, runner_id: str, held: Sequence[Claim], now: float, orphan_after: float
    ) -> set[str]:
        """Renew the leases of the claims the runner holds, in one step.

        Returns the ids of those it no longer holds: they ended (canceled, say) or
        were reclaimed after the lease lapsed. Their handlers should stop. Tasks
        claimed for the runner that it does not hold and has not renewed for
        ``orphan_after`` seconds (it never learned of the claim: a lost reply) go back
        to the queue, their attempt given back.
        """
        ...

    async def finish(self, claim: Claim, change: TaskChange, now: float) -> Task | None:
        """Apply ``change`` to the claimed task, fenced by the claim's lease.

        Returns the task after it, or None if this attempt no longer holds the task
        (it ended another way, or its lease lapsed and it was reclaimed).
        """
        ...

    async def reclaim(self, runner_id: str, lease: float, now: float, limit: int) -> ReclaimResult:
        """Take over up to ``limit`` tasks whose lease lapsed ``lease`` seconds ago or more."""
        ...

    async def hand_back(self, runner_id: str, task_ids: Sequence[str], now: float) -> int:
        """Give back tasks a stopping runner holds: queued again if retryable, else
        CANCELED ``SHUTDOWN``; and those claimed for it that it never learned of, as if
        never claimed. The runner leaves the queue. Returns how many."""
        ...

    async def unfinished(self, session_id: str) -> Sequence[str]:
        """The ids of the session's tasks that have not ended, wherever they run."""
        ...

    async def changes_after(self, task_id: str, version: int) -> Sequence[Task]:
        """As :meth:`TaskStore.changes_after`: a runner follows a task that asked for
        input until it is answered or ends."""
        ...
