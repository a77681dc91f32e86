"""Task types that say what they take and give: pydantic models for payloads and results.

A payload that does not fit its type's input model is refused before any task exists,
each offending field named by its JSON path; a result that does not fit the output
model fails the task ``INVALID_RESULT``. A type without models takes any JSON object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import struct_pb2
from pydantic import BaseModel, Field

from peer_grpc import PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.errors import InvalidArgument
from peer_grpc.core.task import TaskState
from peer_grpc.stores.protocols import TaskStore
from peer_grpc.tasks.manager import TaskManager
from peer_grpc.tasks.registry import TaskRegistry
from tests.conftest import open_session, session_metadata
from tests.rpc_details import details_of


class Size(BaseModel):
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class ResizeIn(BaseModel):
    image: str
    sizes: list[Size]


class ResizeOut(BaseModel):
    thumbnails: list[str]


def typed_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("resize", input=ResizeIn, output=ResizeOut, description="Thumbnails.")
    async def resize(request: ResizeIn) -> ResizeOut:
        assert isinstance(request, ResizeIn)  # the handler gets the model, not a dict
        return ResizeOut(
            thumbnails=[f"{request.image}@{s.width}x{s.height}" for s in request.sizes]
        )

    @registry.task("sloppy", output=ResizeOut)
    async def sloppy(payload: dict[str, Any]) -> dict[str, Any]:
        return {"thumbnails": "not a list"}

    @registry.task("echo")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return registry


GOOD: dict[str, Any] = {"image": "cat.png", "sizes": [{"width": 64, "height": 48}]}


def test_a_typed_task_type_publishes_the_json_schemas_of_its_models():
    registry = typed_registry()
    resize = registry.type_of("resize")

    assert resize.description == "Thumbnails."
    assert resize.input_schema == ResizeIn.model_json_schema()
    assert resize.output_schema == ResizeOut.model_json_schema()
    assert registry.type_of("echo").input_schema == {"type": "object"}
    assert [task_type.name for task_type in registry.types] == ["echo", "resize", "sloppy"]


@pytest.fixture
async def tasks(task_store: TaskStore) -> AsyncIterator[TaskManager]:
    manager = TaskManager(typed_registry(), task_store)
    try:
        yield manager
    finally:
        await manager.shutdown(0)


async def delegate(tasks: TaskManager, task_type: str, payload: dict[str, Any]) -> Any:
    return await tasks.delegate(
        peer_id="peer", session_id="s" * 32, task_type=task_type, payload=payload
    )


async def test_a_fitting_payload_reaches_the_handler_as_its_model(tasks: TaskManager):
    task = await delegate(tasks, "resize", GOOD)

    assert task.state is TaskState.COMPLETED
    assert task.result == {"thumbnails": ["cat.png@64x48"]}


async def test_a_payload_that_does_not_fit_is_refused_before_any_task_exists(
    tasks: TaskManager,
):
    bad = {"image": "cat.png", "sizes": [{"width": 0, "height": "tall"}]}

    with pytest.raises(InvalidArgument) as refused:
        await delegate(tasks, "resize", bad)

    fields = {violation.field for violation in refused.value.violations}
    assert fields == {"payload.sizes[0].width", "payload.sizes[0].height"}
    assert (await tasks.list_tasks("peer")).tasks == ()


async def test_a_result_that_does_not_fit_fails_the_task(tasks: TaskManager):
    task = await delegate(tasks, "sloppy", {})

    assert task.state is TaskState.FAILED
    assert task.error_code == "INVALID_RESULT"
    assert "result.thumbnails" in task.error_message


async def test_a_type_without_models_takes_any_object(tasks: TaskManager):
    task = await delegate(tasks, "echo", {"anything": [1, "two"]})

    assert task.result == {"anything": [1.0, "two"]}


async def test_delegate_task_refuses_a_bad_payload_without_spending_the_sequence(
    server_config: ServerConfig,
):
    server = PeerServer(server_config, tasks=typed_registry())
    async with server, grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session = await open_session(stub)
        metadata = session_metadata(session.session_id, 1)
        bad = struct_pb2.Struct()
        bad.update({"image": "cat.png", "sizes": [{"width": -1, "height": 2}]})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.DelegateTask(
                peer_pb2.DelegateTaskRequest(task_type="resize", payload=bad), metadata=metadata
            )
        good = struct_pb2.Struct()
        good.update(GOOD)
        answered = await stub.DelegateTask(
            peer_pb2.DelegateTaskRequest(task_type="resize", payload=good), metadata=metadata
        )

    details = details_of(refused.value)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == ["payload.sizes[0].width"]
    assert answered.task.state == peer_pb2.TASK_STATE_COMPLETED  # sequence 1 was still free
    assert list(answered.task.result["thumbnails"]) == ["cat.png@64x48"]
