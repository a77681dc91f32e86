"""The stores a server uses: the ones it is given, else the ones its config names."""

from __future__ import annotations

from peer_grpc.core.limits import RateLimiter, TokenBuckets
from peer_grpc.server.config import ServerConfig
from peer_grpc.stores.memory import MemorySessionStore, MemoryTaskStore
from peer_grpc.stores.protocols import SessionStore, TaskStore
from peer_grpc.stores.redis import RedisOptions, RedisSessionStore, RedisTaskStore
from peer_grpc.stores.redis.connection import connect
from peer_grpc.stores.redis.sessions import REPLICA_TTL

__all__ = ["open_stores", "open_token_buckets"]


def open_stores(
    config: ServerConfig, store: SessionStore | None, task_store: TaskStore | None
) -> tuple[SessionStore, TaskStore]:
    """The stores given, and for those not given the ones ``config.store`` names.

    Redis stores built here share one client (one connection pool).
    """
    if not config.uses_redis:
        # `is None`, not `or`: an empty memory store has a length of 0 and is falsy.
        if store is None:
            store = MemorySessionStore(
                retry_cache_size=config.retry_cache_size,
                ended_retention=config.ended_session_retention,
                max_ended=config.max_ended_sessions,
            )
        if task_store is None:
            task_store = MemoryTaskStore(retention=config.task_retention)
        return store, task_store
    options = RedisOptions(command_timeout=config.redis_timeout)
    client = connect(config.store, options) if store is None or task_store is None else None
    if store is None:
        assert client is not None
        store = RedisSessionStore(
            client,
            key_prefix=config.redis_key_prefix,
            retry_cache_size=config.retry_cache_size,
            retry_after=options.retry_after,
            ended_retention=config.ended_session_retention,
            # The store watch renews liveness at each check: outlive a few of them.
            replica_ttl=max(REPLICA_TTL, 3 * config.store_check_interval),
            wait_replicas=config.redis_wait_replicas,
            # Within the command's own timeout, so that WAIT answers before the socket
            # gives up on it.
            wait_timeout=config.redis_timeout / 2,
        )
    if task_store is None:
        assert client is not None
        task_store = RedisTaskStore(
            client,
            key_prefix=config.redis_key_prefix,
            retention=config.task_retention,
            retry_after=options.retry_after,
            watch_poll=min(0.5, options.command_timeout / 2),
        )
    return store, task_store


def open_token_buckets(store: SessionStore, scope: str, rate: float, burst: int) -> TokenBuckets:
    """Rate-limit buckets where ``store`` keeps sessions: in Redis, so that every replica
    counts against one limit, or in this process."""
    if isinstance(store, RedisSessionStore):
        return store.token_buckets(scope, rate, burst)
    return RateLimiter(rate, burst)
