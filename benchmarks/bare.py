"""The ceilings: PeerService served by bare grpcio, no interceptors, no sessions.

``python -m benchmarks.bare aio|sync PORT`` serves the same proto and answers
Handshake, Ping and DelegateTask with responses shaped like the real server's
(a session id, timestamps, a completed echo task), so that the only difference
the benchmark measures is peer-grpc's own work. Prints ``ready`` once serving.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc

#: Threads of the synchronous server: enough for the 64 sessions' calls to queue in
#: grpc's completion queue rather than wait for a thread.
SYNC_THREADS = 16


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def handshake(request: peer_pb2.HandshakeRequest) -> peer_pb2.HandshakeResponse:
    return peer_pb2.HandshakeResponse(
        session_id=secrets.token_hex(16),
        protocol_version=request.protocol_versions[0] if request.protocol_versions else "1.0",
        next_sequence=1,
        heartbeat_interval=Duration(seconds=20),
        idle_timeout=Duration(seconds=60),
        server_peer_id="bare",
        expires_at=_now(),
        session_token=secrets.token_urlsafe(32),
        sequence_mode=peer_pb2.SEQUENCE_MODE_STRICT,
    )


def ping(request: peer_pb2.PingRequest) -> peer_pb2.PingResponse:
    received = _now()
    return peer_pb2.PingResponse(
        payload=request.payload, server_received_at=received, server_sent_at=_now()
    )


def delegate(request: peer_pb2.DelegateTaskRequest) -> peer_pb2.DelegateTaskResponse:
    now = _now()
    task = peer_pb2.Task(
        task_id=secrets.token_hex(16),
        task_type=request.task_type,
        state=peer_pb2.TASK_STATE_COMPLETED,
        result=request.payload,
        created_at=now,
        updated_at=now,
        owner_peer_id="bench",
        timeout=Duration(seconds=30),
    )
    return peer_pb2.DelegateTaskResponse(task=task)


class AsyncBareServicer(peer_pb2_grpc.PeerServiceServicer):
    """The grpc.aio ceiling."""

    async def Handshake(self, request: Any, context: Any) -> Any:
        return handshake(request)

    async def Ping(self, request: Any, context: Any) -> Any:
        return ping(request)

    async def DelegateTask(self, request: Any, context: Any) -> Any:
        return delegate(request)


class SyncBareServicer(peer_pb2_grpc.PeerServiceServicer):
    """The synchronous (thread pool) ceiling."""

    def Handshake(self, request: Any, context: Any) -> Any:
        return handshake(request)

    def Ping(self, request: Any, context: Any) -> Any:
        return ping(request)

    def DelegateTask(self, request: Any, context: Any) -> Any:
        return delegate(request)


async def serve_aio(port: int) -> None:
    server = grpc.aio.server()
    peer_pb2_grpc.add_PeerServiceServicer_to_server(AsyncBareServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def serve_sync(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SYNC_THREADS))
    peer_pb2_grpc.add_PeerServiceServicer_to_server(SyncBareServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "aio":
        asyncio.run(serve_aio(port))
    elif kind == "sync":
        serve_sync(port)
    else:
        raise SystemExit(f"usage: python -m benchmarks.bare aio|sync PORT (got {kind!r})")


if __name__ == "__main__":
    main(sys.argv[1:])
