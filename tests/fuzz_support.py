"""What the fuzz tests share: a server on a thread of its own, raw calls, the invariants
every call must keep, and strategies for request bytes and metadata.

The server runs on its own event loop in a background thread, once per test; the
tests drive it from their own thread with a synchronous channel, so that Hypothesis
(including its stateful machines) never has to share an event loop with the server.
Calls use generic multi-callables without serializers: requests and responses are
bytes, exactly as they travel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import string
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import descriptor, duration_pb2, message_factory, struct_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import assume
from hypothesis import strategies as st

from peer_grpc import (
    MemorySessionStore,
    PeerServer,
    ServerConfig,
    Session,
    SessionState,
    default_registry,
)
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.core.sequence import MAX_SEQUENCE
from peer_grpc.stores import SessionStore, TaskStore
from peer_grpc.tasks import MAX_JSON_DEPTH
from tests.conftest import STORE_FACTORIES, TASK_STORE_FACTORIES

__all__ = [
    "CALL_TIMEOUT",
    "FORBIDDEN",
    "METHODS",
    "METHODS_BY_NAME",
    "SCALE",
    "FuzzServer",
    "Known",
    "Outcome",
    "SessionPool",
    "ascii_text",
    "check_outcome",
    "fuzz_config",
    "one_of_these",
    "scaled",
    "sent_session_id",
]

_T = TypeVar("_T")

#: How many times more inputs than the default run: ``make fuzz`` sets PEER_GRPC_FUZZ_SCALE.
SCALE = max(1, int(os.environ.get("PEER_GRPC_FUZZ_SCALE", "1")))

#: The service under test, straight from the generated descriptor.
SERVICE = peer_pb2.DESCRIPTOR.services_by_name["PeerService"]
#: Every method of the service, in the order of the contract.
METHODS: tuple[descriptor.MethodDescriptor, ...] = tuple(SERVICE.methods)
METHODS_BY_NAME: Mapping[str, descriptor.MethodDescriptor] = {m.name: m for m in METHODS}


#: Statuses no input may ever produce from a method that exists.
FORBIDDEN = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
#: Every call's deadline: a hang fails the test instead of blocking it.
CALL_TIMEOUT = 5.0
#: The metadata key that tags each call, so that the server can tell which calls reached it.
TAG_KEY = "fuzz-call"


def scaled(default: int) -> int:
    """How many of something (calls, examples) to make, for ``default`` at scale 1."""
    return default * SCALE


#: Limits a fuzzing client would run into by sheer volume, turned off (0: no limit)
#: where the server has them: the fuzz tests open sessions faster than any peer should.
_VOLUME_LIMITS_OFF = {
    "peer_handshake_rate": 0.0,
    "client_handshake_rate": 0.0,
    "max_sessions": 0,
}


def fuzz_config(**changes: Any) -> ServerConfig:
    """A server configuration for fuzzing: nothing expires, task limits are small, and
    handshakes are not rate limited."""
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "idle_timeout": 3600.0,
        "shutdown_grace": 0.0,
        "task_timeout": 30.0,
        "max_running_tasks": 8,
        "max_tasks_per_session": 2,
        "server_peer_id": "fuzz-server",
    }
    known = {option.name for option in dataclasses.fields(ServerConfig)}
    options.update({k: v for k, v in _VOLUME_LIMITS_OFF.items() if k in known})
    options.update(changes)
    return ServerConfig(**options)


# --- the server ------------------------------------------------------------------------


def _without_awaiting(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """The result of a coroutine that finishes without awaiting anything."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the coroutine awaited something")


class _CallRecorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Notes the tag of every call that reached the server's application code."""

    def __init__(self, reached: set[str]) -> None:
        self._reached = reached

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        for key, value in details.invocation_metadata or ():
            if key == TAG_KEY:
                self._reached.add(str(value))
        return await continuation(details)


@dataclass(frozen=True)
class Outcome:
    """How a call ended, as the client saw it."""

    code: grpc.StatusCode
    details: str
    #: The server's ``peer-sequence`` for the response: the call was admitted on its session.
    server_sequence: str | None
    #: The response messages (one for a unary call), as bytes.
    responses: tuple[bytes, ...]

    @property
    def admitted(self) -> bool:
        """Whether the server admitted the call on a session (and so spent its number)."""
        return self.server_sequence is not None


