"""RPC benchmarks: servers and load generators as separate processes on loopback.

Every server of a run starts once and idles while another is measured; the
configurations then take turns, round after round, so that a burst of noise on
a shared machine lands on one round of each rather than on all rounds of one.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.redis_cluster import LocalCluster
from tests.redis_server import RedisServer

PYTHON = sys.executable


@dataclass(frozen=True)
class ServerKind:
    """A server to measure: its name in the report, and how to start it."""

    name: str
    #: The command, with ``{port}``, ``{redis}``, ``{replicated}`` (a Redis with a
    #: replica of its own) and ``{cluster}`` (a local Redis Cluster) to fill in.
    command: tuple[str, ...]
    needs_redis: bool = False
    needs_replica: bool = False
    needs_cluster: bool = False
    workers: int = 1
    #: Where another version of peer-grpc lives (its ``src``), served instead of this one.
    baseline: str = ""


def _serve(*flags: str) -> tuple[str, ...]:
    return (
        PYTHON, "-m", "peer_grpc", "serve", "--port", "{port}", "--log-level", "warning", *flags
    )  # fmt: skip


SERVERS = {
    server.name: server
    for server in (
        ServerKind("bare-aio", (PYTHON, "-m", "benchmarks.bare", "aio", "{port}")),
        ServerKind("bare-sync", (PYTHON, "-m", "benchmarks.bare", "sync", "{port}")),
        ServerKind("memory-strict", _serve()),
        ServerKind("memory-window", _serve("--sequence-mode", "window")),
        # What Prometheus metrics cost a call: the same server with its endpoint on.
        ServerKind("memory-strict-metrics", _serve("--metrics-port", "0")),
        ServerKind("redis-strict", _serve("--store", "{redis}"), needs_redis=True),
        # What durability costs: each admission waits for a replica (Redis WAIT).
        ServerKind(
            "redis-strict-wait",
            _serve("--store", "{replicated}", "--redis-wait-replicas", "1"),
            needs_redis=True,
            needs_replica=True,
        ),
        # The same server on a Redis Cluster: three primaries, a replica each.
        ServerKind(
            "redis-cluster-strict",
            _serve("--store", "{cluster}"),
            needs_redis=True,
            needs_cluster=True,
        ),
        ServerKind(
            "redis-strict-2-workers",
            _serve("--store", "{redis}", "--workers", "2"),
            needs_redis=True,
            workers=2,
        ),
    )
}


#: The suffix of a server that runs another version of the code (``--baseline``).
BASELINE = "@baseline"


def add_baseline(source: Path) -> list[str]:
    """Serve the code under ``source`` (a checkout, e.g. a git worktree of the commit
    before a change) as ``memory-strict@baseline`` and ``redis-strict@baseline``, so that
    old and new code are measured in one run, taking turns. Returns their names."""
    src = str((source / "src").resolve())
    added = []
    for name in ("memory-strict", "redis-strict"):
        kind = SERVERS[name]
        SERVERS[name + BASELINE] = ServerKind(
            name + BASELINE,
            kind.command,
            needs_redis=kind.needs_redis,
            workers=kind.workers,
            baseline=src,
        )
        added.append(name + BASELINE)
    return added


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    server: str
    method: str
    sessions: int
    reject: str = ""

    @property
    def label(self) -> str:
        rejected = f" rejected:{self.reject}" if self.reject else ""
        return f"{self.server} {self.method} x{self.sessions}{rejected}"


@dataclass
class Plan:
    """What a run measures and for how long."""

    servers: Sequence[str]
    methods: Sequence[str] = ("ping", "delegate")
    sessions: Sequence[int] = (1, 16, 64)
    rejections: Sequence[str] = ("unknown", "gap", "replay")
    #: Sessions of the rejection runs (one of ``sessions``, else the largest).
    flood_sessions: int = 16
    rounds: int = 3
    warmup: float = 1.0
    seconds: float = 3.0
    configs: list[Config] = field(default_factory=list)

    def build(self) -> list[Config]:
        """Every configuration, in the order each round measures them."""
        configs = [
            Config(server, method, sessions)
            for sessions in self.sessions
            for method in self.methods
            for server in self.servers
            if not server.endswith(("workers", "metrics", "wait", BASELINE))
        ]
        # The code before a change: its Ping only, beside the same server of this code.
        configs += [
            Config(server, "ping", sessions)
            for sessions in self.sessions
            for server in self.servers
            if server.endswith(BASELINE)
        ]
        # Ping alone: what metrics, and waiting for a replica, add to a call.
        metered = [server for server in self.servers if server.endswith(("metrics", "wait"))]
        configs += [
            Config(server, "ping", sessions) for sessions in self.sessions for server in metered
        ]
        if "memory-strict" in self.servers:
            # Compared with accepted calls at the same concurrency, which must be measured.
            flood = (
                self.flood_sessions if self.flood_sessions in self.sessions else max(self.sessions)
            )
            configs += [
                Config("memory-strict", "ping", flood, reject) for reject in self.rejections
            ]
        workers = [server for server in self.servers if server.endswith("workers")]
        if workers and "redis-strict" in self.servers:
            top = max(self.sessions)
            configs += [Config(server, "ping", top) for server in ("redis-strict", *workers)]
        self.configs = configs
        return configs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    kind: ServerKind
    port: int
    process: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def _wait_until_serving(server: RunningServer, timeout: float = 30.0) -> None:
    with grpc.insecure_channel(server.target) as channel:
        deadline = time.monotonic() + timeout
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.kind.name} exited with {server.process.returncode}")
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.kind.name} did not start") from None


@contextmanager
def running_servers(names: Sequence[str], workdir: Path) -> Iterator[dict[str, RunningServer]]:
    """Start the named servers (and a redis-server if one needs it); stop them all after."""
    with ExitStack() as stack:
        redis_url = replicated_url = cluster_url = ""
        if any(SERVERS[name].needs_redis for name in names):
            redis = RedisServer(workdir)
            redis.start()
            stack.callback(redis.stop)
            redis_url = redis.url
        if any(SERVERS[name].needs_replica for name in names):
            # A primary of its own, so that replication costs the other servers nothing.
            (workdir / "primary").mkdir(exist_ok=True)
            (workdir / "replica").mkdir(exist_ok=True)
            primary = RedisServer(workdir / "primary")
            primary.start()
            stack.callback(primary.stop)
            replica = RedisServer(workdir / "replica", replica_of=primary.port)
            replica.start()
            stack.callback(replica.stop)
            replicated_url = primary.url
        if any(SERVERS[name].needs_cluster for name in names):
            (workdir / "cluster").mkdir(exist_ok=True)
            cluster = LocalCluster(workdir / "cluster")
            cluster.start()
            stack.callback(cluster.stop)
            cluster_url = cluster.url
        servers: dict[str, RunningServer] = {}
        for name in names:
            kind = SERVERS[name]
            port = free_port()
            command = [
                part.format(
                    port=port, redis=redis_url, replicated=replicated_url, cluster=cluster_url
                )
                for part in kind.command
            ]
            env = None
            if kind.baseline:
                env = {**os.environ, "PYTHONPATH": kind.baseline}
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
            stack.callback(_stop, process)
            servers[name] = RunningServer(kind, port, process)
        for server in servers.values():
            _wait_until_serving(server)
        yield servers


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(
    config: Config, server: RunningServer, plan: Plan, redis_url: str = ""
) -> dict[str, Any]:
    """One load-generator run against ``server``; its JSON result."""
    command = [
        PYTHON, "-m", "benchmarks.load",
        "--target", server.target,
        "--server-pid", str(server.process.pid),
        "--method", config.method,
        "--sessions", str(config.sessions),
        "--warmup", str(plan.warmup),
        "--seconds", str(plan.seconds),
    ]  # fmt: skip
    if config.reject:
        command += ["--reject", config.reject]
    if redis_url:
        command += ["--redis-url", redis_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{config.label}: the load generator failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(plan: Plan, workdir: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Measure every configuration of ``plan``, ``plan.rounds`` times, taking turns."""
    configs = plan.build()
    results: list[dict[str, Any]] = []
    names = sorted({config.server for config in configs}, key=list(SERVERS).index)
    with running_servers(names, workdir) as servers:
        for round_number in range(plan.rounds):
            for config in configs:
                server = servers[config.server]
                result = measure(config, server, plan, redis_url_of(server))
                result.update(
                    server=config.server,
                    method=config.method,
                    sessions=config.sessions,
                    reject=config.reject,
                    round=round_number,
                    workers=server.kind.workers,
                )
                results.append(result)
                if progress:
                    print(
                        f"  round {round_number + 1}/{plan.rounds} {config.label}: "
                        f"{result['calls_per_second']:.0f} calls/s, "
                        f"{result['server_cpu_us_per_call']:.0f} us CPU/call",
                        file=sys.stderr,
                        flush=True,
                    )
    return results


def redis_url_of(server: RunningServer) -> str:
    """The Redis a server uses (from its command line), to count commands; empty if none."""
    if not server.kind.needs_redis:
        return ""
    args = list(server.process.args)  # type: ignore[arg-type]
    return str(args[args.index("--store") + 1])


def machine() -> dict[str, Any]:
    """What the benchmarks ran on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }
