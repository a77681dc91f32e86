"""The contract's service as its generated descriptors name it, for both ends."""

from __future__ import annotations

from peer_grpc._proto.peer.v1 import peer_pb2

__all__ = ["SERVICE_DESCRIPTOR", "SERVICE_NAME"]

#: ``peer.v1.PeerService`` as the generated code describes it.
SERVICE_DESCRIPTOR = peer_pb2.DESCRIPTOR.services_by_name["PeerService"]
#: The fully qualified service name, ``peer.v1.PeerService``.
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name
