"""Session lifecycle on top of a session store: handshakes, calls, heartbeats, endings."""

from peer_grpc.sessions.manager import SessionManager

__all__ = ["SessionManager"]
