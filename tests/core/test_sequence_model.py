"""Property: for any interleaving of sends, resends, duplicates and reorderings, a store makes
the same accept/refuse decisions as a small reference model, and never accepts a sequence twice.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from peer_grpc import ManualClock, SequenceError, SequenceErrorKind, SessionManager, SessionState
from peer_grpc.core.retry import CallKey
from peer_grpc.core.sequence import SequenceMode
from tests.conftest import STORE_FACTORIES

RETRY_CACHE = 4


class ReferenceModel:
    """What the protocol says, written as plainly as possible."""

    def __init__(self, width: int) -> None:
        self.width = width  # 0: strict
        self.accepted: set[int] = set()
        self.highest = 0
        self.recent: deque[tuple[int, CallKey]] = deque(maxlen=RETRY_CACHE)

    def decide(self, sequence: int, key: CallKey) -> str:
        if (sequence, key) in self.recent:
            return "resend"
        if not self.width:
            expected = self.highest + 1
            if sequence == expected:
                return "accept"
            return "gap" if sequence > expected else "replay"
        if sequence > self.highest + self.width:
            return "gap"
        if sequence <= self.highest - self.width or sequence == 0:
            return "behind"
        return "replay" if sequence in self.accepted else "accept"

    def accept(self, sequence: int, key: CallKey) -> None:
        assert sequence not in self.accepted, "a sequence was accepted twice"
        self.accepted.add(sequence)
        self.highest = max(self.highest, sequence)
        self.recent.append((sequence, key))


class SequenceMachine(RuleBasedStateMachine):
    width = 0
    store_name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        mode = SequenceMode.WINDOW if self.width else SequenceMode.STRICT
        store = STORE_FACTORIES[self.store_name](retry_cache_size=RETRY_CACHE)
        self.manager = SessionManager(
            store,
            clock=self.clock,
            sequence_mode=mode,
            replay_window=self.width or 64,
        )
        self.model = ReferenceModel(self.width)
        self.session_id = self.run(self._open())
        self.sent: list[tuple[int, CallKey]] = []

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _open(self) -> str:
        session = await self.manager.create_session("model", "1.0")
        await self.manager.update_session_state(session.session_id, SessionState.HANDSHAKE_SENT)
        return session.session_id

    def teardown(self) -> None:
        try:
            self.run(self.manager.store.close())
        finally:
            self.loop.close()

    def submit(self, sequence: int, key: CallKey) -> None:
        expected = self.model.decide(sequence, key)
        try:
            admission = self.run(self.manager.admit(self.session_id, sequence, key))
        except SequenceError as error:
            got = {
                SequenceErrorKind.GAP: "gap",
                SequenceErrorKind.REPLAY: "behind" if error.outside_window else "replay",
            }[error.kind]
        else:
            got = "resend" if admission.replay is not None else "accept"
            if got == "accept":
                self.model.accept(sequence, key)
                self.sent.append((sequence, key))
        assert got == expected, f"sequence {sequence}: store said {got}, model said {expected}"

    @rule(offset=st.integers(min_value=-70, max_value=70))
    def send_new(self, offset: int) -> None:
        """A new message at any distance from the highest accepted, including duplicates."""
        sequence = max(0, self.model.highest + offset)
        self.submit(sequence, CallKey("Ping", os.urandom(8)))

    @rule()
    def send_next(self) -> None:
        self.submit(self.model.highest + 1, CallKey("Ping", os.urandom(8)))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """The same call again: the same sequence, method and bytes."""
        sequence, key = data.draw(st.sampled_from(self.sent))
        self.submit(sequence, key)

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), method=st.sampled_from(["Ping", "Status"]))
    def reuse_number(self, data: st.DataObject, method: str) -> None:
        """An accepted sequence with another message: a replay, never a resend."""
        sequence, _ = data.draw(st.sampled_from(self.sent))
        self.submit(sequence, CallKey(method, os.urandom(8)))

    @invariant()
    def store_agrees_with_model(self) -> None:
        session = self.run(self.manager.get_session(self.session_id))
        assert session.highest_accepted == self.model.highest
        assert session.expected_sequence == self.model.highest + 1


def machine_for(width: int, store_name: str) -> type[SequenceMachine]:
    return type(
        f"SequenceMachine_{store_name}_{width}",
        (SequenceMachine,),
        {"width": width, "store_name": store_name},
    )


@pytest.mark.parametrize("store_name", sorted(STORE_FACTORIES))
@pytest.mark.parametrize(
    "width",
    [
        pytest.param(0, id="strict"),
        pytest.param(8, id="window-8"),
        pytest.param(64, id="window-64"),
    ],
)
def test_store_decides_like_the_reference_model(width: int, store_name: str) -> None:
    machine = machine_for(width, store_name)
    machine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
    machine.TestCase().runTest()
