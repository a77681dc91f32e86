"""Shared fixtures: a fake clock, every store implementation, and a real server on loopback."""

from __future__ import annotations

import asyncio
import enum
import inspect
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from peer_grpc import (
    ManualClock,
    MemorySessionStore,
    PeerServer,
    ServerConfig,
    Session,
    SessionManager,
    SessionStore,
    TaskRegistry,
    default_registry,
)
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.core.retry import CallKey
from peer_grpc.stores import MemoryTaskStore, RedisSessionStore, RedisTaskStore, TaskStore
from tests.redis_cluster import LocalCluster
from tests.redis_sentinel import SentinelGroup
from tests.redis_server import RedisServer

StoreFactory = Callable[..., SessionStore]
TaskStoreFactory = Callable[..., TaskStore]

_shared_redis: RedisServer | None = None
_shared_cluster: LocalCluster | None = None


def shared_redis() -> RedisServer:
    """The redis-server the Redis store tests share, started on first use.

    Each store built on it gets its own key prefix, so tests never see each other's keys.
    """
    global _shared_redis
    if _shared_redis is None:
        _shared_redis = RedisServer(Path(tempfile.mkdtemp(prefix="peer-grpc-redis-")))
        _shared_redis.start()
    return _shared_redis


#: Folders (and top-level files) of end-to-end tests: real servers, processes, Node,
#: packaging. ``make test-unit`` leaves them out (``-m "not e2e"``).
_END_TO_END = frozenset(
    {"server", "client", "cli", "docs", "test_packaging.py", "test_benchmarks.py", "test_deploy.py"}
)
_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under an end-to-end folder ``e2e``, so the fast ones run alone."""
    for item in items:
        path = item.path.resolve()
        if path.is_relative_to(_TESTS) and path.relative_to(_TESTS).parts[0] in _END_TO_END:
            item.add_marker(pytest.mark.e2e)


def shared_cluster() -> LocalCluster:
    """The local Redis Cluster the Redis store tests share, started on first use.

    Tests that kill its nodes start a cluster of their own.
    """
    global _shared_cluster
    if _shared_cluster is None:
        _shared_cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="peer-grpc-cluster-")))
        _shared_cluster.start()
    return _shared_cluster


def stop_shared_redis() -> None:
    """Stop the shared redis-server and cluster, if they were started (at the end of a
    test session, or of a benchmark that borrowed them)."""
    global _shared_redis, _shared_cluster
    if _shared_redis is not None:
        _shared_redis.stop()
        _shared_redis = None
    if _shared_cluster is not None:
        _shared_cluster.stop()
        _shared_cluster = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_shared_redis()


def _unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def redis_session_store(**options: Any) -> RedisSessionStore:
    """A Redis session store on the shared server, with keys of its own."""
    options.setdefault("key_prefix", _unique_prefix())
    return RedisSessionStore.from_url(shared_redis().url, **options)


def redis_task_store(**options: Any) -> RedisTaskStore:
    """A Redis task store on the shared server, with keys of its own."""
    options.setdefault("key_prefix", _unique_prefix())
    return RedisTaskStore.from_url(shared_redis().url, **options)


def cluster_session_store(**options: Any) -> RedisSessionStore:
    """A Redis session store on the shared local Redis Cluster, with keys of its own."""
    options.setdefault("key_prefix", _unique_prefix())
    return RedisSessionStore.from_url(shared_cluster().url, **options)


def cluster_task_store(**options: Any) -> RedisTaskStore:
    """A Redis task store on the shared local Redis Cluster, with keys of its own."""
    options.setdefault("key_prefix", _unique_prefix())
    return RedisTaskStore.from_url(shared_cluster().url, **options)


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_tasks(request: pytest.FixtureRequest) -> AsyncIterator[RedisTaskStore]:
    """A Redis task store of the test's own (for what only the Redis store does), on one
    Redis and on a Redis Cluster."""
    build = cluster_task_store if request.param == "redis-cluster" else redis_task_store
    store = build()
    try:
        yield store
    finally:
        await store.close()


#: Every SessionStore implementation; store-level and end-to-end tests run once per entry.
#: Each takes the store's keyword options (e.g. ``retry_cache_size``).
STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": MemorySessionStore,
    "redis": redis_session_store,
    "redis-cluster": cluster_session_store,
}
#: Every TaskStore implementation, likewise; each takes ``retention``.
TASK_STORE_FACTORIES: dict[str, TaskStoreFactory] = {
    "memory": MemoryTaskStore,
    "redis": redis_task_store,
    "redis-cluster": cluster_task_store,
}


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture(params=sorted(STORE_FACTORIES))
def backend(request: pytest.FixtureRequest) -> str:
    """The store implementation a test runs on: each in turn."""
    return str(request.param)


@pytest.fixture
async def store_factory(backend: str) -> AsyncIterator[StoreFactory]:
    """Builds fresh session stores of the test's backend, closed after the test."""
    built: list[SessionStore] = []

    def build(**options: Any) -> SessionStore:
        built.append(STORE_FACTORIES[backend](**options))
        return built[-1]

    yield build
    # Closing twice is harmless; a store read after its server closed it reconnected.
    for store in built:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[SessionStore]:
    """A fresh store of each implementation in turn."""
    store = store_factory()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def task_store_factory(backend: str) -> AsyncIterator[TaskStoreFactory]:
    """Builds fresh task stores of the test's backend, closed after the test."""
    built: list[TaskStore] = []

    def build(**options: Any) -> TaskStore:
        built.append(TASK_STORE_FACTORIES[backend](**options))
        return built[-1]

    yield build
    for store in built:
        await store.close()


