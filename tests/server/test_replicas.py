"""Several server replicas on one Redis, or on one Redis Cluster: any replica takes the next
message of any session, exactly once, and a restart loses nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import json_format

from peer_grpc import PeerServer, ServerConfig, TaskRegistry, current_task, default_registry
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import (
    eventually,
    open_session,
    session_metadata,
    shared_cluster,
    shared_redis,
)
from tests.rpc_details import details_of

Stub = peer_pb2_grpc.PeerServiceStub
ReplicaFactory = Callable[..., Awaitable[PeerServer]]


class Recorder:
    """A task handler that records the ``id`` of every payload it runs."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.runs[payload["id"]] += 1
        return {"id": payload["id"]}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def registry(recorder: Recorder) -> TaskRegistry:
    tasks = default_registry()
    tasks.register("record", recorder)
    return tasks


@pytest.fixture(params=["redis", "redis-cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """What the replicas share: one redis-server, or a local Redis Cluster."""
    return shared_cluster().url if request.param == "redis-cluster" else shared_redis().url


@pytest.fixture
async def start_replica(registry: TaskRegistry, store_url: str) -> AsyncIterator[ReplicaFactory]:
    """Starts replicas that share one Redis key space; stops them all afterwards."""
    prefix = f"replicas-{uuid.uuid4().hex[:12]}"
    started: list[PeerServer] = []

    async def start(port: int = 0, **settings: Any) -> PeerServer:
        config = ServerConfig(
            host="127.0.0.1",
            port=port,
            store=store_url,
            redis_key_prefix=prefix,
            shutdown_grace=0,
            max_tasks_per_session=64,
            **settings,
        )
        server = PeerServer(config, tasks=registry)
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop(grace=0)


@pytest.fixture
async def two_stubs(start_replica: ReplicaFactory) -> AsyncIterator[tuple[Stub, Stub]]:
    first, second = await start_replica(), await start_replica()
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as other,
    ):
        yield Stub(one), Stub(other)


def record_request(record_id: str) -> peer_pb2.DelegateTaskRequest:
    request = peer_pb2.DelegateTaskRequest(task_type="record")
    json_format.ParseDict({"id": record_id}, request.payload)
    return request


async def status_of(stub: Stub, session_id: str, sequence: int) -> peer_pb2.StatusResponse:
    response: peer_pb2.StatusResponse = await stub.Status(
        peer_pb2.StatusRequest(), metadata=session_metadata(session_id, sequence)
    )
    return response


async def test_a_client_alternating_between_replicas_keeps_one_sequence(
    two_stubs: tuple[Stub, Stub],
) -> None:
    session_id = (await open_session(two_stubs[0], "alternating")).session_id

    for sequence in range(1, 41):
        await two_stubs[sequence % 2].Ping(
            peer_pb2.PingRequest(), metadata=session_metadata(session_id, sequence)
        )

    with pytest.raises(grpc.aio.AioRpcError) as caught:  # either replica knows 40 is spent
        await two_stubs[1].Ping(
            peer_pb2.PingRequest(payload=b"again"), metadata=session_metadata(session_id, 40)
        )
    assert details_of(caught.value).reason == "SEQUENCE_ERROR"
    status = await status_of(two_stubs[1], session_id, 41)
    assert status.session.expected_sequence == 42


async def test_the_same_message_sent_to_both_replicas_at_once_runs_exactly_once(
    two_stubs: tuple[Stub, Stub], recorder: Recorder
) -> None:
    session_id = (await open_session(two_stubs[0], "twice")).session_id

    for sequence in range(1, 21):
        request = record_request(f"message-{sequence}")
        metadata = session_metadata(session_id, sequence)
        answers = await asyncio.gather(
            *(stub.DelegateTask(request, metadata=metadata) for stub in two_stubs)
        )
        # The second is a resend: it gets the first one's answer, the same task.
        assert answers[0] == answers[1]
        assert answers[0].task.state == peer_pb2.TASK_STATE_COMPLETED

    assert set(recorder.runs.values()) == {1}
    assert len(recorder.runs) == 20


async def test_one_sequence_with_two_messages_on_both_replicas_admits_exactly_one(
    two_stubs: tuple[Stub, Stub], recorder: Recorder
) -> None:
    session_id = (await open_session(two_stubs[0], "rivals")).session_id

    for sequence in range(1, 21):
        metadata = session_metadata(session_id, sequence)
        answers = await asyncio.gather(
            *(
                stub.DelegateTask(record_request(f"{sequence}-{side}"), metadata=metadata)
                for side, stub in enumerate(two_stubs)
            ),
            return_exceptions=True,
        )
        refused = [answer for answer in answers if isinstance(answer, grpc.aio.AioRpcError)]
        assert len(refused) == 1, answers
        assert details_of(refused[0]).reason == "SEQUENCE_ERROR"

    assert sum(recorder.runs.values()) == 20


@pytest.mark.timeout(300)
async def test_16_clients_x_200_calls_over_both_replicas_end_with_exact_sequences(
    two_stubs: tuple[Stub, Stub],
) -> None:
    calls = 200

    async def client(index: int) -> str:
        session_id = (await open_session(two_stubs[index % 2], f"client-{index}")).session_id
        for sequence in range(1, calls + 1):
            await two_stubs[(index + sequence) % 2].Ping(
                peer_pb2.PingRequest(payload=sequence.to_bytes(2, "big")),
                metadata=session_metadata(session_id, sequence),
            )
        return session_id

    session_ids = await asyncio.gather(*(client(index) for index in range(16)))

    for index, session_id in enumerate(session_ids):
        status = await status_of(two_stubs[index % 2], session_id, calls + 1)
        assert status.session.expected_sequence == calls + 2


async def test_a_restart_keeps_sessions_sequences_and_tasks(
    start_replica: ReplicaFactory, recorder: Recorder
) -> None:
    first = await start_replica()
    async with grpc.aio.insecure_channel(first.address) as channel:
        stub = Stub(channel)
        session_id = (await open_session(stub, "survivor")).session_id
        for sequence in range(1, 6):
            await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, sequence))
        delegated = await stub.DelegateTask(
            record_request("before-restart"), metadata=session_metadata(session_id, 6)
        )
    port = first.port
    await first.stop(grace=0)

    second = await start_replica(port=port)  # a new process, where the old one listened
    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = Stub(channel)
        task = await stub.GetTask(
            peer_pb2.GetTaskRequest(task_id=delegated.task.task_id),
            metadata=session_metadata(session_id, 7),
        )
        status = await status_of(stub, session_id, 8)

    assert task.task == delegated.task
    assert task.task.state == peer_pb2.TASK_STATE_COMPLETED
    assert status.session.state == peer_pb2.SESSION_STATE_ESTABLISHED
    assert status.session.expected_sequence == 9
    assert recorder.runs == {"before-restart": 1}


async def watched_elsewhere(runner: Stub, watcher: Stub, task_type: str) -> tuple[str, str, Any]:
    """A session that delegates a task through ``runner`` (sequence 1) and watches it
    through ``watcher`` (sequence 2): its id, the task's, and the watch."""
    session_id = (await open_session(runner, "watched")).session_id
    delegated = await runner.DelegateTask(
        peer_pb2.DelegateTaskRequest(task_type=task_type, return_immediately=True),
        metadata=session_metadata(session_id, 1),
    )
    task_id = delegated.task.task_id
    watch = watcher.WatchTask(
        peer_pb2.WatchTaskRequest(task_id=task_id), metadata=session_metadata(session_id, 2)
    )
    return session_id, task_id, watch


async def test_a_task_is_watched_and_canceled_from_the_other_replica(
    start_replica: ReplicaFactory,
) -> None:
    gate = asyncio.Event()

    async def held(payload: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return {}

    first, second = await start_replica(), await start_replica()
    first.tasks.registry.register("held", held)
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as other,
    ):
        runner, watcher = Stub(one), Stub(other)
        session_id, task_id, watch = await watched_elsewhere(runner, watcher, "held")
        first_seen = await watch.read()  # the watch is admitted (sequence 2) before 3 goes
        canceled = await watcher.CancelTask(
            peer_pb2.CancelTaskRequest(task_id=task_id), metadata=session_metadata(session_id, 3)
        )
        states = [first_seen.task.state]
        while (update := await watch.read()) is not grpc.aio.EOF:
            states.append(update.task.state)

    assert canceled.task.state == peer_pb2.TASK_STATE_CANCELED
    assert states[-1] == peer_pb2.TASK_STATE_CANCELED
    # The replica running it stops the handler at its next sweep.
    await first.sweep()
    await eventually(lambda: first.tasks.running == 0)
    gate.set()


async def test_handshake_limits_hold_across_replicas(start_replica: ReplicaFactory):
    limited = {"peer_handshake_rate": 0.01, "peer_handshake_burst": 2}
    first, second = await start_replica(**limited), await start_replica(**limited)
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as other,
    ):
        await open_session(Stub(one), "eager")
        await open_session(Stub(other), "eager")
        # Each replica has seen one handshake of "eager"; together they have seen two.
        for stub in (Stub(one), Stub(other)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await open_session(stub, "eager")
            details = details_of(refused.value)
            assert details.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details.reason == "HANDSHAKE_RATE_LIMITED"


async def test_a_question_asked_on_one_replica_is_answered_through_the_other(
    start_replica: ReplicaFactory, registry: TaskRegistry
) -> None:
    @registry.task("ask", asks_for_input=True)
    async def ask(payload: dict[str, Any]) -> dict[str, Any]:
        current_task().progress(0.5, "half way, then a question")
        answer = await current_task().ask({"question": "which colour?"})
        return {"colour": answer["colour"]}

    # Only the first replica runs tasks: the handler waits there for an answer that
    # reaches the second.
    first, second = await start_replica(), await start_replica(run_tasks=False)
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as other,
    ):
        runner, answerer = Stub(one), Stub(other)
        session_id, task_id, watch = await watched_elsewhere(runner, answerer, "ask")
        seen = [(await watch.read()).task]
        while seen[-1].state != peer_pb2.TASK_STATE_INPUT_REQUIRED:
            seen.append((await watch.read()).task)
        answer = peer_pb2.ProvideInputRequest(task_id=task_id, question=1)
        answer.input.update({"colour": "teal"})
        resumed = await answerer.ProvideInput(answer, metadata=session_metadata(session_id, 3))
        while (update := await watch.read()) is not grpc.aio.EOF:
            seen.append(update.task)

    assert resumed.task.state == peer_pb2.TASK_STATE_WORKING
    assert next(t.progress.message for t in seen if t.HasField("progress")) == (
        "half way, then a question"
    )
    assert seen[-1].state == peer_pb2.TASK_STATE_COMPLETED
    assert json_format.MessageToDict(seen[-1].result) == {"colour": "teal"}
    assert first.tasks.runner is not None
    assert second.tasks.runner is None