class FuzzServer:
    """A real PeerServer on an event loop in a background thread, and a channel to it.

    Use as a context manager: the server stops and its stores close on exit.
    """

    def __init__(self, backend: str, config: ServerConfig) -> None:
        self.backend = backend
        self.config = config
        #: Tags of the calls that reached the server's application code.
        self.reached: set[str] = set()
        #: Calls sent so far (fuzz inputs and set-up calls alike).
        self.calls = 0
        #: Calls the client library refused to send (illegal metadata): not inputs.
        self.refused = 0
        self._tags = count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"fuzz-server-{backend}", daemon=True
        )
        self._server: PeerServer | None = None
        self._channel: grpc.Channel | None = None

    @property
    def server(self) -> PeerServer:
        assert self._server is not None, "the server is not running"
        return self._server

    @property
    def channel(self) -> grpc.Channel:
        assert self._channel is not None, "the server is not running"
        return self._channel

    def __enter__(self) -> FuzzServer:
        self._thread.start()
        try:
            self._server = self.run(self._start(), timeout=30.0)
            self._channel = grpc.insecure_channel(self._server.address)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._channel is not None:
                self._channel.close()
            if self._server is not None:
                self.run(self._server.stop(grace=0), timeout=30.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30.0)
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    async def _start(self) -> PeerServer:
        # Built on the server's loop: a Redis client belongs to the loop that first uses it.
        store: SessionStore = STORE_FACTORIES[self.backend](
            retry_cache_size=self.config.retry_cache_size
        )
        task_store: TaskStore = TASK_STORE_FACTORIES[self.backend](
            retention=self.config.task_retention
        )
        server = PeerServer(
            self.config,
            store=store,
            task_store=task_store,
            tasks=default_registry(),
            outer_interceptors=[_CallRecorder(self.reached)],
        )
        try:
            await server.start()
        except BaseException:
            await task_store.close()
            await store.close()
            raise
        return server

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = CALL_TIMEOUT) -> _T:
        """Run ``coroutine`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def snapshots(self, session_ids: Iterable[str]) -> dict[str, Session | None]:
        """The sessions as the server's store holds them now."""
        ids = list(dict.fromkeys(session_ids))
        store = self.server.manager.store
        if isinstance(store, MemorySessionStore):
            # Its methods never await, so each runs to completion when first stepped, and
            # reads one dict entry (atomic under the GIL): no need to wait for the loop.
            return {session_id: _without_awaiting(store.get(session_id)) for session_id in ids}

        async def read() -> list[Session | None]:
            return list(await asyncio.gather(*(store.get(i) for i in ids)))

        return dict(zip(ids, self.run(read()), strict=True))

    def invoke(
        self,
        method: descriptor.MethodDescriptor,
        body: bytes,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        timeout: float = CALL_TIMEOUT,
    ) -> Outcome:
        """Send ``body`` to ``method`` with ``metadata`` and return how the call ended.

        A call that the client library itself refuses to send (illegal metadata) never
        reaches the server, so its status says nothing about the server: such an input
        is rejected as a Hypothesis example instead.
        """
        tag = str(next(self._tags))
        sent = (*metadata, (TAG_KEY, tag))
        path = f"/{SERVICE.full_name}/{method.name}"
        self.calls += 1
        responses: list[bytes] = []
        call: Any
        try:
            if method.server_streaming:
                call = self.channel.unary_stream(path)(body, metadata=sent, timeout=timeout)
                responses.extend(call)
            else:
                response, call = self.channel.unary_unary(path).with_call(
                    body, metadata=sent, timeout=timeout
                )
                responses.append(response)
        except grpc.RpcError as error:
            call = error
        except (TypeError, ValueError):  # refused by grpc's Python layer before sending
            self.refused += 1
            assume(False)
            raise
        code: grpc.StatusCode = call.code()
        details: str = call.details() or ""
        if tag not in self.reached and details == "Invalid metadata":
            # grpc's C core refused the metadata on the client (with INTERNAL).
            self.refused += 1
            assume(False)
        server_sequence = None
        for key, value in (*(call.initial_metadata() or ()), *(call.trailing_metadata() or ())):
            if key == SEQUENCE_KEY:
                server_sequence = str(value)
        if tag not in self.reached:
            # The transport turned it away before the application saw it: only metadata
            # over the server's size limit does that.
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{method.name}: {code} for a call that never reached the server: {details}"
            )
        return Outcome(code, details, server_sequence, tuple(responses))

    def send(
        self,
        method: descriptor.MethodDescriptor,
        body: bytes,
        metadata: Sequence[tuple[str, str | bytes]],
        session_ids: Iterable[str],
        before: Mapping[str, Session | None] | None = None,
    ) -> tuple[Outcome, dict[str, Session | None], dict[str, Session | None]]:
        """Send one call and check :func:`check_outcome` over the sessions ``session_ids``
        (as they are ``before``, unless read anew).

        Returns the outcome and the sessions before and after the call.
        """
        session_ids = list(session_ids)
        before = dict(before) if before is not None else self.snapshots(session_ids)
        outcome = self.invoke(method, body, metadata)
        after = self.snapshots(session_ids)
        check_outcome(self.config, method, body, metadata, outcome, before, after)
        return outcome, before, after

    def handshake(self, peer_id: str) -> peer_pb2.HandshakeResponse:
        """Open a session for ``peer_id`` (ending its previous one)."""
        request = peer_pb2.HandshakeRequest(peer_id=peer_id, protocol_versions=["1.0"])
        outcome = self.invoke(METHODS_BY_NAME["Handshake"], request.SerializeToString())
        assert outcome.code is grpc.StatusCode.OK, outcome
        return peer_pb2.HandshakeResponse.FromString(outcome.responses[0])

    def assert_alive(self) -> None:
        """The server still answers calls, and its health service says SERVING."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", SERVICE.full_name):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5.0)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        session = self.handshake("fuzz-liveness")
        ping = self.invoke(
            METHODS_BY_NAME["Ping"],
            peer_pb2.PingRequest(payload=b"still there?").SerializeToString(),
            ((SESSION_ID_KEY, session.session_id), (SEQUENCE_KEY, str(session.next_sequence))),
        )
        assert ping.code is grpc.StatusCode.OK, ping


# --- the invariants ----------------------------------------------------------------------


#: What a call admitted on a session may change of it: its numbers, activity and state.
_MOVING_PARTS = frozenset(
    {
        "state",
        "last_activity",
        "expires_at",
        "sequence_num",
        "expected_sequence",
        "highest_accepted",
        "ended_at",
    }
)


def _fixed_part(session: Session) -> dict[str, Any]:
    """Everything of a session that no call admitted on it may change."""
    return {
        field.name: getattr(session, field.name)
        for field in dataclasses.fields(session)
        if field.name not in _MOVING_PARTS
    }


def sent_session_id(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The session id a call carried, if it carried exactly one as text."""
    values = [value for key, value in metadata if key == SESSION_ID_KEY]
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def check_outcome(
    config: ServerConfig,
    method: descriptor.MethodDescriptor,
    body: bytes,
    metadata: Sequence[tuple[str, str | bytes]],
    outcome: Outcome,
    before: Mapping[str, Session | None],
    after: Mapping[str, Session | None],
) -> None:
    """Assert the properties every call keeps, whatever was sent:

    - its status is never UNKNOWN, INTERNAL, DATA_LOSS or UNIMPLEMENTED;
    - an OK answer decodes as the method's response type;
    - a call refused before admission (non-OK, no ``peer-sequence`` in the response)
      changes no session at all;
    - an admitted call changes no session but its own, and of its own only the
      numbers, activity and state (to ESTABLISHED, or TERMINATED by Terminate); never
      moving its expected sequence back (nor, in strict mode, by more than one);
    - only Handshake, and Ping and Status where sessionless calls are allowed,
      succeed without admission; a Handshake changes no session but its peer's.
    """
    where = f"{method.name} with body {body!r} and metadata {list(metadata)!r}"
    assert outcome.code not in FORBIDDEN, f"{where}: {outcome.code} {outcome.details!r}"
    if outcome.code is grpc.StatusCode.OK:
        response_type = message_factory.GetMessageClass(method.output_type)
        for response in outcome.responses:
            response_type.FromString(response)
    changed = {sid for sid, session in before.items() if after.get(sid) != session}
    if outcome.admitted:
        own = sent_session_id(metadata)
        assert own is not None, f"{where}: admitted without one session id"
        assert changed <= {own}, f"{where}: admitted on {own}, but changed {changed}"
        old, new = before.get(own), after.get(own)
        if old is not None and new is not None:
            step = new.expected_sequence - old.expected_sequence
            assert step >= 0, f"{where}: the expected sequence went back: {old} -> {new}"
            if not old.window:
                assert step <= 1, f"{where}: the expected sequence jumped: {old} -> {new}"
            assert _fixed_part(new) == _fixed_part(old), f"{where}: changed {old} -> {new}"
            states = {old.state, SessionState.ESTABLISHED}
            if method.name == "Terminate":
                states.add(SessionState.TERMINATED)
            assert new.state in states, f"{where}: moved {old.state} -> {new.state}"
        return
    if outcome.code is not grpc.StatusCode.OK:
        assert not changed, (
            f"{where}: rejected with {outcome.code} {outcome.details!r}, but changed "
            + "; ".join(f"{before[sid]} -> {after.get(sid)}" for sid in sorted(changed))
        )
        return
    if method.name == "Handshake":
        peer_id = peer_pb2.HandshakeRequest.FromString(body).peer_id
        peers = {sid: (before[sid] or after[sid]) for sid in changed}
        others = {sid for sid, session in peers.items() if session and session.peer_id != peer_id}
        assert not others, f"{where}: a handshake of {peer_id!r} changed {others}"
        return
    assert config.allow_sessionless, f"{where}: OK without admission"
    assert method.name in ("Ping", "Status"), f"{where}: OK without admission"
    assert sent_session_id(metadata) is None, f"{where}: a session was sent but not admitted"
    assert not changed, f"{where}: a sessionless call changed {changed}"


