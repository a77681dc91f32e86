"""The fuzz tests' server: on a thread and event loop of its own, once per test, with raw
calls of bytes exactly as they travel.

The tests drive it from their own thread with a synchronous channel, so that Hypothesis
(including its stateful machines) never has to share an event loop with the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from itertools import count
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import assume

from peer_grpc import (
    MemorySessionStore,
    PeerServer,
    ServerConfig,
    Session,
    default_registry,
)
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.stores import SessionStore, TaskStore
from tests.conftest import STORE_FACTORIES, TASK_STORE_FACTORIES
from tests.fuzz.invariants import Outcome, check_outcome
from tests.fuzz.requests import METHODS_BY_NAME, SERVICE

_T = TypeVar("_T")

#: How many times more inputs than the default run: ``make fuzz`` sets PEER_GRPC_FUZZ_SCALE.
SCALE = max(1, int(os.environ.get("PEER_GRPC_FUZZ_SCALE", "1")))


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
