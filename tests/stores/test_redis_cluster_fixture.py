"""The local Redis Cluster the Redis stores' cluster tests run on (issue 19).

It forms from real redis-server processes, serves every slot, answers redis-py's
asyncio cluster client across its three primaries, and fails a killed primary over
to its replica without losing what the replica had.
"""

from __future__ import annotations

import pytest
import redis.asyncio.cluster

from tests.redis_cluster import LocalCluster


@pytest.mark.timeout(120)
async def test_the_local_cluster_serves_every_slot_and_survives_a_primary_killed(
    own_cluster: LocalCluster,
):
    cluster = own_cluster
    client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        keys = [f"{{tag{number}}}:key" for number in range(30)]
        for key in keys:
            await client.set(key, key)
        slots = {client.keyslot(key) for key in keys}
        owners = {getattr(client.get_node_from_key(key), "port", None) for key in keys}
        assert len(owners) == 3, "the keys spread over the three primaries"
        # Keys under one hash tag share a slot: what a script may touch at once.
        assert client.keyslot("{s:1}:session") == client.keyslot("{s:1}:calls")
        assert len(slots) > 3
        await client.execute_command("WAIT", 1, 2000, target_nodes=client.get_primaries())

        promoted = cluster.kill_primary(0)

        await client.aclose()
        client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=promoted.port)
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
    finally:
        await client.aclose()
