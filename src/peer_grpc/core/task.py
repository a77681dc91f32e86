"""The task model: its states and their machine, and what a delegated task is. No gRPC here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

from peer_grpc.core.errors import InvalidTransition
from peer_grpc.core.state_machine import StateMachine

__all__ = ["TASK_MACHINE", "Progress", "Task", "TaskChange", "TaskState"]


class TaskState(IntEnum):
    """Where a task stands; the values are those of ``peer.v1.TaskState``."""

    SUBMITTED = 1
    WORKING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELED = 5
    REJECTED = 6
    #: The handler waits for the delegating peer to answer its question (ProvideInput).
    INPUT_REQUIRED = 7

    @property
    def is_final(self) -> bool:
        """Whether no transition leaves this state."""
        return TASK_MACHINE.is_final(self)


_ENDINGS = {TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED}

#: The task state machine: every legal transition. Anything else is refused with
#: InvalidTransition (``TASK_MACHINE.check(source, target)``).
TASK_MACHINE = StateMachine(
    "task",
    {
        # A task can end before its handler starts: canceled, timed out, or refused.
        TaskState.SUBMITTED: {TaskState.WORKING, *_ENDINGS},
        # Back to SUBMITTED only when its runner was lost and the handler may run again.
        TaskState.WORKING: {
            TaskState.SUBMITTED,
            TaskState.INPUT_REQUIRED,
            TaskState.COMPLETED,
            *_ENDINGS,
        },
        # The handler is suspended in ask(): an answer resumes it; it cannot finish or
        # refuse meanwhile, but it can run out of time (FAILED), be canceled, or lose
        # its runner (SUBMITTED again, or FAILED).
        TaskState.INPUT_REQUIRED: {
            TaskState.WORKING,
            TaskState.SUBMITTED,
            TaskState.FAILED,
            TaskState.CANCELED,
        },
        TaskState.COMPLETED: set(),
        TaskState.FAILED: set(),
        TaskState.CANCELED: set(),
        TaskState.REJECTED: set(),
    },
)


class Progress(NamedTuple):
    """How far a running task has come, by its handler's own account."""

    #: The share of the work done, 0 to 1; None when the handler gave only a message.
    fraction: float | None
    #: What the handler is doing, for people.
    message: str


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One change of a task: a move to ``state`` and what it sets besides.

    Three kinds of change are not plain moves:

    - a *report* (:meth:`report`) keeps a WORKING task WORKING and replaces its
      progress or partial result (None keeps the one before);
    - a move to INPUT_REQUIRED carries the handler's ``question``;
    - a move from INPUT_REQUIRED back to WORKING carries the ``answer``, and with
      ``answers_question`` only answers that question (see Task.questions_asked);
      or, ``withdraw``, takes the question back (the handler stopped waiting).
    """

    state: TaskState
    result: Mapping[str, Any] | None = None
    error_code: str = ""
    error_message: str = ""
    report: bool = False
    progress: Progress | None = None
    partial_result: Mapping[str, Any] | None = None
    question: Mapping[str, Any] | None = None
    answer: Mapping[str, Any] | None = None
    answers_question: int = 0
    withdraw: bool = False

    @classmethod
    def reported(
        cls, progress: Progress | None = None, partial_result: Mapping[str, Any] | None = None
    ) -> TaskChange:
        """A progress report of a WORKING task."""
        return cls(TaskState.WORKING, report=True, progress=progress, partial_result=partial_result)

    @classmethod
    def asking(cls, question: Mapping[str, Any]) -> TaskChange:
        """The handler stops to ask ``question``."""
        return cls(TaskState.INPUT_REQUIRED, question=question)

    @classmethod
    def answered(cls, answer: Mapping[str, Any], question: int = 0) -> TaskChange:
        """The delegating peer answers (question number ``question``; 0: whichever waits)."""
        return cls(TaskState.WORKING, answer=answer, answers_question=question)

    @classmethod
    def withdrawn(cls) -> TaskChange:
        """The handler stopped waiting for its answer, and works on."""
        return cls(TaskState.WORKING, withdraw=True)


_SUBMITTED = TaskState.SUBMITTED
_WORKING = TaskState.WORKING
_WAITING = TaskState.INPUT_REQUIRED


@dataclass(frozen=True, slots=True)
class Task:
    """An immutable snapshot of one task. Stores hand out snapshots, never live records.

    Times are seconds since the Unix epoch, read from the server's clock.
    """

    task_id: str
    task_type: str
    #: The peer that delegated the task; only it may see or cancel the task.
    owner_peer_id: str
    #: The session it was delegated on; the task is canceled when that session ends.
    session_id: str
    state: TaskState
    created_at: float
    updated_at: float
    #: Seconds the task may run before it fails with DEADLINE_EXCEEDED.
    timeout: float
    #: The handler's JSON object, once COMPLETED.
    result: Mapping[str, Any] | None = None
    error_code: str = ""
    error_message: str = ""
    #: 1 when SUBMITTED, one more with every change: watchers ask for what came after theirs.
    version: int = 1
    #: The task's place in its store's creation order (assigned by the store); pages follow it.
    ordinal: int = 0
    #: Which run of the handler this is: 0 before the first, one more at every start.
    attempt: int = 0
    #: The most runs the task may get (its handler's retry policy; 1 if not retryable).
    max_attempts: int = 1
    #: The handler's latest progress report, if any.
    progress: Progress | None = None
    #: The handler's result so far (each replaces the one before), if it reported one.
    partial_result: Mapping[str, Any] | None = None
    #: While INPUT_REQUIRED: what the handler asks.
    question: Mapping[str, Any] | None = None
    #: Questions the handler asked so far; while INPUT_REQUIRED, the number of the one waiting.
    questions_asked: int = 0
    #: On the snapshot that resumed the handler only: the answer it resumes with. Never
    #: shown to callers (it is theirs); the handler's runner reads it from the store.
    answer: Mapping[str, Any] | None = None

    def changed(self, change: TaskChange, now: float) -> Task:
        """The task after ``change``; a move from SUBMITTED to WORKING starts the next attempt.

        Raises:
            InvalidTransition: the task state machine forbids the move, a report
                finds the task other than WORKING, or an answer finds no question
                waiting (or another one than it answers).
        """
        source = self.state
        if change.report or change.answer is not None or change.withdraw or source is _WAITING:
            state = self._target(change)
        else:
            state = TASK_MACHINE.check(source, change.state)
        asking = state is _WAITING
        progress = change.progress
        partial_result = change.partial_result
        # Spelled out, and by position in the order of the fields, rather than
        # dataclasses.replace (several times dearer) or keywords (a third dearer), on a
        # path every task takes three times.
        return Task(
            self.task_id,
            self.task_type,
            self.owner_peer_id,
            self.session_id,
            state,
            self.created_at,
            now,  # updated_at
            self.timeout,
            change.result,
            change.error_code,
            change.error_message,
            self.version + 1,
            self.ordinal,
            self.attempt + 1 if state is _WORKING and source is _SUBMITTED else self.attempt,
            self.max_attempts,
            self.progress if progress is None else progress,
            self.partial_result if partial_result is None else partial_result,
            change.question if asking else None,
            self.questions_asked + 1 if asking else self.questions_asked,
            change.answer,
        )

    def _target(self, change: TaskChange) -> TaskState:
        """The state ``change`` moves this task to, if it may."""
        if change.report:
            if self.state is not TaskState.WORKING:
                raise InvalidTransition(self.state.name, "WORKING (a report)", subject="task")
            return self.state
        waiting = self.state is TaskState.INPUT_REQUIRED
        resuming = change.answer is not None or change.withdraw
        if change.state is TaskState.WORKING and (waiting or resuming):
            answers = change.answer is not None and change.answers_question in (
                0,
                self.questions_asked,
            )
            if not (waiting and (answers or change.withdraw)):
                # Only an answer (or taking the question back) resumes a waiting handler,
                # and only a waiting one: an answer must never start a queued task, nor
                # answer a question asked after it.
                raise InvalidTransition(self.state.name, "WORKING (an answer)", subject="task")
        return TASK_MACHINE.check(self.state, change.state)