class SessionPool:
    """The sessions a stateless fuzz test calls on: a few live ones, kept live by opening
    a new one when one ends, and the last few that ended."""

    def __init__(self, fuzz: FuzzServer, size: int = 3, ended: int = 3) -> None:
        self._fuzz = fuzz
        self._keep_ended = ended
        self.peers = [f"fuzz-peer-{i}" for i in range(size)]
        self.live = [fuzz.handshake(peer).session_id for peer in self.peers]
        self.ended: list[str] = []
        #: What strategies draw from; :meth:`refresh` keeps it up to date.
        self.known = Known(peer_ids=self.peers)
        self._now: dict[str, Session | None] | None = None

    @property
    def session_ids(self) -> list[str]:
        """Every session the test checks after each call."""
        return [*self.live, *self.ended]

    def send(
        self,
        method: descriptor.MethodDescriptor,
        body: bytes,
        metadata: Sequence[tuple[str, str | bytes]],
    ) -> Outcome:
        """Send one call and check :func:`check_outcome` over every session of the pool."""
        before = self._now if self._now is not None else self.refresh()
        outcome, _, after = self._fuzz.send(method, body, metadata, self.session_ids, before)
        # The next call's "before": nothing changes a session between calls here (none
        # expires), so anything that did would be caught as the next call's doing.
        self._now = after
        return outcome

    def refresh(self) -> dict[str, Session | None]:
        """Replace the sessions that ended; return every session of the pool as it is now."""
        now = self._now if self._now is not None else self._fuzz.snapshots(self.session_ids)
        replaced = False
        for index, session_id in enumerate(self.live):
            session = now[session_id]
            if session is None or session.state.is_final:
                self.ended = [session_id, *self.ended][: self._keep_ended]
                self.live[index] = self._fuzz.handshake(self.peers[index]).session_id
                replaced = True
        if replaced:
            now = self._fuzz.snapshots(self.session_ids)
        self._now = now
        self.known.live = [s for s in (now[i] for i in self.live) if s is not None]
        self.known.ended = [s for s in (now[i] for i in self.ended) if s is not None]
        return now


