"""Operating the server: sessionless mode, health, reflection, binding and concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from peer_grpc import PeerClient, PeerServer, ServerBindError, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import Gate, open_session, session_metadata
from tests.rpc_details import details_of

BUF = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "buf"


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return replace(server_config, allow_sessionless=True)


async def test_sessionless_mode_lets_ping_and_status_through_without_a_session(
    stub: peer_pb2_grpc.PeerServiceStub,
):
    assert (await stub.Ping(peer_pb2.PingRequest(payload=b"old"))).payload == b"old"
    status = await stub.Status(peer_pb2.StatusRequest())
    assert not status.HasField("session")


@pytest.mark.parametrize("method", ["Heartbeat", "DelegateTask", "Terminate"])
async def test_sessionless_mode_still_requires_a_session_for_other_calls(
    channel: grpc.aio.Channel, method: str
):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/peer.v1.PeerService/{method}")(b"")
    assert details_of(caught.value).reason == "SESSION_REQUIRED"


async def test_sessionless_mode_still_checks_a_session_that_is_sent(
    stub: peer_pb2_grpc.PeerServiceStub,
):
    session_id = (await open_session(stub)).session_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 7))
    assert details_of(caught.value).reason == "SEQUENCE_ERROR"


@pytest.mark.parametrize("service", ["", "peer.v1.PeerService"])
async def test_health_service_reports_serving(channel: grpc.aio.Channel, service: str):
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


EXPOSED_SERVICES = {
    "peer.v1.PeerService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def _reflect(
    channel: grpc.aio.Channel, version: str, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    # v1 and v1alpha share their messages, field for field; only the path differs.
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return [response async for response in call(iter(requests))]


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_in_both_versions_lists_and_describes_every_service(
    channel: grpc.aio.Channel, version: str
):
    (listed,) = await _reflect(
        channel, version, reflection_pb2.ServerReflectionRequest(list_services="")
    )
    assert {s.name for s in listed.list_services_response.service} == EXPOSED_SERVICES

    described = await _reflect(
        channel,
        version,
        *(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)
            for name in sorted(EXPOSED_SERVICES)
        ),
    )
    for name, response in zip(sorted(EXPOSED_SERVICES), described, strict=True):
        assert response.WhichOneof("message_response") == "file_descriptor_response", name
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]
        package, _, service = name.rpartition(".")
        assert any(f.package == package and service in {s.name for s in f.service} for f in files)


def _buf_curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(not BUF.exists() and not shutil.which("buf"), reason="run `make node` first")
@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_buf_curl_reflects_with_either_protocol(server: PeerServer, protocol: str):
    listed = await asyncio.to_thread(
        _buf_curl, "--reflect-protocol", protocol, "--list-methods", f"http://{server.address}"
    )

    assert listed.returncode == 0, listed.stderr
    assert "peer.v1.PeerService/Handshake" in listed.stdout.split()


@pytest.mark.skipif(not BUF.exists() and not shutil.which("buf"), reason="run `make node` first")
async def test_buf_curl_lists_methods_and_runs_a_handshake_through_reflection(
    server: PeerServer,
):
    url = f"http://{server.address}"
    listed = await asyncio.to_thread(_buf_curl, "--list-methods", url)
    assert listed.returncode == 0, listed.stderr
    assert "peer.v1.PeerService/Handshake" in listed.stdout.split()

    body = json.dumps({"peer_id": "curl", "protocol_versions": ["1.0"]})
    shook = await asyncio.to_thread(_buf_curl, "-d", body, f"{url}/peer.v1.PeerService/Handshake")
    assert shook.returncode == 0, shook.stderr
    session_id = json.loads(shook.stdout)["sessionId"]

    pinged = await asyncio.to_thread(
        _buf_curl,
        "-H",
        f"peer-session-id: {session_id}",
        "-H",
        "peer-sequence: 1",
        "-d",
        "{}",
        f"{url}/peer.v1.PeerService/Status",
    )
    assert pinged.returncode == 0, pinged.stderr
    assert json.loads(pinged.stdout)["session"]["expectedSequence"] == "2"


@pytest.mark.skipif(not BUF.exists() and not shutil.which("buf"), reason="run `make node` first")
async def test_buf_curl_delegates_a_task_with_a_json_payload_and_watches_it(server: PeerServer):
    """The README's walk-through: plain JSON in, a server stream of JSON out."""
    url = f"http://{server.address}/peer.v1.PeerService"
    body = json.dumps({"peer_id": "curl", "protocol_versions": ["1.0"]})
    shook = await asyncio.to_thread(_buf_curl, "-d", body, f"{url}/Handshake")
    session = ("-H", f"peer-session-id: {json.loads(shook.stdout)['sessionId']}")

    delegate = json.dumps(
        {"task_type": "sleep", "payload": {"seconds": 0.2}, "return_immediately": True}
    )
    delegated = await asyncio.to_thread(
        _buf_curl, *session, "-H", "peer-sequence: 1", "-d", delegate, f"{url}/DelegateTask"
    )
    assert delegated.returncode == 0, delegated.stderr
    task_id = json.loads(delegated.stdout)["task"]["taskId"]
    watched = await asyncio.to_thread(
        _buf_curl,
        *session,
        "-H",
        "peer-sequence: 2",
        "-d",
        json.dumps({"task_id": task_id}),
        f"{url}/WatchTask",
    )

    assert watched.returncode == 0, watched.stderr
    decoder = json.JSONDecoder()
    text, updates = watched.stdout.strip(), []
    while text:
        update, end = decoder.raw_decode(text)
        updates.append(update)
        text = text[end:].strip()
    assert updates[-1]["task"]["state"] == "TASK_STATE_COMPLETED"
    assert updates[-1]["task"]["result"] == {"slept": 0.2}


