"""Handshake rate limits: token buckets per claimed peer id and per client. No gRPC here."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from peer_grpc.core.errors import HandshakeRateLimited
from peer_grpc.core.identity import Caller

__all__ = [
    "DEFAULT_CLIENT_HANDSHAKE_BURST",
    "DEFAULT_CLIENT_HANDSHAKE_RATE",
    "DEFAULT_PEER_HANDSHAKE_BURST",
    "DEFAULT_PEER_HANDSHAKE_RATE",
    "HandshakeThrottle",
    "RateLimiter",
    "TokenBuckets",
]

#: Handshakes per second one peer id may make, on average, and in a burst.
DEFAULT_PEER_HANDSHAKE_RATE = 1.0
DEFAULT_PEER_HANDSHAKE_BURST = 10
#: Handshakes per second one client (certificate identity, else address) may make.
DEFAULT_CLIENT_HANDSHAKE_RATE = 20.0
DEFAULT_CLIENT_HANDSHAKE_BURST = 200
#: Keys a limiter tracks at most; the least recently seen are forgotten first.
DEFAULT_MAX_KEYS = 100_000


class TokenBuckets(Protocol):
    """Token buckets by key: in this process (:class:`RateLimiter`), or shared by every
    replica (the Redis store's), so that a limit holds however calls are spread."""

    async def take(self, key: str, now: float) -> float:
        """Take a token for ``key`` at ``now``: 0.0 if taken (always, at a rate of 0),
        else the seconds until one will be there (and nothing is taken)."""
        ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets, one per key: ``rate`` tokens a second, holding up to ``burst``.

    Memory is bounded: beyond ``max_keys`` keys the least recently seen bucket is
    forgotten (it comes back full). A ``rate`` of 0 turns the limiter off.
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if rate < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must not be negative; burst and max_keys must be positive")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, key: str, now: float) -> float:
        """Take a token for ``key`` at ``now``: 0.0 if taken, else the seconds until
        one will be there (and nothing is taken)."""
        if not self.rate:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    async def take(self, key: str, now: float) -> float:
        """:meth:`acquire`, as :class:`TokenBuckets` asks."""
        return self.acquire(key, now)

    def __len__(self) -> int:
        """Keys tracked now."""
        return len(self._buckets)


class HandshakeThrottle:
    """Limits how fast handshakes come, per client and per claimed peer id.

    The client is counted first, so that a flood that claims ever new peer ids is
    stopped by its source. A peer id is counted only once the caller is known to
    be allowed to claim it: otherwise anyone could spend a peer's handshakes and
    lock it out.
    """

    def __init__(self, per_client: TokenBuckets, per_peer: TokenBuckets) -> None:
        self.per_client = per_client
        self.per_peer = per_peer

    async def check_client(self, caller: Caller, now: float) -> None:
        """Count a handshake from ``caller``; raise HandshakeRateLimited if too soon."""
        if wait := await self.per_client.take(caller.rate_key, now):
            raise HandshakeRateLimited("client", wait)

    async def check_peer(self, peer_id: str, now: float) -> None:
        """Count a handshake claiming ``peer_id`` (by a caller allowed to claim it)."""
        if wait := await self.per_peer.take(peer_id, now):
            raise HandshakeRateLimited("peer", wait)