# --- strategies ----------------------------------------------------------------------------
#
# Hypothesis requires data generation not to depend on outside state, and the server's
# state (which sessions live, their next numbers, the tasks there are) varies from run
# to run. So every strategy here draws the same way whatever that state: it draws
# indices and forms, and resolves them against :class:`Known` only afterwards. The
# strategies are built once per Known, which also keeps generation fast.

_T2 = TypeVar("_T2")
_HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32)
_ID_CHARS = string.ascii_letters + string.digits + "_-"
_INDEX = st.integers(0, 255)
_printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
#: Text that any metadata value may be: printable ASCII.
ascii_text = st.text(_printable, max_size=40)


def _json_values(*, finite: bool) -> st.SearchStrategy[Any]:
    """Small JSON-like values; with ``finite``, no NaN, no infinity and no huge ints
    (what a Struct carries faithfully)."""
    numbers: st.SearchStrategy[Any] = (
        st.floats(allow_nan=False, allow_infinity=False)
        if finite
        else st.integers(-(2**60), 2**60) | st.floats(allow_nan=True, allow_infinity=True)
    )
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(), st.booleans(), numbers, st.text(max_size=10)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=5), inner, max_size=2)
        ),
        max_leaves=3,
    )


_json = _json_values(finite=False)
_finite_json = _json_values(finite=True)


def _seeded_json(rng: random.Random, depth: int, finite: bool) -> Any:
    """A random JSON value with containers nested at most ``depth`` levels; NaN and
    infinities too unless ``finite``."""
    kind = rng.randrange(8 if depth > 0 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0.0, -0.0, 1e308, 2.0**53 + 1, -(2.0**63), rng.uniform(-1e9, 1e9)])
    if kind == 3:
        return "" if finite else rng.choice([math.nan, math.inf, -math.inf])
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if kind in (5, 6):
        return _seeded_object(rng, depth - 1, finite)
    return [_seeded_json(rng, depth - 1, finite) for _ in range(rng.randrange(4))]


def _seeded_object(rng: random.Random, depth: int, finite: bool) -> dict[str, Any]:
    """A random JSON object, as :func:`_seeded_json` makes values."""
    size = rng.randrange(4) if depth > 0 else 0
    if depth > 0 and rng.random() < 0.3:  # a deep chain rather than a wide tree
        return {"d": _seeded_object(rng, depth - 1, finite)}
    return {f"k{i}": _seeded_json(rng, depth, finite) for i in range(size)}


def _json_objects_of(
    small: st.SearchStrategy[Any], valid: bool
) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects: small ones from Hypothesis, bigger ones from a seed (cheaper to
    draw than Hypothesis's own), and deep ones: up to the server's depth limit if
    ``valid`` (and then without NaN or infinities), else well past it."""
    depth = MAX_JSON_DEPTH if valid else 70
    return st.one_of(
        st.dictionaries(st.text(max_size=8), small, max_size=3),
        st.tuples(st.integers(0, 2**32 - 1), st.integers(1, depth // 2)).map(
            lambda seed_depth: _seeded_object(random.Random(seed_depth[0]), seed_depth[1], valid)
        ),
        st.tuples(st.integers(1, depth), st.booleans()).map(lambda chain: _nested(*chain)),
    )


def _nested(depth: int, in_lists: bool) -> dict[str, Any]:
    """An object ``depth`` levels deep: around the server's depth limit (32 levels), or
    past what protobuf decodes (100 nested messages)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value] if in_lists else {"d": value}
    return {"d": value}


