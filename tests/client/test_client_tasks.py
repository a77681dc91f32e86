"""PeerClient and tasks: delegating, waiting, watching, cancelling, and typed task errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
import pytest

from peer_grpc import PeerClient, PeerServer, ServerConfig, TaskRegistry
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.errors import RemoteError, TaskLimitReached, TaskNotCancelable, TaskNotFound
from tests.conftest import Gate, eventually

FINAL = {
    peer_pb2.TASK_STATE_COMPLETED,
    peer_pb2.TASK_STATE_FAILED,
    peer_pb2.TASK_STATE_CANCELED,
    peer_pb2.TASK_STATE_REJECTED,
}


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return replace(server_config, max_tasks_per_session=1)


@pytest.fixture
async def client(server: PeerServer) -> AsyncIterator[PeerClient]:
    async with PeerClient(server.address, "client-a", heartbeat=False, timeout=2) as client:
        yield client


async def test_delegate_waits_for_a_task_longer_than_a_call_may_take(server: PeerServer):
    """A one-second task through a client whose calls may take a quarter of that."""
    async with PeerClient(server.address, "patient", heartbeat=False, timeout=0.25) as client:
        task = await client.delegate_task("sleep", {"seconds": 1.0})
    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    assert dict(task.result) == {"slept": 1.0}


async def test_a_long_delegate_does_not_hold_up_other_calls_in_strict_mode(
    server: PeerServer, gate: Gate
):
    """Strict mode keeps one call in flight. DelegateTask is answered within the call's
    timeout, and the watch that follows leaves the flight once admitted."""
    client = PeerClient(server.address, "busy", heartbeat=False, timeout=0.3)
    await client.connect()
    waiting = asyncio.ensure_future(client.delegate_task("held"))
    await gate.started.wait()

    pong = await asyncio.wait_for(client.ping(b"meanwhile"), 1.0)
    assert pong.payload == b"meanwhile"
    assert not waiting.done()

    gate.release.set()
    task = await asyncio.wait_for(waiting, 5)
    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    await client.close()


async def test_delegate_without_waiting_then_get_list_and_cancel(client: PeerClient, gate: Gate):
    task = await client.delegate_task("held", wait=False, timeout=60)
    await gate.started.wait()

    assert (await client.get_task(task.task_id)).state == peer_pb2.TASK_STATE_WORKING
    listed = await client.list_tasks(state=peer_pb2.TASK_STATE_WORKING)
    assert [t.task_id for t in listed.tasks] == [task.task_id]
    canceled = await client.cancel_task(task.task_id)

    assert canceled.state == peer_pb2.TASK_STATE_CANCELED
    assert canceled.timeout.ToSeconds() == 60
    with pytest.raises(TaskNotCancelable) as caught:
        await client.cancel_task(task.task_id)
    assert caught.value.state == "CANCELED"


async def test_watch_task_follows_the_task_to_its_end(client: PeerClient, gate: Gate):
    task = await client.delegate_task("held", wait=False)
    await gate.started.wait()
    states = []
    async for update in client.watch_task(task.task_id):
        states.append(update.task.state)
        if update.task.state == peer_pb2.TASK_STATE_WORKING:
            gate.release.set()
    assert states == [peer_pb2.TASK_STATE_WORKING, peer_pb2.TASK_STATE_COMPLETED]


async def test_task_errors_are_typed(client: PeerClient, gate: Gate):
    with pytest.raises(TaskNotFound):
        await client.get_task("0" * 32)
    with pytest.raises(TaskNotFound):
        async for _ in client.watch_task("0" * 32):
            pass

    await client.delegate_task("held", wait=False)
    with pytest.raises(TaskLimitReached) as caught:
        await client.delegate_task("held", wait=False)

    assert caught.value.retry_after == 1.0
    assert (caught.value.scope, caught.value.limit) == ("session", 1)
    assert "1 tasks are already running for this session" in caught.value.message
    gate.release.set()


class BreakFirstWatch(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Breaks the first WatchTask stream after its first message, as a lost connection would."""

    def __init__(self) -> None:
        self.broken = 0

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_stream is None:
            return handler
        inner = handler.unary_stream

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async for message in inner(request, context):
                yield message
                if not self.broken:
                    self.broken += 1
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (test)")

        return grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def test_waiting_watches_again_when_the_stream_breaks(
    server_config: ServerConfig, task_registry: TaskRegistry, gate: Gate
):
    breaker = BreakFirstWatch()
    server = PeerServer(server_config, tasks=task_registry, outer_interceptors=[breaker])
    await server.start()
    try:
        async with PeerClient(
            server.address, "p", heartbeat=False, backoff=0.01, timeout=0.3
        ) as client:
            waiting = asyncio.ensure_future(client.delegate_task("held", timeout=30))
            await gate.started.wait()
            await eventually(lambda: breaker.broken == 1)
            gate.release.set()
            task = await asyncio.wait_for(waiting, 5)
        assert task.state == peer_pb2.TASK_STATE_COMPLETED
    finally:
        await server.stop(grace=0)


class StallWatches(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Holds every WatchTask before it reaches admission, as an overloaded server might."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method.endswith("/WatchTask"):
            await asyncio.sleep(5)
        return await continuation(details)


async def test_a_watch_the_server_does_not_take_gives_up_and_frees_the_flight(
    server_config: ServerConfig, task_registry: TaskRegistry
):
    server = PeerServer(server_config, tasks=task_registry, outer_interceptors=[StallWatches()])
    await server.start()
    try:
        async with PeerClient(server.address, "p", heartbeat=False, timeout=0.3) as client:
            task = await client.delegate_task("echo")
            with pytest.raises(RemoteError) as caught:
                async for _ in client.watch_task(task.task_id):
                    pass
            assert caught.value.code == "DEADLINE_EXCEEDED"

            pong = await asyncio.wait_for(client.ping(b"still here"), 2)
            assert pong.payload == b"still here"
    finally:
        await server.stop(grace=0)
