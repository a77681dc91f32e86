"""The Python client: handshakes, numbers its calls, resends safely and raises typed errors."""

from peer_grpc.client.peer_client import PeerClient, SessionTicket
from peer_grpc.client.reachability import ServerUnreachable

__all__ = ["PeerClient", "ServerUnreachable", "SessionTicket"]
