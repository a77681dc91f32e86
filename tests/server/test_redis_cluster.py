"""The stores on a Redis Cluster: how it is named, what it refuses, and a primary killed
under load.

The store conformance suites, the replica tests and the frozen-Redis fault test run on
a local cluster too (the ``redis-cluster`` backend of ``tests.conftest``); here is what
only a cluster has. Real processes: six redis-servers, three primaries with a replica
each; a primary is killed with SIGKILL and its replica promoted by the cluster itself.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc.aio
import pytest
from redis.crc import key_slot

from peer_grpc import PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2_grpc
from peer_grpc.core.errors import StoreUnavailable
from peer_grpc.stores import RedisSessionStore
from peer_grpc.stores.redis.connection import ClusterAddress, RedisOptions, parse_cluster_url
from peer_grpc.stores.redis.keys import SHARDS, RedisKeys
from tests.failover_load import Load, send_continuously
from tests.ports import free_port
from tests.redis_cluster import LocalCluster


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis-cluster://127.0.0.1:7000,127.0.0.1:7001",
            ClusterAddress(nodes=(("127.0.0.1", 7000), ("127.0.0.1", 7001))),
        ),
        (
            "rediss-cluster://app:s%40cret@redis-0.internal,[::1]:7002/0",
            ClusterAddress(
                nodes=(("redis-0.internal", 6379), ("::1", 7002)),
                username="app",
                password="s@cret",
                tls=True,
            ),
        ),
    ],
)
def test_a_cluster_url_names_some_nodes_and_the_credentials(url: str, expected: ClusterAddress):
    assert parse_cluster_url(url) == expected
    ServerConfig(store=url)  # taken


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis-cluster://127.0.0.1:port", "is not a host:port"),
        ("redis-cluster://127.0.0.1:7000/1", "a Redis Cluster has only database 0"),
        ("redis-cluster://", "is not a host:port"),
    ],
)
def test_a_bad_cluster_url_is_refused_saying_what_is_wrong(url: str, says: str):
    with pytest.raises(ValueError, match=says):
        ServerConfig(store=url)


def test_waiting_for_replicas_is_refused_on_a_cluster():
    with pytest.raises(ValueError, match="--redis-wait-replicas needs one primary"):
        ServerConfig(store="redis-cluster://127.0.0.1:7000", redis_wait_replicas=1)


def test_session_indexes_spread_over_the_cluster_and_each_session_shares_its_shards_slot():
    keys = RedisKeys("p", sharded=True)
    slots = {key_slot(shard.peers.encode()) for shard in keys.shards}
    assert len(keys.shards) == SHARDS
    assert len(slots) > SHARDS * 0.9  # practically one slot each
    for number in range(200):
        session_id = uuid.uuid4().hex
        index = keys.session_index(session_id)
        touched = {*keys.session(session_id), *index.live_sets, index.stats}
        assert {key_slot(key.encode()) for key in touched} == {key_slot(index.stats.encode())}, (
            number
        )


@pytest.mark.timeout(120)
async def test_a_primary_killed_under_load_fails_over_and_no_sequence_is_accepted_twice(
    own_cluster: LocalCluster,
):
    cluster = own_cluster
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        store=cluster.url,
        redis_key_prefix=f"cluster-{uuid.uuid4().hex[:8]}",
        redis_timeout=0.5,
        shutdown_grace=0,
    )
    load, stop, failed_over = Load(), asyncio.Event(), asyncio.Event()
    async with (
        PeerServer(config) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        peers = [
            asyncio.create_task(send_continuously(stub, f"load-{n}", load, stop, failed_over))
            for n in range(8)
        ]
        await asyncio.sleep(2)
        # The primary of one of the sessions, so that some session surely loses it.
        session = await server.manager.store.get_by_peer("load-0")
        assert session is not None
        session_key = RedisKeys(config.redis_key_prefix, sharded=True).session(session.session_id)
        await asyncio.to_thread(cluster.kill_primary, cluster.primary_of(session_key[0]))
        failed_over.set()
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*peers)

    print(f"\ncluster, a primary killed: {dict(load.codes)}, accepted twice {load.accepted_twice}")
    assert load.accepted_twice == 0
    assert load.ok_after > 0, "the calls went on after the failover"
    # The sessions of the killed primary's slots (load-0's among them) were fenced once,
    # then resumed.
    assert load.codes["SESSION_FENCED"] > 0


async def test_a_cluster_no_node_of_which_answers_is_unavailable_never_internal():
    store = RedisSessionStore.from_url(
        f"redis-cluster://127.0.0.1:{free_port()}",
        options=RedisOptions(command_timeout=0.2, connect_timeout=0.2),
    )
    try:
        with pytest.raises(StoreUnavailable, match="RedisClusterUnreachableError"):
            await store.get("any")
    finally:
        await store.close()
