"""A Redis that lost acknowledged writes must not accept a sequence twice.

Asynchronous replication lets a promoted replica miss the last admissions its primary
acknowledged; a restart from an older file does the same. Either way the primary's
replication id changes, and every session that an earlier primary vouched for is
fenced: its calls are refused SESSION_FENCED (and do not run) until the peer resumes
it with the highest sequence it saw acknowledged, which the record then moves up to.

The losses here are real: a redis-server restarted from a copy of its append-only
file taken before the last calls, and a Sentinel failover to a replica that was
frozen (SIGSTOP) and cut off while the primary acknowledged them.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from peer_grpc import PeerClient, PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import open_session, resume_request, session_metadata
from tests.redis_sentinel import SentinelGroup
from tests.redis_server import RedisServer, wait_until
from tests.rpc_details import details_of, reason_of
from tests.server.test_observability import scrape, value

Stub = peer_pb2_grpc.PeerServiceStub

pytestmark = pytest.mark.timeout(120)


def config_on(url: str) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        store=url,
        redis_key_prefix=f"fence-{uuid.uuid4().hex[:8]}",
        redis_timeout=0.5,
        shutdown_grace=0,
    )


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[PeerServer]:
    async with PeerServer(config_on(redis_server.url)) as server:
        yield server


class Rollback:
    """Takes a copy of a redis-server's append-only file, and later brings the server
    back from it: killed (SIGKILL), its file replaced, started again."""

    #: The append-only file: a directory of parts since Redis 7, one file before.
    NAMES = ("appendonlydir", "appendonly.aof")

    def __init__(self, redis_server: RedisServer, tmp_path: Path) -> None:
        self.redis_server = redis_server
        self.copies = tmp_path / "copies"

    def take_copy(self) -> None:
        self.copies.mkdir()
        for name in self.NAMES:
            found = self.redis_server.directory / name
            if found.is_dir():
                shutil.copytree(found, self.copies / name)
            elif found.exists():
                shutil.copy2(found, self.copies / name)

    def roll_back(self) -> None:
        self.redis_server.kill()
        for copy in self.copies.iterdir():
            live = self.redis_server.directory / copy.name
            if copy.is_dir():
                shutil.rmtree(live)
                shutil.copytree(copy, live)
            else:
                shutil.copy2(copy, live)
        self.redis_server.start()


@pytest.fixture
def rollback(redis_server: RedisServer, tmp_path: Path) -> Rollback:
    return Rollback(redis_server, tmp_path)


async def highest_accepted(server: PeerServer, session_id: str | None) -> int:
    session = await server.manager.get_session(session_id or "")
    assert session is not None
    return session.highest_accepted


async def ping(stub: Stub, session_id: str, sequence: int) -> None:
    await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, sequence))


async def refusal(stub: Stub, session_id: str, sequence: int) -> grpc.aio.AioRpcError:
    """The error of a Ping, once Redis answers again (UNAVAILABLE until then)."""
    for _ in range(100):
        try:
            await ping(stub, session_id, sequence)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                await asyncio.sleep(0.05)
                continue
            return error
        raise AssertionError(f"sequence {sequence} was accepted")
    raise AssertionError("Redis did not come back")


async def resume(
    stub: Stub, opened: peer_pb2.HandshakeResponse, peer_id: str, last_acknowledged: int
) -> peer_pb2.HandshakeResponse:
    request = resume_request(peer_id, opened, last_acknowledged)
    response: peer_pb2.HandshakeResponse = await stub.Handshake(request)
    return response


async def test_a_session_is_fenced_after_a_rollback_until_it_resumes_past_what_it_saw(
    server: PeerServer, rollback: Rollback
):
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = Stub(channel)
        opened = await open_session(stub, "fenced")
        for sequence in (1, 2, 3):
            await ping(stub, opened.session_id, sequence)
        rollback.take_copy()
        for sequence in (4, 5):  # acknowledged, then lost
            await ping(stub, opened.session_id, sequence)

        await asyncio.to_thread(rollback.roll_back)

        # Redis now says 3 was the last: without the fence, 4 would be accepted again.
        for sequence in (6, 4):
            error = await refusal(stub, opened.session_id, sequence)
            assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert reason_of(error) == "SESSION_FENCED"
            assert "resume the session with last_acknowledged" in (error.details() or "")

        resumed = await resume(stub, opened, "fenced", last_acknowledged=5)
        assert (resumed.resumed, resumed.next_sequence) == (True, 6)

        sequence_error = details_of(await refusal(stub, opened.session_id, 4)).sequence_error
        assert sequence_error is not None
        assert (sequence_error.received_sequence, sequence_error.expected_sequence) == (4, 6)
        await ping(stub, opened.session_id, 6)
        assert await highest_accepted(server, opened.session_id) == 6

    samples = await scrape(server.metrics_port)
    assert value(samples, "peer_grpc_fenced_calls_total") == 2


async def test_sessions_nothing_was_lost_from_go_on_after_one_resume(
    server: PeerServer, rollback: Rollback
):
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = Stub(channel)
        opened = await open_session(stub, "whole")
        await ping(stub, opened.session_id, 1)
        rollback.take_copy()

        await asyncio.to_thread(rollback.roll_back)

        # A restart changes the primary's replication id too: the fence cannot tell a
        # restart that lost nothing from one that did, so it asks once.
        error = await refusal(stub, opened.session_id, 2)
        assert reason_of(error) == "SESSION_FENCED"
        resumed = await resume(stub, opened, "whole", last_acknowledged=1)
        assert resumed.next_sequence == 2
        await ping(stub, opened.session_id, 2)


async def test_the_client_library_rides_through_a_rollback_without_reusing_a_sequence(
    server: PeerServer, rollback: Rollback
):
    async with PeerClient(server.address, "rider", heartbeat=False, timeout=5) as client:
        for _ in range(3):
            await client.ping()
        rollback.take_copy()
        for _ in range(2):
            await client.ping()

        await asyncio.to_thread(rollback.roll_back)

        # Resumed inside the call, which then goes as sequence 6: never 4 again.
        await client.ping()
        assert await highest_accepted(server, client.session_id) == 6
        await client.ping()
        assert client.server_sequence > 0


async def test_a_failover_to_a_replica_that_missed_the_last_calls_fences_the_session(
    sentinels: SentinelGroup,
):
    replica = sentinels.replica
    assert replica is not None
    async with (
        PeerServer(config_on(sentinels.url)) as server,
        PeerClient(server.address, "failing-over", heartbeat=False, timeout=10) as client,
    ):
        for _ in range(3):
            await client.ping()
        await asyncio.to_thread(sentinels.replicated)
        # Frozen, and cut off: what the primary acknowledges next never reaches it.
        replica.freeze()
        primary = sentinels.primary_client()
        primary.client_kill_filter(_type="replica")
        primary.close()
        for _ in range(2):  # acknowledged by the primary alone
            await client.ping()
        sentinels.primary.kill()
        replica.thaw()
        await asyncio.to_thread(
            wait_until, lambda: sentinels.primary_port() == replica.port, "the promotion", 30
        )

        await client.ping()

        assert await highest_accepted(server, client.session_id) == 6