_json_objects = _json_objects_of(_json, valid=False)
_valid_json_objects = _json_objects_of(_finite_json, valid=True)
#: Random bytes, long ones from a seed: Hypothesis draws long byte strings slowly.
_random_bytes = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(100, 3000)).map(
        lambda seed_size: random.Random(seed_size[0]).randbytes(seed_size[1])
    ),
)
_task_ids = st.one_of(
    st.text(max_size=140),
    _HEX32,
    st.text(_ID_CHARS, min_size=1, max_size=129),
)
_INT_RANGES = {
    descriptor.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    descriptor.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def one_of_these(items: Sequence[_T], fallback: _T) -> st.SearchStrategy[_T]:
    """One of ``items``, or ``fallback`` when there are none, drawn the same way however
    many items there are."""
    return _INDEX.map(lambda i: items[i % len(items)] if items else fallback)


def _one_of_current(items: Callable[[], Sequence[_T]], fallback: _T) -> st.SearchStrategy[_T]:
    """Like :func:`one_of_these`, but of the items ``items()`` returns when drawn."""

    def resolve(index: int) -> _T:
        current = items()
        return current[index % len(current)] if current else fallback

    return _INDEX.map(resolve)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _tame_delegation(request: Message) -> Message:
    """Make a sleep of more than 50 ms (or of the default 1 s, when the payload names no
    ``seconds``) one of 10 ms: DelegateTask and WatchTask calls wait for their task, and
    waiting is not what is fuzzed. (``seconds`` that are no number stay: the task refuses
    them at once. The state machine delegates long sleeps on purpose, to reach the task
    limits.)"""
    if isinstance(request, peer_pb2.DelegateTaskRequest) and request.task_type == "sleep":
        seconds = request.payload.fields.get("seconds")
        if seconds is None or (
            seconds.HasField("number_value") and not seconds.number_value <= 0.05
        ):
            request.payload["seconds"] = 0.01
    return request


#: How a well-formed request is mangled: cut at, or a byte changed at, a position
#: (modulo its length), or bytes appended.
_mangling = st.tuples(
    st.sampled_from(["truncate", "change", "append"]),
    st.integers(0, 4095),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=16),
)


def _mangle(data: bytes, how: tuple[str, int, int, bytes]) -> bytes:
    kind, position, byte, tail = how
    if kind == "append" or not data:
        return data + tail
    position %= len(data)
    if kind == "truncate":
        return data[:position]
    return data[:position] + bytes([byte]) + data[position + 1 :]


