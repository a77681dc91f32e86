"""Stores: the :class:`SessionStore` and :class:`TaskStore` protocols and their engines.

``stores.memory`` keeps everything in one process (the default); ``stores.redis``
shares sessions and tasks between replicas. Both pass the same conformance suites.
"""

from peer_grpc.stores.memory import MemorySessionStore, MemoryTaskStore
from peer_grpc.stores.protocols import SessionStore, SweepResult, TaskStore
from peer_grpc.stores.redis import RedisOptions, RedisSessionStore, RedisTaskStore

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
