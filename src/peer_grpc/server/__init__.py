"""The gRPC server: the PeerService behind its interceptors, with health, reflection and TLS."""

from peer_grpc.server.config import ServerConfig, format_address
from peer_grpc.server.peer_server import PeerServer, ServerBindError, serve

__all__ = ["PeerServer", "ServerBindError", "ServerConfig", "format_address", "serve"]