class Known:
    """What a test knows of the server's state, for strategies to draw from.

    Its strategies read it when they draw, so that the test can update it between
    examples (sessions end, tasks are created) without building strategies anew.
    """

    def __init__(self, peer_ids: Sequence[str] = ()) -> None:
        #: Live sessions: calls made on them can be admitted.
        self.live: list[Session] = []
        #: Sessions that ended.
        self.ended: list[Session] = []
        self.peer_ids: list[str] = list(peer_ids)
        #: Tasks the test created.
        self.task_ids: list[str] = []
        #: Tasks that end soon: the ones WatchTask may name (a watch lasts as its task does).
        self.watchable_task_ids: list[str] = []
        self._strategies: dict[tuple[str, str], st.SearchStrategy[Any]] = {}

    @property
    def session_ids(self) -> list[str]:
        return [s.session_id for s in (*self.live, *self.ended)]

    def _cached(
        self, key: tuple[str, str], build: Callable[[], st.SearchStrategy[_T2]]
    ) -> st.SearchStrategy[_T2]:
        if key not in self._strategies:
            self._strategies[key] = build()
        return self._strategies[key]

    # -- requests --

    def requests(
        self, method: descriptor.MethodDescriptor, *, valid: bool = False
    ) -> st.SearchStrategy[Message]:
        """Well-formed requests of ``method``'s type: with random (often invalid)
        contents, or with ``valid`` ones that pass the server's request validation."""

        def build() -> st.SearchStrategy[Message]:
            hints = self._valid_hints() if valid else self._hints()
            required = _REQUIRED if valid else frozenset()
            return _message(method.input_type, hints, 0, required).map(_tame_delegation)

        return self._cached((method.full_name, "valid" if valid else "any"), build)

    def request_bytes(self, method: descriptor.MethodDescriptor) -> st.SearchStrategy[bytes]:
        """Bytes for ``method``: random, a well-formed request, one mangled, or a request
        of another method."""

        def build() -> st.SearchStrategy[bytes]:
            wellformed = self.requests(method).map(lambda r: r.SerializeToString())
            another = st.sampled_from(METHODS).flatmap(
                lambda other: self.requests(other).map(lambda r: r.SerializeToString())
            )
            return st.one_of(
                _random_bytes,
                wellformed,
                st.tuples(wellformed, _mangling).map(lambda pair: _mangle(*pair)),
                another,
            )

        return self._cached((method.full_name, "bytes"), build)

    def _known(
        self, items: Callable[[], Sequence[str]], other: st.SearchStrategy[str]
    ) -> st.SearchStrategy[str]:
        """One of the values the test knows (often right), or an ``other`` one."""
        return st.one_of(_one_of_current(items, "0" * 32), other)

    def _valid_hints(self) -> dict[str, st.SearchStrategy[Any]]:
        """Field values that pass the server's request validation."""
        task_id = self._known(lambda: self.task_ids, _HEX32)
        return {
            "peer.v1.DelegateTaskRequest.task_type": st.sampled_from(["echo", "sleep"]),
            "peer.v1.DelegateTaskRequest.payload": st.one_of(
                st.fixed_dictionaries({"seconds": st.floats(0, 0.02)}),
                _valid_json_objects,
            ).map(_struct),
            "peer.v1.DelegateTaskRequest.timeout": st.builds(
                duration_pb2.Duration,
                seconds=st.integers(1, 30),
                nanos=st.integers(0, 999_999_999),
            ),
            "peer.v1.GetTaskRequest.task_id": task_id,
            "peer.v1.CancelTaskRequest.task_id": task_id,
            "peer.v1.WatchTaskRequest.task_id": self._known(
                lambda: self.watchable_task_ids, _HEX32
            ),
            "peer.v1.ListTasksRequest.page_size": st.integers(0, 1000),
            "peer.v1.ListTasksRequest.page_token": st.just(""),
            "peer.v1.ListTasksRequest.state": st.integers(0, 6),
        }

    def _hints(self) -> dict[str, st.SearchStrategy[Any]]:
        """Values for fields by full name, beside the generic ones of their type:
        sometimes right, often near misses, so that requests reach past validation."""
        # Only tasks that end soon: the bytes of a GetTask are a valid WatchTask too.
        task_id = self._known(lambda: self.watchable_task_ids, _task_ids)
        return {
            "peer.v1.HandshakeRequest.peer_id": self._known(
                lambda: self.peer_ids,
                st.one_of(st.text(_ID_CHARS + ".:", min_size=1, max_size=12), ascii_text),
            ),
            "peer.v1.HandshakeRequest.protocol_versions": st.lists(
                st.one_of(
                    st.just("1.0"),
                    st.sampled_from(["1", "2.0", "1.0 ", ""]),
                    st.text(max_size=70),
                ),
                max_size=4,
            ),
            "peer.v1.ResumeSession.session_id": self._known(
                lambda: self.session_ids, st.text(max_size=130)
            ),
            "peer.v1.DelegateTaskRequest.task_type": st.one_of(
                st.sampled_from(["echo", "sleep", "nope", "", "ECHO"]), st.text(max_size=70)
            ),
            "peer.v1.DelegateTaskRequest.payload": _json_objects.map(_struct),
            "peer.v1.GetTaskRequest.task_id": task_id,
            "peer.v1.CancelTaskRequest.task_id": task_id,
            "peer.v1.WatchTaskRequest.task_id": task_id,
            "peer.v1.ListTasksRequest.page_size": st.one_of(
                st.integers(-2, 1002), st.integers(-(2**31), 2**31 - 1)
            ),
            "peer.v1.ListTasksRequest.page_token": st.one_of(
                st.just(""), st.text(max_size=70), st.binary(max_size=20).map(bytes.hex)
            ),
        }

    # -- metadata --

    def session_metadata(self) -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
        """Session metadata of every kind: none, right, a wrong sequence, another
        session's id, an ended session's, an unknown one, half of it, a malformed id,
        repeated keys."""
        return self._cached(("metadata", "session"), lambda: _session_metadata(self))

    def metadata_entries(self) -> st.SearchStrategy[tuple[str, str | bytes]]:
        """One metadata entry that a client can legally send, about a live session:
        our keys with near-miss values, near-miss keys, ``-bin`` keys with any bytes
        (the UTF-8 of any unicode text among them), transport keys, or random keys;
        values are sometimes huge (some KiB, within the server's metadata limit)."""
        return self._cached(("metadata", "entry"), lambda: _metadata_entry(self))


#: Fields a valid request must set.
_REQUIRED = frozenset(
    {
        "peer.v1.DelegateTaskRequest.task_type",
        "peer.v1.GetTaskRequest.task_id",
        "peer.v1.CancelTaskRequest.task_id",
        "peer.v1.WatchTaskRequest.task_id",
    }
)


def _message(
    message: descriptor.Descriptor,
    hints: Mapping[str, st.SearchStrategy[Any]],
    depth: int,
    required: frozenset[str] = frozenset(),
) -> st.SearchStrategy[Message]:
    """Messages of type ``message`` with any subset of their fields (and all the
    ``required`` ones) set to random values."""
    message_class = message_factory.GetMessageClass(message)
    if message.full_name == "google.protobuf.Struct":
        return _json_objects.map(_struct)
    fields = {
        field.name: _field(field, hints, depth)
        for field in message.fields
        if field.message_type is None or depth < 3
    }
    always = {
        name: fields.pop(name) for name in list(fields) if f"{message.full_name}.{name}" in required
    }

    def build(values: dict[str, Any]) -> Message:
        built = message_class()
        for name, value in values.items():
            target = getattr(built, name)
            if message.fields_by_name[name].is_repeated:
                if message.fields_by_name[name].message_type is not None:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(built, name, value)
        return built

    return st.fixed_dictionaries(always, optional=fields).map(build)


