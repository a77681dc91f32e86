"""Fuzzing every PeerService method, on both session stores.

Whatever a client sends (random or mangled request bytes, any metadata a client can
legally send, any sequence of valid and invalid calls) the server answers with a
clear status, never UNKNOWN or INTERNAL; a call it refuses changes no session (one it
admitted, whose method then failed, e.g. GetTask of an unknown task, spent its number
on its own session, as the protocol says, and changed nothing else); and it is still
serving at the end. :func:`tests.fuzz.invariants.check_outcome` states the invariants
checked after every single call.

The default run sends some 10,400 fuzzed calls to a server on the memory store, and
a quarter as many to one on Redis, where each call costs Redis round trips;
``PEER_GRPC_FUZZ_SCALE=10`` sends ten times as many (``make fuzz``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from peer_grpc import SequenceMode, Session, SessionState
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.core.sequence import MAX_SEQUENCE
from tests.fuzz import (
    METHODS,
    METHODS_BY_NAME,
    SCALE,
    FuzzServer,
    Known,
    Outcome,
    SessionPool,
    ascii_text,
    fuzz_config,
    one_of_these,
    scaled,
    sent_session_id,
)

#: The server configurations fuzzed: the default one, and the other sequence mode with
#: sessionless Ping and Status allowed.
PROFILES = {
    "strict": fuzz_config(),
    "window-sessionless": fuzz_config(
        sequence_mode=SequenceMode.WINDOW, replay_window=16, allow_sessionless=True
    ),
}
#: Fuzzed calls per test and profile in the default run on the memory store.
BUDGETS = {
    ("bytes", "strict"): 3600,
    ("bytes", "window-sessionless"): 1000,
    ("metadata", "strict"): 2400,
    ("metadata", "window-sessionless"): 1000,
}
#: Calls per Hypothesis example in the stateless tests: fewer examples of several calls
#: each cost less of Hypothesis's own time than one example per call.
CALLS_PER_EXAMPLE = 8
#: The state machine's runs, and the most steps (calls) in each: some 2,400 calls.
MACHINE_RUNS, MACHINE_STEPS = 100, 25
#: The share of the budget the Redis store runs: each call costs it Redis round trips,
#: so that its whole budget would double the run.
REDIS_SHARE = 0.25
#: Seconds a test may take, per unit of PEER_GRPC_FUZZ_SCALE (the longest takes ~15 s).
TIMEOUT = 90

HANDSHAKE = METHODS_BY_NAME["Handshake"]
#: Method names to draw from (a name reads better than a descriptor in a failing example).
METHOD_NAMES = st.sampled_from([method.name for method in METHODS])
SEQUENCED_NAMES = st.sampled_from([method.name for method in METHODS if method is not HANDSHAKE])


#: A call as drawn: the method's name, the request bytes and the metadata.
Call = tuple[str, bytes, list[tuple[str, str | bytes]]]


def budget(backend: str, default: int) -> int:
    """How many of something (calls, runs) a test makes on ``backend``, for a test
    that makes ``default`` of them on the memory store at scale 1."""
    share = REDIS_SHARE if backend == "redis" else 1.0
    return scaled(max(1, int(default * share)))


def fuzz_settings(max_examples: int, **more: Any) -> settings:
    """Settings for fuzzing a live server: no deadline, no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        **more,
    )


@pytest.fixture(params=sorted(PROFILES))
def profile(request: pytest.FixtureRequest) -> str:
    """The server configuration a stateless fuzz test runs with: each in turn."""
    return str(request.param)


@pytest.fixture
def fuzz(backend: str, profile: str) -> Iterator[FuzzServer]:
    """A server of the test's store and profile on a thread of its own."""
    with FuzzServer(backend, PROFILES[profile]) as server:
        yield server


