"""Token buckets in Redis: handshake rate limits that hold across every replica."""

from __future__ import annotations

from redis.commands.core import AsyncScript

from peer_grpc.stores.redis import scripts
from peer_grpc.stores.redis.connection import RedisClient, translate_unavailable
from peer_grpc.stores.redis.keys import RedisKeys

__all__ = ["RedisTokenBuckets"]


class RedisTokenBuckets:
    """:class:`~peer_grpc.core.limits.TokenBuckets` in Redis, one bucket a key: each take
    is one atomic script, so replicas sharing the Redis share the limit.

    Args:
        client: the stores' Redis client.
        keys: the key layout (and its prefix).
        scope: what the keys are (``client``, ``peer``), so that scopes never share.
        rate: tokens a second (0: no limit).
        burst: tokens a bucket holds at most.
        retry_after: seconds a caller is told to wait while Redis is away.
    """

    def __init__(
        self,
        client: RedisClient,
        keys: RedisKeys,
        scope: str,
        rate: float,
        burst: int,
        *,
        retry_after: float = 1.0,
    ) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must not be negative and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._keys = keys
        self._scope = scope
        self._retry_after = retry_after
        self._take: AsyncScript = client.register_script(scripts.TAKE_TOKEN)

    async def take(self, key: str, now: float) -> float:
        """Take a token for ``key`` at ``now``: 0.0, or the seconds until one comes.

        Raises:
            StoreUnavailable: Redis did not answer.
        """
        if not self.rate:
            return 0.0
        bucket = self._keys.token_bucket(self._scope, key)
        with translate_unavailable("counting a handshake", self._retry_after):
            wait = await self._take(keys=[bucket], args=[repr(now), repr(self.rate), self.burst])
        return float(wait)
