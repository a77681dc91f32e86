"""Redis failing under load: every failed call is UNAVAILABLE, the server survives and says
NOT_SERVING, and once Redis answers again the same sessions go on with nothing run twice.

Each test runs its own redis-server, with an fsynced append-only file, so that it
can be frozen (SIGSTOP) or killed and restarted without touching other tests; the
frozen one runs on a local Redis Cluster of its own too.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peer_grpc import PeerServer, Retry, ServerConfig, default_registry
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import open_session, resume_request, session_metadata
from tests.redis_cluster import LocalCluster
from tests.redis_server import RedisServer
from tests.rpc_details import reason_of

Stub = peer_pb2_grpc.PeerServiceStub
SESSIONS = 6
#: Every call's deadline: longer than the server needs to give up on Redis.
CALL_TIMEOUT = 5.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def runs() -> Counter[str]:
    """How often each message's effect ran, by message id."""
    return Counter()


class FrozenCluster:
    """A local Redis Cluster whose primaries all freeze and thaw at once: a cluster that
    stops answering. With no primary awake to vote, no replica is promoted meanwhile."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.url = cluster.url

    def freeze(self) -> None:
        for primary in self.cluster.primaries:
            primary.freeze()

    def thaw(self) -> None:
        for primary in self.cluster.primaries:
            primary.thaw()


@pytest.fixture(params=["redis", "redis-cluster"])
def frozen(request: pytest.FixtureRequest) -> RedisServer | FrozenCluster:
    """What the frozen test breaks: a redis-server, or every primary of a cluster."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server
    return FrozenCluster(request.getfixturevalue("own_cluster"))


@pytest.fixture(params=[0.0, 0.3], ids=["instant-tasks", "tasks-mid-run"])
async def server(request: pytest.FixtureRequest, runs: Counter[str]) -> AsyncIterator[PeerServer]:
    """A server whose ``record`` handler counts its runs; with a delay, the fault finds
    tasks running. The handler is retryable: still, a Redis outage shorter than the task
    lease (10 s) must not run any task twice."""
    delay: float = request.param
    # The frozen test's Redis (or cluster), else the test's own redis-server.
    redis_url = request.getfixturevalue(
        "frozen" if "frozen" in request.fixturenames else "redis_server"
    ).url

    async def record(payload: dict[str, Any]) -> dict[str, Any]:
        runs[payload["id"]] += 1
        await asyncio.sleep(delay)
        return {"id": payload["id"]}

    registry = default_registry()
    registry.register("record", record, retry=Retry(max_attempts=3))
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        store=redis_url,
        redis_key_prefix=f"faults-{uuid.uuid4().hex[:8]}",
        redis_timeout=0.3,
        store_check_interval=0.1,
        shutdown_grace=0,
    )
    server = PeerServer(config, tasks=registry)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


class Sender:
    """One peer sending numbered messages, each resent with the same sequence and bytes
    until it is answered, as the protocol asks of a peer that lost an answer; a fenced
    session is resumed with the last sequence answered before the resend."""

    def __init__(self, stub: Stub, opened: peer_pb2.HandshakeResponse, name: str) -> None:
        self.stub = stub
        self.opened = opened
        self.session_id = opened.session_id
        self.name = name
        self.sequence = 0
        self.failures: Counter[str] = Counter()
        self.answered: list[str] = []

    async def send_one(self) -> None:
        self.sequence += 1
        message_id = f"{self.name}-{self.sequence}"
        request = peer_pb2.DelegateTaskRequest(task_type="record")
        json_format.ParseDict({"id": message_id}, request.payload)
        metadata = session_metadata(self.session_id, self.sequence)
        while True:
            try:
                response = await self.stub.DelegateTask(
                    request, metadata=metadata, timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                fenced = (
                    error.code() is grpc.StatusCode.FAILED_PRECONDITION
                    and reason_of(error) == "SESSION_FENCED"
                )
                self.failures["SESSION_FENCED" if fenced else error.code().name] += 1
                if fenced:
                    await self.resume()
                await asyncio.sleep(0.05)
                continue
            # COMPLETED; or, for a resend of a call whose answer was lost, the task as
            # the original left it (its effect, the task, is what counts).
            assert response.task.task_type == "record"
            self.answered.append(message_id)
            return

    async def resume(self) -> None:
        """Resume the session, saying that everything before this message was answered."""
        request = resume_request(self.name, self.opened, self.sequence - 1)
        with contextlib.suppress(grpc.aio.AioRpcError):  # UNAVAILABLE: the resend retries
            await self.stub.Handshake(request, timeout=CALL_TIMEOUT)

    async def keep_sending(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.send_one()


async def health_of(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service="peer.v1.PeerService"))
    return int(response.status)


async def run_through_fault(
    server: PeerServer, fault: Callable[[], None], recover: Callable[[], None]
) -> tuple[list[Sender], list[int]]:
    """Load the server, break Redis for a while, mend it, and keep loading; returns the
    senders and the health statuses seen while Redis was broken."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = Stub(channel)
        senders = [
            Sender(stub, await open_session(stub, f"p{index}"), f"p{index}")
            for index in range(SESSIONS)
        ]
        stop = asyncio.Event()
        load = [asyncio.create_task(sender.keep_sending(stop)) for sender in senders]
        await asyncio.sleep(0.5)

        fault()
        health_seen = []
        for _ in range(15):
            await asyncio.sleep(0.1)
            health_seen.append(await health_of(channel))
        recover()

        await asyncio.sleep(1.5)  # the same sessions go on
        stop.set()
        await asyncio.gather(*load)
        for sender in senders:
            await sender.send_one()
        assert await health_of(channel) == health_pb2.HealthCheckResponse.SERVING
    return senders, health_seen


def check_exactly_once(senders: list[Sender], runs: Counter[str]) -> None:
    for sender in senders:
        assert set(sender.failures) <= {"UNAVAILABLE", "SESSION_FENCED"}, sender.failures
        sent = [f"{sender.name}-{sequence}" for sequence in range(1, sender.sequence + 1)]
        assert sender.answered == sent
    assert set(runs.values()) == {1}, [key for key, count in runs.items() if count != 1]
    assert sum(runs.values()) == sum(sender.sequence for sender in senders)
    # Whether any call failed depends on timing: a call admitted before the fault may
    # simply wait for its task's end to be recorded once Redis is back. That the fault
    # was felt is what the NOT_SERVING health status seen during it shows.


async def test_a_frozen_redis_fails_calls_unavailable_and_they_go_on_after(
    frozen: RedisServer | FrozenCluster, server: PeerServer, runs: Counter[str]
) -> None:
    senders, health_seen = await run_through_fault(server, frozen.freeze, frozen.thaw)

    check_exactly_once(senders, runs)
    assert health_pb2.HealthCheckResponse.NOT_SERVING in health_seen


async def test_a_redis_restarted_from_its_append_only_file_loses_no_session(
    server: PeerServer, redis_server: RedisServer, runs: Counter[str]
) -> None:
    senders, health_seen = await run_through_fault(server, redis_server.kill, redis_server.start)

    check_exactly_once(senders, runs)
    # A restart changes the primary's replication id, and the fence cannot tell a restart
    # that lost nothing (an fsynced file) from one that did: each session resumed once.
    assert all(sender.failures["SESSION_FENCED"] == 1 for sender in senders)
    assert health_pb2.HealthCheckResponse.NOT_SERVING in health_seen
    stats = await server.manager.get_session_stats()
    assert stats.established == SESSIONS
