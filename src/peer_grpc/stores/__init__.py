"""Stores: the :class:`SessionStore` and :class:`TaskStore` interfaces and their implementations."""

from peer_grpc.stores.base import SessionStore, SweepResult, TaskStore
from peer_grpc.stores.memory import MemorySessionStore
from peer_grpc.stores.memory_tasks import MemoryTaskStore

__all__ = ["MemorySessionStore", "MemoryTaskStore", "SessionStore", "SweepResult", "TaskStore"]
