"""The in-memory stores: the default, for one server process."""

from peer_grpc.stores.memory.sessions import MemorySessionStore
from peer_grpc.stores.memory.tasks import MemoryTaskStore

__all__ = ["MemorySessionStore", "MemoryTaskStore"]
