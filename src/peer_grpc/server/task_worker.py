"""``peer-grpc worker``: a process that runs queued tasks and serves no PeerService.

Front ends (``serve``, with ``--no-run-tasks`` or not) queue tasks in Redis;
workers claim and run them, so that the two scale apart. A worker reports its
health on the standard gRPC health service (``grpc.health.v1.Health``, service
:data:`WORKER_SERVICE`) when given a health port: SERVING while Redis answers,
NOT_SERVING while it does not and once the worker is stopping. On SIGTERM or
SIGINT it claims nothing more, lets the tasks it holds finish within the grace
period, and hands back the rest (see :meth:`TaskRunner.stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from peer_grpc.core.errors import StoreUnavailable
from peer_grpc.stores.memory.tasks import DEFAULT_TASK_RETENTION
from peer_grpc.stores.redis import RedisOptions, RedisTaskStore
from peer_grpc.stores.redis.connection import check_store_url
from peer_grpc.stores.redis.keys import DEFAULT_KEY_PREFIX
from peer_grpc.tasks.registry import DEFAULT_MAX_RESULT_BYTES, TaskRegistry
from peer_grpc.tasks.reporting import DEFAULT_PROGRESS_INTERVAL
from peer_grpc.tasks.runner import DEFAULT_TASK_LEASE, TaskRunner

__all__ = ["WORKER_SERVICE", "WorkerConfig", "run_worker"]

log = logging.getLogger(__name__)

#: The name a worker's health is reported under.
WORKER_SERVICE = "peer.v1.TaskWorker"
#: Seconds between the worker's looks at Redis for its health.
_HEALTH_INTERVAL = 1.0

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs: the front ends' Redis, and how much it runs at once."""

    #: The Redis the front ends queue tasks in (``redis://``, ``rediss://``, ``unix://``).
    store: str
    #: Tasks this worker runs at once.
    concurrency: int = 16
    #: Seconds a task stays claimed without a renewal (the front ends' --task-lease).
    task_lease: float = DEFAULT_TASK_LEASE
    #: Seconds held tasks get to finish on SIGTERM before they are handed back.
    shutdown_grace: float = 5.0
    #: Where to serve the gRPC health service (``HOST:PORT``); None serves none.
    health_address: str | None = None
    #: As the front ends' --redis-key-prefix, --redis-timeout, --task-retention,
    #: --max-task-result-bytes and --task-progress-interval.
    redis_key_prefix: str = DEFAULT_KEY_PREFIX
    redis_timeout: float = 1.0
    task_retention: float = DEFAULT_TASK_RETENTION
    max_task_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    task_progress_interval: float = DEFAULT_PROGRESS_INTERVAL

    def __post_init__(self) -> None:
        try:
            check_store_url(self.store)
        except ValueError as error:
            raise ValueError(
                f"--store {self.store!r}: a worker needs the front ends' Redis: {error}"
            ) from None
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.task_lease <= 0 or self.shutdown_grace < 0 or self.redis_timeout <= 0:
            raise ValueError("--task-lease and --redis-timeout must be positive")
        if self.task_progress_interval < 0:
            raise ValueError("--task-progress-interval must not be negative")


async def run_worker(config: WorkerConfig, registry: TaskRegistry) -> None:
    """Run tasks until SIGTERM or SIGINT, then stop as the module says."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    store = RedisTaskStore.from_url(
        config.store,
        options=RedisOptions(command_timeout=config.redis_timeout),
        key_prefix=config.redis_key_prefix,
        retention=config.task_retention,
    )
    runner = TaskRunner(
        registry,
        store.queue,
        concurrency=config.concurrency,
        lease=config.task_lease,
        max_result_bytes=config.max_task_result_bytes,
        progress_interval=config.task_progress_interval,
    )
    health_server, health_servicer = await _serve_health(config.health_address)
    watching = asyncio.create_task(_watch_health(store, runner, health_servicer))
    runner.start()
    log.info(
        "worker %s running up to %d tasks of %s",
        runner.runner_id,
        config.concurrency,
        ", ".join(registry.names),
    )
    try:
        await stop.wait()
        log.info("stopping: held tasks get %.1fs to finish", config.shutdown_grace)
    finally:
        watching.cancel()
        if health_servicer is not None:
            await health_servicer.enter_graceful_shutdown()
        await runner.stop(config.shutdown_grace)
        if health_server is not None:
            await health_server.stop(0)
        await store.close()


async def _serve_health(
    address: str | None,
) -> tuple[grpc.aio.Server | None, health.aio.HealthServicer | None]:
    if address is None:
        return None, None
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(address) == 0:
        raise ValueError(f"--health-address {address}: cannot listen there")
    await server.start()
    await _set(servicer, _NOT_SERVING)
    log.info("health service on %s (%s)", address, WORKER_SERVICE)
    return server, servicer


async def _watch_health(
    store: RedisTaskStore, runner: TaskRunner, servicer: health.aio.HealthServicer | None
) -> None:
    """Report SERVING while Redis answers; a process manager restarts a worker that
    stays NOT_SERVING."""
    while True:
        try:
            await store.check()
            serving = runner.healthy
        except StoreUnavailable:
            serving = False
        if servicer is not None:
            with contextlib.suppress(Exception):
                await _set(servicer, _SERVING if serving else _NOT_SERVING)
        await asyncio.sleep(_HEALTH_INTERVAL)


async def _set(servicer: health.aio.HealthServicer, status: int) -> None:
    for service in ("", WORKER_SERVICE):
        await servicer.set(service, status)
