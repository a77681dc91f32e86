"""The Redis task scripts are idempotent: redis-py sends a command again after a timeout
even when the first send ran, and the second send must find its own effect, not fail."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from peer_grpc.stores.redis import scripts
from tests.conftest import shared_redis

KEEP_MS = 60_000


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(shared_redis().url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def task_key() -> str:
    return f"test-scripts:{uuid.uuid4().hex}:task"


async def test_a_create_sent_twice_creates_once(client: redis.asyncio.Redis, task_key: str):
    create = client.register_script(scripts.TASK_CREATE)
    snapshot = '{"task_id": "t1", "state": 1}'

    assert await create(keys=[task_key], args=[snapshot, KEEP_MS]) == 1
    assert await create(keys=[task_key], args=[snapshot, KEEP_MS]) == 1  # the resend

    assert await client.xlen(task_key) == 1


async def test_another_task_with_a_taken_id_still_collides(
    client: redis.asyncio.Redis, task_key: str
):
    create = client.register_script(scripts.TASK_CREATE)
    assert await create(keys=[task_key], args=['{"task_id": "t1", "n": 1}', KEEP_MS]) == 1
    assert await create(keys=[task_key], args=['{"task_id": "t1", "n": 2}', KEEP_MS]) == 0
    assert await client.xlen(task_key) == 1


async def test_an_append_sent_twice_appends_once(client: redis.asyncio.Redis, task_key: str):
    create = client.register_script(scripts.TASK_CREATE)
    append = client.register_script(scripts.TASK_APPEND)
    await create(keys=[task_key], args=['{"v": 1}', KEEP_MS])

    assert await append(keys=[task_key], args=[1, '{"v": 2}', KEEP_MS]) == b"OK"
    assert await append(keys=[task_key], args=[1, '{"v": 2}', KEEP_MS]) == b"OK"  # the resend

    assert await client.xlen(task_key) == 2


async def test_a_different_change_after_the_same_version_still_conflicts(
    client: redis.asyncio.Redis, task_key: str
):
    create = client.register_script(scripts.TASK_CREATE)
    append = client.register_script(scripts.TASK_APPEND)
    await create(keys=[task_key], args=['{"v": 1}', KEEP_MS])
    assert await append(keys=[task_key], args=[1, '{"v": 2, "by": "a"}', KEEP_MS]) == b"OK"
    assert await append(keys=[task_key], args=[1, '{"v": 2, "by": "b"}', KEEP_MS]) == b"CONFLICT"
    assert await client.xlen(task_key) == 2