def _field(
    field: descriptor.FieldDescriptor, hints: Mapping[str, st.SearchStrategy[Any]], depth: int
) -> st.SearchStrategy[Any]:
    hint = hints.get(field.full_name)
    if hint is not None:
        return hint
    kind = field.type
    single: st.SearchStrategy[Any]
    if field.message_type is not None:
        single = _message(field.message_type, hints, depth + 1)
    elif field.enum_type is not None:
        numbers = [value.number for value in field.enum_type.values]
        single = st.integers(min(numbers) - 2, max(numbers) + 3)
    elif kind == descriptor.FieldDescriptor.TYPE_STRING:
        single = st.text(max_size=70)
    elif kind == descriptor.FieldDescriptor.TYPE_BYTES:
        single = st.binary(max_size=64)
    elif kind == descriptor.FieldDescriptor.TYPE_BOOL:
        single = st.booleans()
    elif kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        single = st.one_of(st.integers(max(low, -3), 3), st.integers(low, high))
    elif kind == descriptor.FieldDescriptor.TYPE_FLOAT:
        single = st.floats(width=32)
    else:
        single = st.floats()
    return st.lists(single, max_size=4) if field.is_repeated else single


#: ``peer-sequence`` values near the expected one ``e``: right, off by some, malformed.
_SEQUENCE_FORMS: dict[str, Callable[[int], str]] = {
    "e": str,
    "e-1": lambda e: str(e - 1),
    "e+1": lambda e: str(e + 1),
    "-e": lambda e: f"-{e}",
    "+e": lambda e: f"+{e}",
    "space e": lambda e: f" {e}",
    "e space": lambda e: f"{e} ",
    "0e": lambda e: f"0{e}",
    "25 zeros e": lambda e: "0" * 25 + str(e),
    "e 20 zeros": lambda e: str(e) + "0" * 20,
    "e.0": lambda e: f"{e}.0",
    "0": lambda e: "0",
    "-0": lambda e: "-0",
    "-1": lambda e: "-1",
    "2^64-1": lambda e: str(MAX_SEQUENCE),
    "2^64": lambda e: str(MAX_SEQUENCE + 1),
    "400 nines": lambda e: "9" * 400,
    "1e3": lambda e: "1e3",
    "0x1": lambda e: "0x1",
    "empty": lambda e: "",
    "space": lambda e: " ",
}
_sequence_form = st.one_of(
    st.sampled_from(sorted(_SEQUENCE_FORMS)),
    st.integers(-70, 70),  # an offset from the expected sequence
    st.integers(-(2**70), 2**70).map(lambda n: f"#{n}"),  # a number, whatever expected is
    ascii_text.map(lambda text: f"'{text}"),  # any text
)


def _sequence(form: str | int, expected: int) -> str:
    if isinstance(form, int):
        return str(expected + form)
    if form.startswith(("#", "'")):
        return form[1:]
    return _SEQUENCE_FORMS[form](expected)


#: ``peer-session-id`` values near a session's id ``s``: itself, altered, malformed.
_SESSION_ID_FORMS: dict[str, Callable[[str], str]] = {
    "s": str,
    "upper": str.upper,
    "truncated": lambda s: s[:-1],
    "extended": lambda s: s + "0",
    "reversed": lambda s: s[::-1],
    "space s": lambda s: f" {s}",
    "s space": lambda s: f"{s} ",
    "s four times": lambda s: s * 4,
    "129 chars": lambda s: "a" * 129,
    "empty": lambda s: "",
    "dash": lambda s: "-",
    "first char changed": lambda s: "_" + s[1:],
}
_session_id_form = st.one_of(
    st.sampled_from(sorted(_SESSION_ID_FORMS)),
    st.text(_ID_CHARS, min_size=1, max_size=128).map(lambda text: f"'{text}"),
    ascii_text.map(lambda text: f"'{text}"),
)


def _session_id(form: str, session_id: str) -> str:
    return form[1:] if form.startswith("'") else _SESSION_ID_FORMS[form](session_id)


_KINDS = [
    "none",
    "valid",
    "wrong sequence",
    "another session's id",
    "ended session",
    "unknown session",
    "id only",
    "sequence only",
    "malformed id",
    "repeated",
]


def _pick(items: Sequence[_T], index: int, fallback: _T) -> _T:
    return items[index % len(items)] if items else fallback


_metadata_kinds = st.sampled_from(_KINDS)
_repeats = st.lists(st.sampled_from([0, 1]), min_size=1, max_size=3)


def _session_metadata(known: Known) -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    @st.composite
    def draw_metadata(draw: st.DrawFn) -> list[tuple[str, str | bytes]]:
        kind = draw(_metadata_kinds, label="metadata kind")
        session = _pick(known.live, draw(_INDEX), None)
        assert session is not None, "no live session"
        sid, number = session.session_id, str(session.expected_sequence)
        right: list[tuple[str, str | bytes]] = [(SESSION_ID_KEY, sid), (SEQUENCE_KEY, number)]
        if kind == "none":
            return []
        if kind == "valid":
            return right
        if kind == "wrong sequence":
            sequence = _sequence(draw(_sequence_form), session.expected_sequence)
            return [(SESSION_ID_KEY, sid), (SEQUENCE_KEY, sequence)]
        if kind == "another session's id":
            other = _pick(known.live, draw(_INDEX), session)
            return [(SESSION_ID_KEY, other.session_id), (SEQUENCE_KEY, number)]
        if kind == "ended session":
            gone = _pick(known.ended, draw(_INDEX), None)
            own_number = draw(st.booleans())
            if gone is None:  # none ended yet: a session that never existed
                return [(SESSION_ID_KEY, "0" * 32), (SEQUENCE_KEY, number)]
            sequence = number if own_number else str(gone.expected_sequence)
            return [(SESSION_ID_KEY, gone.session_id), (SEQUENCE_KEY, sequence)]
        if kind == "unknown session":
            return [(SESSION_ID_KEY, draw(_HEX32)), (SEQUENCE_KEY, number)]
        if kind == "id only":
            return right[:1]
        if kind == "sequence only":
            return right[1:]
        if kind == "malformed id":
            return [(SESSION_ID_KEY, _session_id(draw(_session_id_form), sid)), right[1]]
        return [*right, *(right[i] for i in draw(_repeats))]

    return draw_metadata()


