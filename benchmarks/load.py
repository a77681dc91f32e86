"""The load generator: one process, closed-loop sessions, measured over a fixed window.

``python -m benchmarks.load --target HOST:PORT --sessions N ...`` handshakes N
sessions, then each sends calls one after another with its session id and the
next sequence number, as a real peer would. After the warm-up it measures for
``--seconds``: completed calls, their latencies, and the CPU time the server
processes (``--server-pid``, children included) spent meanwhile, read from the
kernel's accounting. Prints one JSON object.

``--reject`` makes every measured call one the server must turn away: an
unknown session, a sequence gap, or a replay of an accepted sequence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import psutil
import redis

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.stores.redis.connection import CLUSTER_SCHEMES, parse_cluster_url

PING = "/peer.v1.PeerService/Ping"
DELEGATE = "/peer.v1.PeerService/DelegateTask"
HANDSHAKE = "/peer.v1.PeerService/Handshake"
#: Each method's path, its request, and another request for the same sequence (a replay).
METHODS = {
    "ping": (
        PING,
        peer_pb2.PingRequest(payload=b"bench").SerializeToString(),
        peer_pb2.PingRequest(payload=b"other").SerializeToString(),
    ),
    "delegate": (
        DELEGATE,
        peer_pb2.DelegateTaskRequest(task_type="echo", payload={"n": 1}).SerializeToString(),
        peer_pb2.DelegateTaskRequest(task_type="echo", payload={"n": 2}).SerializeToString(),
    ),
}
REJECTIONS = ("unknown", "gap", "replay")


@dataclass
class Window:
    """What one measurement window saw."""

    started: float = 0.0
    ended: float = 0.0
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    cpu: list[float] = field(default_factory=list)
    redis_commands: list[int] = field(default_factory=list)
    redis_reads: list[int] = field(default_factory=list)
    redis_cpu: list[float] = field(default_factory=list)


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes and all their children."""
    total = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        for member in (process, *process.children(recursive=True)):
            times = member.cpu_times()
            total += times.user + times.system
    return total


async def handshake(channel: grpc.aio.Channel) -> str:
    call = channel.unary_unary(HANDSHAKE)
    request = peer_pb2.HandshakeRequest(
        peer_id=f"bench-{secrets.token_hex(6)}", protocol_versions=["1.0"]
    )
    reply = peer_pb2.HandshakeResponse.FromString(await call(request.SerializeToString()))
    return str(reply.session_id)


async def run_session(
    method_name: str, channel: grpc.aio.Channel, reject: str, window: Window
) -> None:
    """Send calls one after another until the window closes."""
    method, body, other_body = METHODS[method_name]
    call = channel.unary_unary(method)
    session_id = secrets.token_hex(16) if reject == "unknown" else await handshake(channel)
    sequence = 1
    if reject == "replay":  # accept sequence 1, then send other bytes with it: a REPLAY
        await call(body, metadata=((SESSION_ID_KEY, session_id), (SEQUENCE_KEY, "1")))
        body = other_body
    # A rejected call never advances the session, so its sequence never changes.
    stuck = {"unknown": 1, "gap": 1_000, "replay": 1}.get(reject)
    while not window.ended:
        number = stuck if stuck is not None else sequence
        metadata = ((SESSION_ID_KEY, session_id), (SEQUENCE_KEY, str(number)))
        start = time.perf_counter()
        try:
            await call(body, metadata=metadata)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        done = time.perf_counter()
        sequence += 1
        if (
            window.started
            and window.started <= start
            and (not window.ended or done <= window.ended)
        ):
            window.latencies.append(done - start)
            window.codes[code] += 1


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    window = Window()
    samplers = redis_samplers(args.redis_url)

    def sample() -> None:
        window.cpu.append(cpu_seconds(args.server_pid))
        if samplers:
            infos = [sampler.info() for sampler in samplers]
            window.redis_commands.append(sum(int(i["total_commands_processed"]) for i in infos))
            window.redis_reads.append(sum(int(i["total_reads_processed"]) for i in infos))
            window.redis_cpu.append(
                sum(float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in infos)
            )

    async with grpc.aio.insecure_channel(args.target) as channel:
        await channel.channel_ready()
        sessions = [
            asyncio.create_task(run_session(args.method, channel, args.reject, window))
            for _ in range(args.sessions)
        ]
        await asyncio.sleep(args.warmup)
        sample()
        window.started = time.perf_counter()
        await asyncio.sleep(args.seconds)
        window.ended = time.perf_counter()
        sample()
        await asyncio.gather(*sessions)
    for sampler in samplers:
        sampler.close()
    return summarize(window, args, len(samplers))


def redis_samplers(url: str) -> list[redis.Redis]:
    """Clients of the Redis servers whose counters a run reads: the one Redis, or every
    primary a cluster URL names (replicas only copy what the primaries did)."""
    if not url:
        return []
    if not url.startswith(CLUSTER_SCHEMES):
        return [redis.Redis.from_url(url)]
    return [redis.Redis(host=host, port=port) for host, port in parse_cluster_url(url).nodes]


def summarize(window: Window, args: argparse.Namespace, servers: int = 1) -> dict[str, Any]:
    calls = len(window.latencies)
    elapsed = window.ended - window.started
    cuts = statistics.quantiles(window.latencies, n=100) if calls >= 2 else [0.0] * 99
    result: dict[str, Any] = {
        "calls": calls,
        "seconds": elapsed,
        "calls_per_second": calls / elapsed,
        "p50_us": cuts[49] * 1e6,
        "p99_us": cuts[98] * 1e6,
        "server_cpu_us_per_call": (window.cpu[1] - window.cpu[0]) / max(calls, 1) * 1e6,
        "codes": dict(window.codes),
    }
    if window.redis_commands:
        # Minus the INFO command each sample sends to each server.
        commands = window.redis_commands[1] - window.redis_commands[0] - servers
        result["redis_commands_per_call"] = commands / max(calls, 1)
        # A read event is a round trip: Redis reads a pipeline's commands at once.
        reads = window.redis_reads[1] - window.redis_reads[0] - servers
        result["redis_round_trips_per_call"] = reads / max(calls, 1)
        result["redis_cpu_us_per_call"] = (
            (window.redis_cpu[1] - window.redis_cpu[0]) / max(calls, 1) * 1e6
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--server-pid", type=int, action="append", required=True)
    parser.add_argument("--method", choices=sorted(METHODS), default="ping")
    parser.add_argument("--reject", choices=("", *REJECTIONS), default="")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args))), flush=True)


if __name__ == "__main__":
    main()
