"""Token buckets, the handshake limits' engine: the burst, then the rate, one bucket a key.

One suite for both implementations: in this process (:class:`RateLimiter`) and in Redis
(:class:`RedisTokenBuckets`, which every replica shares).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from peer_grpc import HandshakeRateLimited
from peer_grpc.core.identity import Caller
from peer_grpc.core.limits import HandshakeThrottle, RateLimiter, TokenBuckets
from peer_grpc.stores.redis.keys import RedisKeys
from peer_grpc.stores.redis.rate_limits import RedisTokenBuckets
from tests.conftest import shared_redis

BucketsFactory = Callable[[float, int], TokenBuckets]


@pytest.fixture(params=["memory", "redis"])
async def buckets(request: pytest.FixtureRequest) -> AsyncIterator[BucketsFactory]:
    """Makes token buckets (rate, burst) of one implementation, fresh each time."""
    if request.param == "memory":
        yield RateLimiter
        return
    client = redis.asyncio.Redis.from_url(shared_redis().url)
    keys = RedisKeys(f"buckets-{uuid.uuid4().hex[:12]}")
    made = iter(range(1_000))
    try:
        yield lambda rate, burst: RedisTokenBuckets(client, keys, f"s{next(made)}", rate, burst)
    finally:
        await client.aclose()


async def test_the_burst_then_the_rate(buckets: BucketsFactory) -> None:
    limiter = buckets(2.0, 3)

    assert [await limiter.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.take("a", 100.0) == pytest.approx(0.5)
    assert await limiter.take("a", 100.25) == pytest.approx(0.25)  # half a token came back
    assert await limiter.take("a", 100.5) == 0.0
    assert await limiter.take("b", 100.5) == 0.0  # keys do not share buckets


async def test_a_rate_of_zero_turns_the_limit_off(buckets: BucketsFactory) -> None:
    limiter = buckets(0.0, 1)
    assert [await limiter.take("a", 0.0) for _ in range(100)] == [0.0] * 100


async def test_the_throttle_counts_clients_and_peer_ids_in_buckets_of_their_own(
    buckets: BucketsFactory,
) -> None:
    throttle = HandshakeThrottle(per_client=buckets(1.0, 2), per_peer=buckets(1.0, 1))
    caller = Caller(identity="", address="ipv4:10.0.0.1")
    same_certificate_elsewhere = Caller(identity="svc", address="ipv4:10.0.0.9")

    await throttle.check_peer("a", 0.0)
    with pytest.raises(HandshakeRateLimited) as by_peer:
        await throttle.check_peer("a", 0.0)
    await throttle.check_client(caller, 0.0)
    await throttle.check_client(caller, 0.0)
    with pytest.raises(HandshakeRateLimited) as by_client:
        await throttle.check_client(caller, 0.0)

    assert (by_peer.value.scope, by_client.value.scope) == ("peer", "client")
    assert by_client.value.retry_after == pytest.approx(1.0)
    # Another address, or a certificate identity wherever it connects from, counts apart.
    await throttle.check_client(Caller(identity="", address="ipv4:10.0.0.2"), 0.0)
    await throttle.check_client(same_certificate_elsewhere, 0.0)
    await throttle.check_peer("b", 0.0)


def test_the_memory_limiter_forgets_the_least_recently_seen_keys_beyond_its_bound() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=100)

    for i in range(10_000):
        limiter.acquire(f"client-{i}", 0.0)

    assert len(limiter) == 100


async def test_a_redis_bucket_goes_away_once_it_would_be_full_again() -> None:
    client = redis.asyncio.Redis.from_url(shared_redis().url)
    keys = RedisKeys(f"buckets-{uuid.uuid4().hex[:12]}")
    try:
        limiter = RedisTokenBuckets(client, keys, "peer", rate=10.0, burst=2)
        await limiter.take("a", 0.0)
        ttl_ms = await client.pttl(keys.token_bucket("peer", "a"))
    finally:
        await client.aclose()
    # One token short refills in 0.1 s; the key lives that long plus a second.
    assert 1_000 < ttl_ms <= 1_100