#: Keys that look like ours but are not.
NEAR_MISS_KEYS = [
    "peer-session",
    "peer-sessionid",
    "peer_session_id",
    "peer-session-ids",
    "peer-session-id.",
    "x-peer-session-id",
    "session-id",
    "peer-sequences",
    "peer_sequence",
    "peer-seq",
    "peer.sequence",
    "peersequence",
    "sequence",
    "peer-",
]
#: Keys HTTP/2 or gRPC's transport give a meaning of their own. Keys starting with
#: ``grpc-`` are left out: gRPC reserves them, and grpcio's own client mishandles a
#: request that carries one (with ``grpc-status: 13`` it reports OK without the
#: response message the server sent), so their outcomes say nothing about the server.
TRANSPORT_KEYS = [
    "te",
    "host",
    "content-type",
    "user-agent",
    "authorization",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
]
#: Keys a client may send: lowercase letters, digits, ``_.-`` (``grpc-`` is reserved).
_legal_keys = st.text(
    string.ascii_lowercase + string.digits + "_.-", min_size=1, max_size=24
).filter(lambda key: not key.startswith("grpc-"))
_legal_text_keys = _legal_keys.filter(lambda key: not key.endswith("-bin"))
#: Lengths of huge values: some KiB, within the server's metadata limit (16 KiB by
#: default) even several at a time. Metadata past the limit is refused by the transport,
#: and each such call costs some 100 ms: it has a test of its own.
_huge_length = st.integers(1_000, 4_000)
_huge_text = st.builds(lambda c, n: c * n, st.sampled_from("a0 -~"), _huge_length)
_huge_bytes = st.builds(lambda c, n: c * n, st.sampled_from([b"\x00", b"\xff", b"a"]), _huge_length)


def _rarely_huge(
    usual: st.SearchStrategy[_T], huge: st.SearchStrategy[_T]
) -> st.SearchStrategy[_T]:
    """``usual`` values, and one time in eight a huge one."""
    return st.integers(0, 7).flatmap(lambda n: huge if n == 7 else usual)


#: Whether to send a huge value instead, and which.
_huge_instead: st.SearchStrategy[str | None] = _rarely_huge(st.none(), _huge_text)
_text_values = _rarely_huge(ascii_text, _huge_text)
#: Binary values: anything, including the UTF-8 of any unicode text.
_binary_values = _rarely_huge(
    st.one_of(st.binary(max_size=64), st.text(max_size=20).map(str.encode)), _huge_bytes
)
_ENTRY_KINDS = [
    "session id",
    "sequence",
    "ours -bin",
    "near-miss key",
    "transport",
    "random",
    "random -bin",
]
_entry_kinds = st.sampled_from(_ENTRY_KINDS)
_our_bin_keys = st.sampled_from([SESSION_ID_KEY + "-bin", SEQUENCE_KEY + "-bin"])
_near_miss_keys = st.sampled_from(NEAR_MISS_KEYS)
_transport_keys = st.sampled_from(TRANSPORT_KEYS)
_which_value = st.integers(0, 2)


def _metadata_entry(known: Known) -> st.SearchStrategy[tuple[str, str | bytes]]:
    @st.composite
    def draw_entry(draw: st.DrawFn) -> tuple[str, str | bytes]:
        kind = draw(_entry_kinds)
        session = _pick(known.live, draw(_INDEX), None)
        assert session is not None, "no live session"
        sid, expected = session.session_id, session.expected_sequence
        if kind == "session id":
            value = _session_id(draw(_session_id_form), sid)
            return SESSION_ID_KEY, draw(_huge_instead) or value
        if kind == "sequence":
            value = _sequence(draw(_sequence_form), expected)
            return SEQUENCE_KEY, draw(_huge_instead) or value
        if kind == "ours -bin":
            key = draw(_our_bin_keys)
            right = (sid if key.startswith(SESSION_ID_KEY) else str(expected)).encode()
            return key, right if draw(st.booleans()) else draw(_binary_values)
        if kind == "near-miss key":
            key = draw(_near_miss_keys)
            which = draw(_which_value)
            return key, sid if which == 1 else str(expected) if which == 2 else draw(_text_values)
        if kind == "transport":
            return draw(_transport_keys), draw(_text_values)
        if kind == "random":
            return draw(_legal_text_keys), draw(_text_values)
        return draw(_legal_keys) + "-bin", draw(_binary_values)

    return draw_entry()
