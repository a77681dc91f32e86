"""A primary, its replica and a Sentinel watching them, real processes on loopback ports.

Sentinel is ``redis-server --sentinel``. It takes the primary for down after half a
second without an answer and promotes the replica, so that the tests can fail a
primary over in a few seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.ports import free_port
from tests.redis_server import RedisServer, redis_server_binary, wait_until

__all__ = ["SERVICE", "SentinelGroup"]

#: The name the Sentinel monitors the primary under.
SERVICE = "peer"


class SentinelGroup:
    """A primary, one replica of it and one Sentinel (quorum 1)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "primary").mkdir()
        (directory / "replica").mkdir()
        self.primary = RedisServer(directory / "primary")
        self.replica: RedisServer | None = None
        self.sentinel_port = 0
        self._sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The stores' URL of the primary, through the Sentinel."""
        return f"redis-sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    def start(self) -> None:
        self.primary.start()
        self.replica = RedisServer(self.directory / "replica", replica_of=self.primary.port)
        self.replica.start()
        self.sentinel_port = free_port()
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
        )
        self._sentinel = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._knows_the_replica, "the Sentinel to see the replica")

    def primary_port(self) -> int | None:
        """The port of the primary, as the Sentinel names it now."""
        with self._sentinel_client() as sentinel, contextlib.suppress(redis.RedisError):
            found = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(found[1]) if found else None
        return None

    def primary_client(self) -> redis.Redis:
        """A client of the primary (the caller closes it, or lets it go)."""
        return redis.Redis(host="127.0.0.1", port=self.primary.port, socket_timeout=5)

    def primary_stats(self) -> dict[str, int]:
        """How many WAIT and SCRIPT commands the primary has run."""
        client = self.primary_client()
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("wait", "script")
        }

    def replicated(self) -> None:
        """Wait until the replica has every write the primary acknowledged."""
        client = redis.Redis(host="127.0.0.1", port=self.primary.port, socket_timeout=5)
        try:
            if client.execute_command("WAIT", 1, 5000) < 1:
                raise RuntimeError("the replica did not catch up")
        finally:
            client.close()

    def fail_over(self) -> None:
        """Kill the primary (kill -9) and wait until the Sentinel has promoted its replica."""
        replica = self.replica
        assert replica is not None
        self.primary.kill()
        wait_until(lambda: self.primary_port() == replica.port, "the replica's promotion", 30)
        wait_until(lambda: replica.role() == "master", "the promoted replica to take writes")

    def restore(self) -> None:
        """Start the killed primary again: the Sentinel makes it a replica of the promoted
        one. Wait until it is in sync, so that the group has a replica again."""
        assert self.replica is not None
        old, new = self.primary, self.replica
        old.start()
        self.primary, self.replica = new, old
        wait_until(old.replicating, "the old primary to replicate the new one", 30)

    def stop(self) -> None:
        if self._sentinel is not None and self._sentinel.poll() is None:
            self._sentinel.kill()
            self._sentinel.wait()
        self.primary.stop()
        if self.replica is not None:
            self.replica.stop()

    def _knows_the_replica(self) -> bool:
        assert self.replica is not None
        with self._sentinel_client() as sentinel, contextlib.suppress(redis.RedisError):
            replicas = sentinel.sentinel_slaves(SERVICE)
            return (
                any(
                    int(found["port"]) == self.replica.port and "disconnected" not in found["flags"]
                    for found in replicas
                )
                and self.replica.replicating()
            )
        return False

    @contextlib.contextmanager
    def _sentinel_client(self) -> Iterator[redis.Redis]:
        client = redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=1)
        try:
            yield client
        finally:
            client.close()
