"""One helper for the state machines of sessions and tasks: a table of legal moves. No gRPC.

Each machine is written once, as the table of every move it allows; anything not in
the table is refused with :class:`~peer_grpc.core.errors.InvalidTransition`. Sessions
(:mod:`peer_grpc.core.session`) and tasks (:mod:`peer_grpc.core.task`) both use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Generic, TypeVar

from peer_grpc.core.errors import InvalidTransition

__all__ = ["StateMachine"]

S = TypeVar("S", bound=Enum)


class StateMachine(Generic[S]):
    """The legal moves between the states of one enum, and the check that enforces them.

    Args:
        subject: whose states these are (``"session"``, ``"task"``), named in refusals.
        transitions: for every state of the enum, the states it may move to; a state
            with no moves is final.

    Raises:
        ValueError: the table leaves out a state of the enum.
    """

    __slots__ = ("_final", "subject", "transitions")

    def __init__(self, subject: str, transitions: Mapping[S, Iterable[S]]) -> None:
        table = {source: frozenset(targets) for source, targets in transitions.items()}
        states = {state for source in table for state in type(source)}
        if missing := states - set(table):
            raise ValueError(f"{subject} states without a row: {sorted(s.name for s in missing)}")
        self.subject = subject
        #: Every legal move: ``transitions[source]`` is where ``source`` may go.
        self.transitions: Mapping[S, frozenset[S]] = table
        self._final = frozenset(state for state, targets in table.items() if not targets)

    def check(self, source: S, target: S) -> S:
        """Return ``target`` if ``source -> target`` is legal.

        Raises:
            InvalidTransition: the table has no such move; nothing may be applied.
        """
        if target not in self.transitions[source]:
            raise InvalidTransition(source.name, target.name, subject=self.subject)
        return target

    def is_final(self, state: S) -> bool:
        """Whether no move leaves ``state``."""
        return state in self._final

    def sources_of(self, target: S) -> frozenset[S]:
        """Every state from which ``target`` may be reached."""
        return frozenset(
            source for source, targets in self.transitions.items() if target in targets
        )
