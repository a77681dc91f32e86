"""A resend reaching another replica gets an answer even when the replica that admitted
the original call died before recording how it ended: NOT_RUN, so that the caller sends
it again and that send runs it; while that replica lives, the resend waits for it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from peer_grpc import SessionManager
from peer_grpc.core.retry import NOT_RUN, CallKey
from peer_grpc.stores import RedisSessionStore
from tests.conftest import redis_session_store
from tests.sessions.test_session_manager import handshaken

KEY = CallKey("DelegateTask", os.urandom(16))


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[RedisSessionStore, RedisSessionStore]]:
    prefix = f"liveness-{uuid.uuid4().hex[:12]}"
    # Replica A outlives a missed renewal for half a second only: the test need not wait.
    a = redis_session_store(key_prefix=prefix, replica_ttl=0.5)
    b = redis_session_store(key_prefix=prefix)
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


async def test_a_resend_whose_replica_died_is_told_to_send_it_again(replicas):
    a, b = replicas
    on_a, on_b = SessionManager(a), SessionManager(b)
    session = await handshaken(on_a)
    original = await on_a.admit(session.session_id, 1, KEY)
    assert original.replay is None  # A runs it... and dies before recording its outcome

    await asyncio.sleep(0.6)  # A's liveness lapses: nobody renewed it
    resend = await on_b.admit(session.session_id, 1, KEY)
    assert resend.replay is not None
    assert await asyncio.wait_for(resend.replay, 3) == NOT_RUN

    again = await on_b.admit(session.session_id, 1, KEY)
    assert again.replay is None  # this send runs it, on B


async def test_a_resend_waits_while_the_original_replica_lives(replicas):
    a, b = replicas
    on_a, on_b = SessionManager(a), SessionManager(b)
    session = await handshaken(on_a)
    await on_a.admit(session.session_id, 1, KEY)

    resend = await on_b.admit(session.session_id, 1, KEY)
    assert resend.replay is not None
    waiting = asyncio.ensure_future(resend.replay)
    for _ in range(8):  # A's store watch renews its liveness while the call runs
        await asyncio.sleep(0.15)
        await a.check()
    assert not waiting.done()
    waiting.cancel()