@pytest.fixture
async def task_store(task_store_factory: TaskStoreFactory) -> AsyncIterator[TaskStore]:
    """A fresh task store of each implementation in turn."""
    store = task_store_factory()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (append-only), for tests that stop or freeze it."""
    server = RedisServer(tmp_path, append_only=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, its replica and a Sentinel of the test's own (it fails them over)."""
    group = SentinelGroup(tmp_path)
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A local Redis Cluster of the test's own, for tests that kill or freeze its nodes."""
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def server_config() -> ServerConfig:
    """The configuration of the ``server`` fixture; override in a module to change it.

    Handshake rate limits are off: on the test's manual clock no token ever comes
    back, and tests of other behaviours handshake as often as they like. The
    limits have tests of their own.
    """
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        idle_timeout=30.0,
        shutdown_grace=0.5,
        peer_handshake_rate=0,
        client_handshake_rate=0,
    )


@dataclass
class Gate:
    """A task handler that holds its task until the test releases it, counting its runs."""

    runs: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        return {"runs": self.runs}


@pytest.fixture
def gate() -> Gate:
    """The handler of the ``held`` task type."""
    return Gate()


@pytest.fixture
def task_registry(gate: Gate) -> TaskRegistry:
    """The task handlers of the ``server`` fixture: the built-in ones and ``held``.

    Override in a module to change them.
    """
    registry = default_registry()
    registry.register("held", gate)
    return registry


@pytest.fixture
async def server(
    server_config: ServerConfig,
    store_factory: StoreFactory,
    task_store_factory: TaskStoreFactory,
    clock: ManualClock,
    task_registry: TaskRegistry,
) -> AsyncIterator[PeerServer]:
    """A real server on an ephemeral loopback port, stopped even when the test fails."""
    server = PeerServer(
        server_config,
        store=store_factory(),
        task_store=task_store_factory(retention=server_config.task_retention),
        clock=clock,
        tasks=task_registry,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def channel(server: PeerServer) -> AsyncIterator[grpc.aio.Channel]:
    """A plain channel to the server, without the client's sequencing."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> peer_pb2_grpc.PeerServiceStub:
    """A raw stub: tests set the session metadata themselves."""
    return peer_pb2_grpc.PeerServiceStub(channel)


async def open_session(
    stub: peer_pb2_grpc.PeerServiceStub, peer_id: str = "peer-a"
) -> peer_pb2.HandshakeResponse:
    """Handshake as ``peer_id`` and return the server's answer."""
    response: peer_pb2.HandshakeResponse = await stub.Handshake(
        peer_pb2.HandshakeRequest(peer_id=peer_id, protocol_versions=["1.0"])
    )
    return response


def resume_request(
    peer_id: str, opened: peer_pb2.HandshakeResponse, last_acknowledged: int = 0
) -> peer_pb2.HandshakeRequest:
    """A Handshake that resumes the session ``opened`` as ``peer_id``, saying that the
    server acknowledged every sequence up to ``last_acknowledged``."""
    return peer_pb2.HandshakeRequest(
        peer_id=peer_id,
        protocol_versions=["1.0"],
        resume=peer_pb2.ResumeSession(
            session_id=opened.session_id,
            session_token=opened.session_token,
            last_acknowledged=last_acknowledged,
        ),
    )


def session_metadata(session_id: str, sequence: int | str) -> tuple[tuple[str, str], ...]:
    """The metadata of a sequenced call."""
    return ((SESSION_ID_KEY, session_id), (SEQUENCE_KEY, str(sequence)))


async def admit(manager: SessionManager, session_id: str, sequence: int) -> Session:
    """Admit a new call (never a resend: its digest is unique) and return the session."""
    admission = await manager.admit(session_id, sequence, CallKey("Ping", os.urandom(16)))
    assert admission.replay is None
    return admission.session


async def eventually(condition: Callable[[], Awaitable[bool] | bool], seconds: float = 5.0) -> None:
    """Wait until ``condition`` holds; fail after ``seconds``.

    For state that changes on its own (a task running in the background), where
    there is no event to wait on.
    """
    async with asyncio.timeout(seconds):
        while True:
            result = condition()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.01)


def state_slug(state: enum.Enum) -> str:
    """A state's name as a test id: ``HANDSHAKE_SENT`` is ``handshake-sent``."""
    return state.name.lower().replace("_", "-")


def transition_params(
    states: Iterable[enum.Enum], legal: Collection[tuple[Any, Any]], *, legal_ones: bool
) -> list[pytest.ParameterSet]:
    """Every (source, target) pair of ``states`` that is (or is not) in ``legal``, with
    readable ids such as ``handshake-sent-to-established``."""
    members = list(states)
    return [
        pytest.param(source, target, id=f"{state_slug(source)}-to-{state_slug(target)}")
        for source in members
        for target in members
        if ((source, target) in legal) is legal_ones
    ]