def send_drawn_calls(pool: SessionPool, calls: st.SearchStrategy[Call], total: int) -> None:
    """Send ``total`` calls drawn from ``calls`` through ``pool``, which checks each one,
    :data:`CALLS_PER_EXAMPLE` to a Hypothesis example."""

    @fuzz_settings(total // CALLS_PER_EXAMPLE)
    @given(data=st.data())
    def some_calls(data: st.DataObject) -> None:
        for _ in range(CALLS_PER_EXAMPLE):
            pool.refresh()
            name, body, metadata = data.draw(calls, label="call")
            pool.send(METHODS_BY_NAME[name], body, metadata)

    some_calls()


@pytest.mark.timeout(TIMEOUT * SCALE)
def test_random_request_bytes_to_every_method(fuzz: FuzzServer, backend: str, profile: str):
    """Random, mangled and well-formed-but-hostile request bytes, to every method, with
    session metadata of every kind (none, right, wrong sequence, another session's id,
    an ended or unknown session, half of it, malformed, repeated): every call keeps the
    invariants, and the server is still serving at the end."""
    pool = SessionPool(fuzz)
    known = pool.known

    @st.composite
    def calls(draw: st.DrawFn) -> Call:
        name = draw(METHOD_NAMES)
        body = draw(known.request_bytes(METHODS_BY_NAME[name]))
        return name, body, draw(known.session_metadata())

    send_drawn_calls(pool, calls(), budget(backend, BUDGETS["bytes", profile]))
    fuzz.assert_alive()


@pytest.mark.timeout(TIMEOUT * SCALE)
def test_random_metadata_to_every_method(fuzz: FuzzServer, backend: str, profile: str):
    """Random metadata on requests to every method: near misses of our keys and values,
    ``-bin`` keys with arbitrary bytes (the UTF-8 of any unicode among them), duplicated
    keys, keys HTTP/2 reserves, huge values (within the server's limit: past it is the
    next test's), in any order and beside right or wrong session metadata: every call
    keeps the invariants."""
    pool = SessionPool(fuzz)
    known = pool.known
    bodies = {
        method.name: st.one_of(
            known.requests(method, valid=True).map(lambda r: r.SerializeToString()),
            known.request_bytes(method),
        )
        for method in METHODS
    }
    extra_entries = st.lists(known.metadata_entries(), max_size=5)

    @st.composite
    def calls(draw: st.DrawFn) -> Call:
        name = draw(METHOD_NAMES)
        body = draw(bodies[name])
        entries = [*draw(known.session_metadata()), *draw(extra_entries)]
        return name, body, draw(st.permutations(entries))

    send_drawn_calls(pool, calls(), budget(backend, BUDGETS["metadata", profile]))
    fuzz.assert_alive()


#: Examples of metadata past the server's limit: each costs the transport ~100 ms.
OVERSIZED_EXAMPLES = 12


@pytest.mark.timeout(TIMEOUT * SCALE)
def test_metadata_past_the_servers_limit(backend: str):
    """Metadata past the server's limit (one huge value under any key, binary or not,
    or a great many entries) is refused by the transport with RESOURCE_EXHAUSTED on
    every method, whatever session metadata comes with it; no session changes, and
    the server goes on serving."""
    with FuzzServer(backend, PROFILES["strict"]) as fuzz:
        pool = SessionPool(fuzz)
        known = pool.known
        limit = getattr(fuzz.config, "max_metadata_bytes", 16 * 1024)
        keys = [SESSION_ID_KEY, SEQUENCE_KEY, f"{SESSION_ID_KEY}-bin", "x-padding", "x-padding-bin"]
        huge_value = st.tuples(st.sampled_from(keys), st.integers(2 * limit + 1, 4 * limit)).map(
            lambda key_size: [
                (key_size[0], (b"\xff" if key_size[0].endswith("-bin") else "9") * key_size[1])
            ]
        )
        many_entries = st.integers(2 * limit // 40 + 1, 4 * limit // 40).map(
            lambda count: [(f"x-{i}", "v" * 4) for i in range(count)]
        )

        @fuzz_settings(scaled(OVERSIZED_EXAMPLES))
        @given(data=st.data())
        def one_call(data: st.DataObject) -> None:
            pool.refresh()
            method = METHODS_BY_NAME[data.draw(METHOD_NAMES, label="method")]
            body = data.draw(known.requests(method, valid=True), label="body")
            base = data.draw(known.session_metadata())
            oversized = data.draw(st.one_of(huge_value, many_entries))
            metadata = [*base, *oversized]
            outcome = pool.send(method, body.SerializeToString(), metadata)
            assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED, outcome

        one_call()
        fuzz.assert_alive()


# --- random sequences of calls ----------------------------------------------------------------

PEERS = ("peer-a", "peer-b", "peer-c")
#: Sessions the machine keeps checking; beyond it the oldest ended one is forgotten.
MAX_SESSIONS = 8
#: A sleep that outlasts any run: a task that keeps its place under the task limits.
LONG_SLEEP = 120.0
DELEGATE_TASK = METHODS_BY_NAME["DelegateTask"]
TERMINATE = METHODS_BY_NAME["Terminate"]
#: What a valid call with the right number may get: admitted, the method may still fail.
ADMITTED_CODES = (
    grpc.StatusCode.OK,
    grpc.StatusCode.NOT_FOUND,  # no such task (of this peer)
    grpc.StatusCode.FAILED_PRECONDITION,  # the task ended already
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # over the task limits
)


@dataclass(frozen=True)
class Opened:
    """A session the machine opened."""

    peer_id: str
    token: str


@dataclass(frozen=True)
class Sent:
    """A call as it was sent, and how it ended."""

    method: MethodDescriptor
    body: bytes
    metadata: tuple[tuple[str, str | bytes], ...]
    outcome: Outcome


def _metadata(session_id: str, sequence: int) -> tuple[tuple[str, str | bytes], ...]:
    return ((SESSION_ID_KEY, session_id), (SEQUENCE_KEY, str(sequence)))


def _live(session: Session | None) -> bool:
    return session is not None and session.state.accepts_calls


class CallSequences(RuleBasedStateMachine):
    """Random sequences of valid and invalid calls on a few sessions of a few peers:
    handshakes (new and replacing), resumptions, calls with the right next number,
    replays, gaps, another session's number, garbage, long tasks, resends, terminations.

    Every call keeps :func:`~tests.fuzz.invariants.check_outcome`'s invariants; each rule
    also checks what the protocol promises for its kind of call.
    """

    fuzz: ClassVar[FuzzServer]
    known: ClassVar[Known]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, Opened] = {}
        #: Tasks that run for longer than any call may wait: never watched.
        self.long_tasks: set[str] = set()
        #: Each session's last admitted call: its outcome is sure to be remembered.
        self.last: dict[str, Sent] = {}
        known = self.known
        known.live, known.ended, known.peer_ids = [], [], list(PEERS)
        known.task_ids, known.watchable_task_ids = [], []

    # -- helpers --

    def snapshots(self) -> dict[str, Session | None]:
        return self.fuzz.snapshots(self.sessions)

    def call(
        self,
        method: MethodDescriptor,
        body: bytes,
        metadata: tuple[tuple[str, str | bytes], ...],
        before: dict[str, Session | None] | None = None,
    ) -> tuple[Outcome, dict[str, Session | None], dict[str, Session | None]]:
        """Send a call, check the invariants, and remember it if it was admitted."""
        outcome, before, after = self.fuzz.send(method, body, metadata, self.sessions, before)
        sid = sent_session_id(metadata)
        if outcome.admitted and sid in self.sessions:
            self.last[sid] = Sent(method, body, metadata, outcome)
        if method is DELEGATE_TASK and outcome.code is grpc.StatusCode.OK:
            task_id = peer_pb2.DelegateTaskResponse.FromString(outcome.responses[0]).task.task_id
            known = self.known
            known.task_ids = [*known.task_ids[-9:], task_id]
            known.watchable_task_ids = [t for t in known.task_ids if t not in self.long_tasks]
        return outcome, before, after

    def pick(self, data: st.DataObject) -> tuple[str, Session, dict[str, Session | None]]:
        """One of the sessions the machine knows, and every known session as it is now."""
        sid = data.draw(one_of_these(list(self.sessions), ""), label="session")
        now = self.snapshots()
        session = now[sid]
        assert session is not None
        return sid, session, now

    def valid_request(self, data: st.DataObject, method: MethodDescriptor) -> bytes:
        request = data.draw(self.known.requests(method, valid=True), label="request")
        return request.SerializeToString()

    def open(self, peer_id: str) -> None:
        request = peer_pb2.HandshakeRequest(peer_id=peer_id, protocol_versions=["1.0"])
        outcome, before, after = self.call(HANDSHAKE, request.SerializeToString(), ())
        assert outcome.code is grpc.StatusCode.OK, outcome
        response = peer_pb2.HandshakeResponse.FromString(outcome.responses[0])
        assert response.session_id not in self.sessions
        for sid, opened in self.sessions.items():
            if opened.peer_id == peer_id and _live(before[sid]):
                replaced = after[sid]
                assert replaced is not None
                assert replaced.state is SessionState.TERMINATED
        self.sessions[response.session_id] = Opened(peer_id, response.session_token)
        if len(self.sessions) > MAX_SESSIONS:
            now = self.snapshots()
            gone = [sid for sid in self.sessions if not _live(now[sid])]
            forgotten = (gone or list(self.sessions))[0]
            del self.sessions[forgotten]
            self.last.pop(forgotten, None)

    # -- rules --

    @initialize()
    def first_sessions(self) -> None:
        for peer_id in PEERS[:2]:
            self.open(peer_id)

    @rule(peer_id=st.sampled_from(PEERS))
    def handshake(self, peer_id: str) -> None:
        """A Handshake opens a session and ends the peer's previous one."""
        self.open(peer_id)

    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        """Resuming succeeds with the session's token and peer while it is live, and is
        refused (changing nothing) otherwise."""
        sid, session, before = self.pick(data)
        opened = self.sessions[sid]
        tokens = [o.token for o in self.sessions.values()]
        token = data.draw(st.one_of(st.just(opened.token), one_of_these(tokens, ""), ascii_text))
        peer_id = data.draw(st.sampled_from([opened.peer_id, *PEERS]))
        request = peer_pb2.HandshakeRequest(
            peer_id=peer_id,
            protocol_versions=["1.0"],
            resume=peer_pb2.ResumeSession(session_id=sid, session_token=token),
        )
        outcome, _, _ = self.call(HANDSHAKE, request.SerializeToString(), (), before)
        if token == opened.token and peer_id == opened.peer_id and _live(session):
            assert outcome.code is grpc.StatusCode.OK, outcome
            response = peer_pb2.HandshakeResponse.FromString(outcome.responses[0])
            assert response.resumed
            assert response.session_id == sid
            assert response.next_sequence == session.expected_sequence
        else:
            assert outcome.code is not grpc.StatusCode.OK, outcome

    @rule(data=st.data())
    def next_call(self, data: st.DataObject) -> None:
        """A valid request with the right next number is admitted on a live session (its
        method may still fail, e.g. NOT_FOUND) and refused UNAUTHENTICATED on an ended one."""
        sid, session, before = self.pick(data)
        method = METHODS_BY_NAME[data.draw(SEQUENCED_NAMES, label="method")]
        body = self.valid_request(data, method)
        metadata = _metadata(sid, session.expected_sequence)
        outcome, _, after = self.call(method, body, metadata, before)
        if not _live(session):
            assert outcome.code is grpc.StatusCode.UNAUTHENTICATED, outcome
            assert not outcome.admitted
            return
        assert outcome.admitted, outcome
        assert outcome.code in ADMITTED_CODES, outcome
        now = after[sid]
        assert now is not None
        assert now.expected_sequence == session.expected_sequence + 1
        if method is TERMINATE and outcome.code is grpc.StatusCode.OK:
            assert now.state is SessionState.TERMINATED

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A number below the expected one never moves the session: it is a REPLAY
        (ABORTED), or, for the very call that number was spent on, that call's answer."""
        sid, session, before = self.pick(data)
        back = data.draw(st.one_of(st.integers(1, 5), st.integers(1, 2**64)), label="back")
        method = METHODS_BY_NAME[data.draw(SEQUENCED_NAMES, label="method")]
        body = self.valid_request(data, method)
        metadata = _metadata(sid, max(0, session.expected_sequence - back))
        outcome, _, after = self.call(method, body, metadata, before)
        assert after[sid] == session
        if outcome.admitted:
            return  # the original answer, to a resend
        if _live(session):
            assert outcome.code is grpc.StatusCode.ABORTED, outcome
        elif method.server_streaming:
            # A resent watch is a REPLAY even once its session ended: a resend is known
            # before the session's state is looked at, and a stream cannot be answered
            # from the record. Any other watch gets UNAUTHENTICATED.
            codes = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.ABORTED)
            assert outcome.code in codes, outcome
        else:
            assert outcome.code is grpc.StatusCode.UNAUTHENTICATED, outcome

    @rule(data=st.data())
    def gap(self, data: st.DataObject) -> None:
        """A number ahead of the expected one is a GAP (ABORTED) on a live session, and
        UNAUTHENTICATED on an ended one; either way nothing changes."""
        sid, session, before = self.pick(data)
        ahead = data.draw(st.one_of(st.integers(1, 3), st.integers(4, 2**64)), label="ahead")
        method = METHODS_BY_NAME[data.draw(SEQUENCED_NAMES, label="method")]
        body = self.valid_request(data, method)
        metadata = _metadata(sid, min(session.expected_sequence + ahead, MAX_SEQUENCE))
        outcome, _, _ = self.call(method, body, metadata, before)
        assert not outcome.admitted, outcome
        live = _live(session)
        expected = grpc.StatusCode.ABORTED if live else grpc.StatusCode.UNAUTHENTICATED
        assert outcome.code is expected, outcome

    @precondition(lambda self: len(self.sessions) >= 2)
    @rule(data=st.data())
    def another_sessions_number(self, data: st.DataObject) -> None:
        """A session's id with another session's next number: judged on the session named,
        never on the other one."""
        ids = list(self.sessions)
        first, second = data.draw(st.tuples(st.integers(0, 255), st.integers(0, 255)))
        named = ids[first % len(ids)]
        other = ids[(first + 1 + second % (len(ids) - 1)) % len(ids)]
        before = self.snapshots()
        named_session, other_session = before[named], before[other]
        assert named_session is not None
        assert other_session is not None
        method = METHODS_BY_NAME[data.draw(SEQUENCED_NAMES, label="method")]
        body = self.valid_request(data, method)
        metadata = _metadata(named, other_session.expected_sequence)
        outcome, _, after = self.call(method, body, metadata, before)
        assert after[other] == other_session
        if other_session.expected_sequence > named_session.expected_sequence:
            assert not outcome.admitted, outcome

    @rule(data=st.data())
    def garbage(self, data: st.DataObject) -> None:
        """Random bytes to any method, with a session's right metadata amid random
        metadata: nothing but the invariants is promised."""
        sid, session, before = self.pick(data)
        known = self.known
        known.live = [session]  # what the metadata entries are about
        known.ended = [s for i, s in before.items() if s is not None and i != sid]
        method = METHODS_BY_NAME[data.draw(METHOD_NAMES, label="method")]
        body = data.draw(known.request_bytes(method), label="body")
        extra = data.draw(st.lists(known.metadata_entries(), max_size=3))
        right = _metadata(sid, session.expected_sequence)
        metadata = data.draw(st.permutations([*right, *extra]), label="metadata")
        self.call(method, body, tuple(metadata), before)

    @rule(data=st.data())
    def long_task(self, data: st.DataObject) -> None:
        """Delegating a long task without waiting is admitted: OK, or RESOURCE_EXHAUSTED
        once the task limits are reached."""
        sid, session, before = self.pick(data)
        request = peer_pb2.DelegateTaskRequest(task_type="sleep", return_immediately=True)
        request.payload["seconds"] = LONG_SLEEP
        body = request.SerializeToString()
        metadata = _metadata(sid, session.expected_sequence)
        outcome, _, _ = self.call(DELEGATE_TASK, body, metadata, before)
        if outcome.code is grpc.StatusCode.OK:
            task = peer_pb2.DelegateTaskResponse.FromString(outcome.responses[0]).task
            self.long_tasks.add(task.task_id)
            known = self.known
            known.watchable_task_ids = [t for t in known.task_ids if t not in self.long_tasks]
        if _live(session):
            assert outcome.admitted, outcome
            assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)

    @precondition(lambda self: bool(self.last))
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """A session's last admitted call, sent again unchanged (even after the session
        ended), gets the original answer (a watch, whose messages are not kept, is a
        REPLAY) and does not move the session."""
        sid = data.draw(one_of_these(sorted(self.last), ""), label="session")
        sent = self.last[sid]
        outcome, before, after = self.call(sent.method, sent.body, sent.metadata)
        assert after[sid] == before[sid]
        if sent.method.server_streaming:
            assert outcome.code is grpc.StatusCode.ABORTED, outcome
            assert not outcome.admitted, outcome
            return
        original = sent.outcome
        assert outcome.admitted, outcome
        assert outcome.server_sequence == original.server_sequence, outcome
        assert (outcome.code, outcome.details) == (original.code, original.details), outcome
        assert outcome.responses == original.responses

    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        """Terminate with the right number ends a live session."""
        sid, session, before = self.pick(data)
        metadata = _metadata(sid, session.expected_sequence)
        outcome, _, after = self.call(TERMINATE, b"", metadata, before)
        if _live(session):
            assert outcome.code is grpc.StatusCode.OK, outcome
            ended = after[sid]
            assert ended is not None
            assert ended.state is SessionState.TERMINATED


@pytest.mark.timeout(TIMEOUT * SCALE)
def test_random_call_sequences(backend: str):
    """Random sequences of valid and invalid calls keep every invariant, each kind of
    call gets what the protocol promises, and the server is still serving at the end."""
    with FuzzServer(backend, PROFILES["strict"]) as fuzz:
        machine = type("CallSequencesOnServer", (CallSequences,), {"fuzz": fuzz, "known": Known()})
        run_state_machine_as_test(
            machine,
            settings=fuzz_settings(
                budget(backend, MACHINE_RUNS), stateful_step_count=MACHINE_STEPS
            ),
        )
        fuzz.assert_alive()
