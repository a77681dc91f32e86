"""The container's health check: ask the peer-grpc server beside it whether it serves.

    python healthcheck.py [ADDRESS [SERVICE]]

ADDRESS defaults to 127.0.0.1:$PEER_GRPC_PORT (50051 when unset). The check calls
the standard gRPC health service (grpc.health.v1.Health/Check) for SERVICE
(``peer.v1.PeerService`` unless given; a ``peer-grpc worker`` reports as
``peer.v1.TaskWorker`` on its --health-address) and exits 0 when the answer is SERVING. It exits 1 on
anything else: NOT_SERVING (the server says so while its Redis store does not
answer, and as it shuts down), no answer within 3 seconds, nothing listening.

With TLS (PEER_GRPC_TLS_CERT set) the check cannot speak gRPC: it has no CA to
verify the server with, nor a client certificate for mutual TLS. It then checks
only that the port accepts connections, and says so; a load balancer's gRPC
health check with the right certificates is the real one.

It needs grpcio and grpcio-health-checking, which peer-grpc depends on.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: The service whose health is asked for: the PeerService, as the server registers it.
SERVICE = "peer.v1.PeerService"
#: Seconds the check waits for an answer (the image's HEALTHCHECK allows 5).
TIMEOUT = 3.0


def default_address() -> str:
    return f"127.0.0.1:{os.environ.get('PEER_GRPC_PORT', '50051')}"


def check_grpc(address: str, service: str = SERVICE) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        except grpc.RpcError as error:
            print(f"unhealthy: {address}: {error.code().name}: {error.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {address}: {service} is {status}")
        return 1
    print(f"{address}: {service} is {status}")
    return 0


def check_port(address: str) -> int:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT):
            pass
    except (OSError, ValueError) as error:
        print(f"unhealthy: {address}: {error}")
        return 1
    print(f"{address}: accepts connections (TLS: the gRPC health service was not asked)")
    return 0


def main(argv: Sequence[str]) -> int:
    address = argv[1] if len(argv) > 1 else default_address()
    service = argv[2] if len(argv) > 2 else SERVICE
    if os.environ.get("PEER_GRPC_TLS_CERT"):
        return check_port(address)
    return check_grpc(address, service)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
