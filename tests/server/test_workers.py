"""``peer-grpc serve --workers N``: N server processes on one port, sharing sessions in Redis."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import grpc.aio
import psutil
import pytest

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from tests.cli.test_cli import run_serve
from tests.conftest import open_session, session_metadata, shared_redis
from tests.ports import free_port
from tests.server.test_observability import handled, scrape, value

CONNECTIONS = 16


def free_port_pair() -> int:
    """A port that is free, and whose next port is free too."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@dataclass
class Workers:
    process: subprocess.Popen[str]
    port: int
    #: Worker i serves its metrics on this port + i.
    metrics_port: int

    @property
    def worker_pids(self) -> list[int]:
        # Beside the workers, multiprocessing runs a resource tracker of its own.
        return [
            child.pid
            for child in psutil.Process(self.process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())
        ]


@pytest.fixture
def two_workers() -> Iterator[Workers]:
    port = free_port()
    metrics_port = free_port_pair()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "peer_grpc", "serve", "--workers", "2", "--port", str(port)),
            *("--store", shared_redis().url, "--redis-key-prefix", f"workers-{port}"),
            *("--metrics-port", str(metrics_port)),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    serving = 0
    for line in process.stderr:
        serving += "serving on" in line
        if serving == 2:
            break
    try:
        assert serving == 2, "the two workers did not both start"
        yield Workers(process, port, metrics_port)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=15)


def own_connection(port: int) -> grpc.aio.Channel:
    # A subchannel pool of its own: else channels to one address share one connection.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def connected_workers(workers: Workers) -> set[int]:
    """The workers holding an established connection on the shared port."""
    return {
        pid
        for pid in workers.worker_pids
        if any(
            conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == workers.port
            for conn in psutil.Process(pid).net_connections("tcp")
        )
    }


async def test_workers_share_the_port_and_the_sessions(two_workers: Workers):
    channels = [own_connection(two_workers.port) for _ in range(CONNECTIONS)]
    try:
        stubs = [peer_pb2_grpc.PeerServiceStub(channel) for channel in channels]
        session = await open_session(stubs[0], "peer-across-workers")
        # Each call of the one session goes out on another connection, so to either worker.
        for sequence, stub in enumerate(stubs, start=1):
            ping = peer_pb2.PingRequest(payload=b"%d" % sequence)
            reply = await stub.Ping(ping, metadata=session_metadata(session.session_id, sequence))
            assert reply.payload == ping.payload

        # With 16 connections, all on one worker would be a 1 in 32768 chance.
        assert connected_workers(two_workers) == set(two_workers.worker_pids)
        # Each worker counts its own calls on a metrics port of its own; the sessions are
        # the shared store's, the same from either.
        scraped = [await scrape(two_workers.metrics_port + index) for index in (0, 1)]
        pings = [handled(samples, "Ping", "OK") for samples in scraped]
        assert sum(pings) == CONNECTIONS
        assert all(pings)
        for samples in scraped:
            assert value(samples, "peer_grpc_sessions", state="established") == 1
    finally:
        for channel in channels:
            await channel.close()

    two_workers.process.send_signal(signal.SIGTERM)
    assert two_workers.process.wait(timeout=15) == 0


def test_workers_need_a_shared_store():
    done = run_serve("--workers", "2", "--port", str(free_port()))

    assert done.returncode == 2
    assert "--workers above 1 needs a shared store" in done.stderr


def test_workers_need_a_fixed_port():
    done = run_serve("--workers", "2", "--port", "0", "--store", shared_redis().url)

    assert done.returncode == 2
    assert "needs a fixed --port" in done.stderr


def test_workers_that_cannot_bind_fail_the_whole_server():
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_serve("--workers", "2", "--port", port, "--store", shared_redis().url)

    assert done.returncode == 1
    assert "cannot listen on" in done.stderr


def test_workers_need_a_fixed_metrics_port():
    done = run_serve(
        *("--workers", "2", "--port", str(free_port()), "--store", shared_redis().url),
        *("--metrics-port", "0"),
    )

    assert done.returncode == 2
    assert "needs a fixed --metrics-port" in done.stderr