async def test_a_taken_port_fails_to_bind_instead_of_sharing_it(server: PeerServer):
    second = PeerServer(ServerConfig(host="127.0.0.1", port=server.port))
    with pytest.raises(ServerBindError, match=str(server.port)):
        await second.start()


# 12,800 calls: seconds here, minutes on a loaded shared machine.
@pytest.mark.timeout(300)
async def test_64_sessions_making_200_calls_each_concurrently(server: PeerServer):
    sessions, calls = 64, 200

    async def peer(index: int) -> str:
        async with PeerClient(server.address, f"peer-{index}", heartbeat=False) as client:
            for _ in range(calls):
                await client.ping()
            session_id = client.session_id
            assert session_id is not None
            await client.close(terminate=False)
            return session_id

    session_ids = await asyncio.gather(*(peer(i) for i in range(sessions)))

    for session_id in session_ids:
        session = await server.manager.get_session(session_id)
        assert session is not None
        assert session.expected_sequence == calls + 1
    stats = await server.manager.get_session_stats()
    assert stats.sequence_errors_total == 0
    assert stats.established == sessions


async def test_logs_never_carry_a_full_session_id_or_a_token(
    server: PeerServer, stub: peer_pb2_grpc.PeerServiceStub, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    async with PeerClient(server.address, "quiet", heartbeat=False) as client:
        await client.ping()
        first_id, first_ticket = client.session_id, client.ticket
        with pytest.raises(grpc.aio.AioRpcError):  # a replay, refused and perhaps logged
            await stub.Ping(
                peer_pb2.PingRequest(payload=b"x"), metadata=session_metadata(str(first_id), 1)
            )
        await client.handshake()  # replaces the first session, which the server logs
        await client.delegate_task("echo", {"said": "nothing"})
        second_id, second_ticket = client.session_id, client.ticket
    await server.sweep()

    assert first_ticket is not None
    assert second_ticket is not None
    assert caplog.records  # something was logged, so the check below means something
    for secret in (first_id, second_id, first_ticket.session_token, second_ticket.session_token):
        assert secret
        assert secret not in caplog.text


async def test_a_stopping_server_refuses_new_calls_unavailable_and_finishes_those_in_flight(
    server: PeerServer, gate: Gate
):
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session_id = (await open_session(stub, "in-flight")).session_id
        held = asyncio.ensure_future(
            stub.DelegateTask(
                peer_pb2.DelegateTaskRequest(task_type="held"),
                metadata=session_metadata(session_id, 1),
            )
        )
        await gate.started.wait()
        stopping = asyncio.create_task(server.stop(grace=5))
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        async for answer in watch:
            if answer.status != SERVING:
                break  # the server has begun to stop
        watch.cancel()

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await open_session(stub, "latecomer")
        gate.release.set()
        finished = await held
        await stopping

    details = details_of(refused.value)
    assert details.code is grpc.StatusCode.UNAVAILABLE
    assert details.reason == "SHUTTING_DOWN"
    assert finished.task.state == peer_pb2.TASK_STATE_COMPLETED


SERVING = health_pb2.HealthCheckResponse.SERVING
