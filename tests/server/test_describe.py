"""Describe: what a peer is and can do, asked like any other call on a session.

A caller learns the server's id and version, the limits it must respect, and every
task type with the JSON Schemas of its payload and result, before it delegates.
"""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.protobuf import json_format
from pydantic import BaseModel

from peer_grpc import PeerClient, PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc._version import __version__
from peer_grpc.tasks.registry import Retry, TaskRegistry, default_registry
from tests.conftest import open_session, session_metadata
from tests.rpc_details import details_of


class Greeting(BaseModel):
    name: str


class Greeted(BaseModel):
    text: str


@pytest.fixture
def task_registry() -> TaskRegistry:
    """The built-in handlers, a typed one and a retryable one."""
    registry = default_registry()

    @registry.task("greet", input=Greeting, output=Greeted, description="Says hello.")
    async def greet(request: Greeting) -> Greeted:
        return Greeted(text=f"hello, {request.name}")

    @registry.task("flaky", retry=Retry(max_attempts=4))
    async def flaky(payload: dict[str, object]) -> dict[str, object]:
        return payload

    return registry


async def test_describe_tells_the_server_its_limits_and_its_task_types(
    server: PeerServer, server_config: ServerConfig
):
    async with PeerClient(server.address, "curious") as client:
        described = await client.describe()

    assert described.server_version == __version__
    assert list(described.supported_protocol_versions) == ["1.0"]
    assert described.limits.max_request_bytes == server_config.max_request_bytes
    assert described.limits.max_task_timeout.ToSeconds() == int(server_config.max_task_timeout)
    assert described.limits.max_tasks_per_session == server_config.max_tasks_per_session
    types = {task_type.name: task_type for task_type in described.task_types}
    assert list(types) == sorted(types)
    greet = types["greet"]
    assert greet.description == "Says hello."
    assert json_format.MessageToDict(greet.input_schema) == Greeting.model_json_schema()
    assert json_format.MessageToDict(greet.output_schema) == Greeted.model_json_schema()
    assert (greet.retryable, greet.max_attempts) == (False, 1)
    assert (types["flaky"].retryable, types["flaky"].max_attempts) == (True, 4)
    assert json_format.MessageToDict(types["echo"].input_schema) == {"type": "object"}


async def test_describe_is_sequence_checked_like_every_call_on_a_session(
    stub: peer_pb2_grpc.PeerServiceStub,
):
    session = await open_session(stub)
    await stub.Describe(
        peer_pb2.DescribeRequest(), metadata=session_metadata(session.session_id, 1)
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Describe(
            peer_pb2.DescribeRequest(), metadata=session_metadata(session.session_id, 3)
        )

    assert details_of(refused.value).reason == "SEQUENCE_ERROR"


async def test_describe_needs_a_session_unless_the_server_allows_sessionless_calls(
    server_config: ServerConfig, stub: peer_pb2_grpc.PeerServiceStub
):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Describe(peer_pb2.DescribeRequest())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

    config = ServerConfig(host="127.0.0.1", port=0, allow_sessionless=True)
    lenient = PeerServer(config)
    async with lenient, grpc.aio.insecure_channel(lenient.address) as channel:
        described = await peer_pb2_grpc.PeerServiceStub(channel).Describe(
            peer_pb2.DescribeRequest()
        )
    assert "echo" in [task_type.name for task_type in described.task_types]
