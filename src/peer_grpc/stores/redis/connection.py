"""The Redis connection the Redis stores share, and what its failures mean to callers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from peer_grpc.core.errors import StoreUnavailable

__all__ = [
    "RedisOptions",
    "connect",
    "store_unavailable",
    "translate_unavailable",
    "unavailable_errors",
]

#: Failures after which Redis may answer again: the call is worth sending again.
#: A replica promoted by a failover answers READONLY until clients follow it.
unavailable_errors: tuple[type[redis.exceptions.RedisError], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (LOADING)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """How the stores talk to Redis."""

    #: Seconds a command may take before it counts as failed (and the call gets UNAVAILABLE).
    command_timeout: float = 1.0
    #: Seconds to open a connection.
    connect_timeout: float = 1.0
    #: Times redis-py sends a command again after a connection error or timeout, even
    #: when the first send ran. Safe for every script here: each recognises its own
    #: earlier effect (an admission id, a task's own snapshot) and answers as before.
    retries: int = 2
    #: The first and the longest wait between those tries, and between reconnects.
    backoff_base: float = 0.05
    backoff_cap: float = 0.5
    #: Seconds a caller is told to wait before trying again while Redis is away.
    retry_after: float = 1.0


def connect(url: str, options: RedisOptions | None = None) -> redis.asyncio.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) with bounded
    timeouts and retries; it connects lazily and reconnects by itself."""
    options = options or RedisOptions()
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=options.command_timeout,
        socket_connect_timeout=options.connect_timeout,
        retry=Retry(
            ExponentialWithJitterBackoff(cap=options.backoff_cap, base=options.backoff_base),
            options.retries,
        ),
        retry_on_error=list(unavailable_errors),
        health_check_interval=0,
    )


def store_unavailable(what: str, error: Exception, retry_after: float) -> StoreUnavailable:
    """The error a caller gets when Redis failed with ``error`` while the server was ``what``."""
    return StoreUnavailable(
        f"the store (Redis) did not answer while {what} ({type(error).__name__}); "
        "try again shortly",
        retry_after,
    )


@contextlib.contextmanager
def translate_unavailable(what: str, retry_after: float) -> Iterator[None]:
    """Raise :class:`StoreUnavailable` for a Redis that cannot answer ``what``."""
    try:
        yield
    except unavailable_errors as error:
        raise store_unavailable(what, error, retry_after) from error
