"""Session stores: the :class:`SessionStore` interface and its implementations."""

from peer_grpc.stores.base import SessionStore, SweepResult
from peer_grpc.stores.memory import MemorySessionStore

__all__ = ["MemorySessionStore", "SessionStore", "SweepResult"]
