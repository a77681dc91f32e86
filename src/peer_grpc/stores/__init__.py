"""Stores: the :class:`SessionStore` and :class:`TaskStore` interfaces and their implementations."""

from peer_grpc.stores.base import SessionStore, SweepResult, TaskStore
from peer_grpc.stores.memory import MemorySessionStore
from peer_grpc.stores.memory_tasks import MemoryTaskStore
from peer_grpc.stores.redis_connection import RedisOptions
from peer_grpc.stores.redis_sessions import RedisSessionStore
from peer_grpc.stores.redis_tasks import RedisTaskStore

__all__ = [
    "MemorySessionStore",
    "MemoryTaskStore",
    "RedisOptions",
    "RedisSessionStore",
    "RedisTaskStore",
    "SessionStore",
    "SweepResult",
    "TaskStore",
]
