"""The Redis stores: sessions and tasks shared by every server replica, surviving restarts."""

from peer_grpc.stores.redis.connection import RedisOptions
from peer_grpc.stores.redis.sessions import RedisSessionStore
from peer_grpc.stores.redis.tasks import RedisTaskStore

__all__ = ["RedisOptions", "RedisSessionStore", "RedisTaskStore"]
