"""The server: the PeerService with its interceptors, health, reflection and the sweeper."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from redis.asyncio.connection import parse_url

from peer_grpc.core.clock import Clock
from peer_grpc.core.errors import StoreUnavailable
from peer_grpc.core.identity import PeerIdPolicy
from peer_grpc.core.limits import (
    DEFAULT_CLIENT_HANDSHAKE_BURST,
    DEFAULT_CLIENT_HANDSHAKE_RATE,
    DEFAULT_PEER_HANDSHAKE_BURST,
    DEFAULT_PEER_HANDSHAKE_RATE,
    HandshakeThrottle,
    RateLimiter,
)
from peer_grpc.core.retry import DEFAULT_RETRY_CACHE
from peer_grpc.core.sequence import SequenceMode
from peer_grpc.core.window import DEFAULT_WINDOW, ring_size
from peer_grpc.observability.calls import CallObserver
from peer_grpc.observability.logs import CallLog
from peer_grpc.observability.metrics import MetricsEndpoint, ServerMetrics, StoreReadings
from peer_grpc.observability.tracing import CallTracing
from peer_grpc.server.handlers import peer_service_handler
from peer_grpc.server.interceptors import peer_interceptors
from peer_grpc.server.reflection import enable_reflection
from peer_grpc.server.servicer import PeerServicer
from peer_grpc.server.validation import request_validators
from peer_grpc.sessions.manager import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_LIFETIME,
    DEFAULT_MAX_SESSIONS,
    SessionManager,
)
from peer_grpc.stores.memory.sessions import MemorySessionStore
from peer_grpc.stores.memory.tasks import DEFAULT_TASK_RETENTION, MemoryTaskStore
from peer_grpc.stores.protocols import SessionStore, TaskStore
from peer_grpc.stores.redis.connection import RedisOptions, connect
from peer_grpc.stores.redis.keys import DEFAULT_KEY_PREFIX
from peer_grpc.stores.redis.sessions import RedisSessionStore
from peer_grpc.stores.redis.tasks import RedisTaskStore
from peer_grpc.tasks.manager import (
    DEFAULT_MAX_RUNNING_TASKS,
    DEFAULT_MAX_TASK_TIMEOUT,
    DEFAULT_MAX_TASKS_PER_SESSION,
    DEFAULT_TASK_TIMEOUT,
    TaskLimits,
    TaskManager,
)
from peer_grpc.tasks.registry import TaskRegistry, default_registry
from peer_grpc.wire.contract import SERVICE_NAME
from peer_grpc.wire.tls import server_credentials

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider as AnyTracerProvider

__all__ = ["PeerServer", "ServerBindError", "ServerConfig", "format_address", "serve"]

#: The URL schemes of the stores a server can use.
MEMORY_STORE = "memory"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

log = logging.getLogger(__name__)


def _default_peer_id() -> str:
    return f"peer-grpc@{socket.gethostname()}"[:128]


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How a server runs. Every field has a ``peer-grpc serve`` flag and a PEER_GRPC_* variable."""

    host: str = "127.0.0.1"
    #: 0 picks a free port (see :attr:`PeerServer.port`).
    port: int = 50051
    #: Seconds without activity after which a session expires.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Seconds between heartbeats that peers are asked for; a third of the idle timeout if unset.
    heartbeat_interval: float | None = None
    #: Seconds between background sweeps of expired sessions.
    sweep_interval: float = 5.0
    #: Let Ping and Status through without session metadata, for older peers.
    allow_sessionless: bool = False
    #: This server's own peer id.
    server_peer_id: str = field(default_factory=_default_peer_id)
    #: Seconds that in-flight calls get to finish on shutdown.
    shutdown_grace: float = 5.0
    #: How new sessions order sequences: strict (exactly the next) or window (anti-replay).
    sequence_mode: SequenceMode = SequenceMode.STRICT
    #: The anti-replay window's width in window mode.
    replay_window: int = DEFAULT_WINDOW
    #: How many accepted calls per session are remembered to answer resends.
    retry_cache_size: int = DEFAULT_RETRY_CACHE
    #: Seconds a task may run when its DelegateTask names no timeout.
    task_timeout: float = DEFAULT_TASK_TIMEOUT
    #: The longest timeout a DelegateTask may ask for.
    max_task_timeout: float = DEFAULT_MAX_TASK_TIMEOUT
    #: Tasks running at once in this server (also its worker threads for plain handlers).
    max_running_tasks: int = DEFAULT_MAX_RUNNING_TASKS
    #: Tasks running at once for one session.
    max_tasks_per_session: int = DEFAULT_MAX_TASKS_PER_SESSION
    #: Seconds a finished task is kept for GetTask and ListTasks before it is swept.
    task_retention: float = DEFAULT_TASK_RETENTION
    #: Where sessions and tasks live: ``memory`` (this process only) or a Redis URL
    #: (``redis://host:port/db``, ``rediss://`` for TLS, ``unix://``) shared by replicas.
    store: str = MEMORY_STORE
    #: The start of every Redis key, so that deployments can share one Redis.
    redis_key_prefix: str = DEFAULT_KEY_PREFIX
    #: Seconds a Redis command may take before the call gets UNAVAILABLE.
    redis_timeout: float = 1.0
    #: Seconds between checks of the store, whose answer the health service reports.
    store_check_interval: float = 1.0
    #: The server's TLS certificate chain and private key (PEM files); plaintext without.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The CA (PEM file) that issues client certificates: with it, mutual TLS, and
    #: every session is bound to the certificate identity that opened it.
    tls_client_ca: str | None = None
    #: A JSON file of certificate identity -> peer ids it may claim besides its own.
    identity_map: str | None = None
    #: Live sessions held at most (0: no limit); a Handshake beyond gets RESOURCE_EXHAUSTED.
    max_sessions: int = DEFAULT_MAX_SESSIONS
    #: Seconds a session lives at most, however active (0: no limit).
    max_session_lifetime: float = DEFAULT_MAX_LIFETIME
    #: Handshakes a second one peer id may make on average (0: no limit), and in a burst.
    peer_handshake_rate: float = DEFAULT_PEER_HANDSHAKE_RATE
    peer_handshake_burst: int = DEFAULT_PEER_HANDSHAKE_BURST
    #: Handshakes a second one client (certificate identity, else address) may make.
    client_handshake_rate: float = DEFAULT_CLIENT_HANDSHAKE_RATE
    client_handshake_burst: int = DEFAULT_CLIENT_HANDSHAKE_BURST
    #: The largest request message accepted, in bytes; larger ones get RESOURCE_EXHAUSTED.
    max_request_bytes: int = 4 * 1024 * 1024
    #: The largest request metadata accepted, in bytes as HTTP/2 counts it (each
    #: header's name and value plus 32, gRPC's own headers included).
    max_metadata_bytes: int = 16 * 1024
    #: Calls in flight on one client connection at most; more wait for a free slot.
    max_concurrent_streams: int = 100
    #: Seconds a client must leave between keepalive pings; one that pings more
    #: often is disconnected (HTTP/2 GOAWAY "too_many_pings").
    min_client_ping_interval: float = 10.0
    #: Share the port with other processes (SO_REUSEPORT), as ``serve --workers``
    #: does. Off otherwise, so that a port another server holds fails to bind.
    reuse_port: bool = False
    #: The port of the Prometheus endpoint (``/metrics``); None: no metrics, 0: a free port.
    metrics_port: int | None = None
    #: The address the metrics endpoint listens on; the gRPC host when None.
    metrics_host: str | None = None
    #: Log every PeerService call as one event (method, code, duration, session, peer).
    log_calls: bool = False
    #: Trace every call with OpenTelemetry (the ``otel`` extra), configured by the
    #: standard OTEL_* variables unless a tracer provider is given to the server.
    otel: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be 0-65535, got {self.metrics_port}")
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if self.sweep_interval <= 0:
            raise ValueError("sweep_interval must be positive")
        if (
            self.heartbeat_interval is not None
            and not 0 < self.heartbeat_interval < self.idle_timeout
        ):
            raise ValueError("heartbeat_interval must be positive and below idle_timeout")
        ring_size(self.replay_window)  # raises for a width out of range
        if not 0 <= self.retry_cache_size <= 1024:
            raise ValueError("retry_cache_size must be 0-1024")
        if self.task_retention < 0:
            raise ValueError("task_retention must not be negative")
        if self.store != MEMORY_STORE:
            if not self.store.startswith(_REDIS_SCHEMES):
                raise ValueError(
                    f"store must be {MEMORY_STORE!r} or a redis://, rediss:// or unix:// URL"
                )
            try:
                parse_url(self.store)
            except ValueError as error:
                raise ValueError(f"store: {error}") from None
        if self.redis_timeout <= 0 or self.store_check_interval <= 0:
            raise ValueError("redis_timeout and store_check_interval must be positive")
        self.task_limits  # noqa: B018 - raises for limits out of range
        self._check_tls()
        self._check_limits()

    def _check_tls(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if self.identity_map is not None and self.tls_client_ca is None:
            raise ValueError("identity_map needs mutual TLS (tls_client_ca)")

    def _check_limits(self) -> None:
        if self.max_sessions < 0 or self.max_session_lifetime < 0:
            raise ValueError("max_sessions and max_session_lifetime must not be negative")
        if self.peer_handshake_rate < 0 or self.client_handshake_rate < 0:
            raise ValueError("handshake rates must not be negative")
        if self.peer_handshake_burst < 1 or self.client_handshake_burst < 1:
            raise ValueError("handshake bursts must be at least 1")
        if self.max_request_bytes < 1 or self.max_metadata_bytes < 1024:
            raise ValueError("max_request_bytes must be positive and max_metadata_bytes >= 1024")
        if self.max_concurrent_streams < 1 or self.min_client_ping_interval <= 0:
            raise ValueError("max_concurrent_streams and min_client_ping_interval must be positive")

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS."""
        return self.tls_cert is not None

    @property
    def mutual_tls(self) -> bool:
        """Whether clients must present certificates, which bind their sessions."""
        return self.tls_client_ca is not None

    def grpc_options(self) -> list[tuple[str, int]]:
        """The gRPC channel arguments that enforce this config's transport limits."""
        return [
            # grpcio turns SO_REUSEPORT on by default, which lets a second server bind the
            # same port silently and steal half the connections. A taken port must fail,
            # unless the processes sharing it are this server's own workers.
            ("grpc.so_reuseport", int(self.reuse_port)),
            ("grpc.max_receive_message_length", self.max_request_bytes),
            # Soft and hard limit alike: between them gRPC refuses at random.
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                round(self.min_client_ping_interval * 1000),
            ),
            # Idle peers may keep their connection alive (within the interval above).
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_ping_strikes", 2),
        ]

    @property
    def task_limits(self) -> TaskLimits:
        """The limits the task manager enforces."""
        return TaskLimits(
            default_timeout=self.task_timeout,
            max_timeout=self.max_task_timeout,
            max_running=self.max_running_tasks,
            max_running_per_session=self.max_tasks_per_session,
        )

    @property
    def uses_redis(self) -> bool:
        """Whether sessions and tasks live in Redis."""
        return self.store != MEMORY_STORE

    @property
    def effective_heartbeat_interval(self) -> float:
        """The heartbeat interval peers are told to use."""
        return self.heartbeat_interval or self.idle_timeout / 3

    @property
    def address(self) -> str:
        """``host:port``, with IPv6 hosts in brackets."""
        return format_address(self.host, self.port)


class ServerBindError(RuntimeError):
    """The server could not listen on its address (taken, or not this machine's)."""


class PeerServer:
    """A running PeerService with health checking, reflection and session sweeping.

    Use as ``async with PeerServer(config) as server:`` or call :meth:`start` and
    :meth:`stop`.

    Args:
        config: how to run.
        store: the session store; the one ``config.store`` names when omitted.
        tasks: task handlers for DelegateTask; the built-in ones when omitted.
        task_store: where tasks live; the one ``config.store`` names when omitted.
        clock: the time source; the system clock when omitted.
        outer_interceptors: interceptors that run before the PeerService's own
            (for tests that delay or drop calls, say).
        tracer_provider: trace every call with this OpenTelemetry tracer provider
            (the ``otel`` extra), whatever ``config.otel`` says.
        observers: more :class:`~peer_grpc.observability.calls.CallObserver` s to tell of
            every call (an audit log, metrics of your own), after the built-in ones.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        store: SessionStore | None = None,
        tasks: TaskRegistry | None = None,
        task_store: TaskStore | None = None,
        clock: Clock | None = None,
        outer_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        tracer_provider: AnyTracerProvider | None = None,
        observers: Sequence[CallObserver] = (),
    ) -> None:
        self.config = config = config or ServerConfig()
        store, task_store = _open_stores(config, store, task_store)
        self.manager = SessionManager(
            store,
            clock=clock,
            idle_timeout=config.idle_timeout,
            sequence_mode=config.sequence_mode,
            replay_window=config.replay_window,
            max_sessions=config.max_sessions,
            max_lifetime=config.max_session_lifetime,
        )
        self.peer_ids = (
            PeerIdPolicy.from_file(config.identity_map)
            if config.identity_map
            else PeerIdPolicy(require_identity=config.mutual_tls)
        )
        self.handshake_throttle = HandshakeThrottle(
            per_client=RateLimiter(config.client_handshake_rate, config.client_handshake_burst),
            per_peer=RateLimiter(config.peer_handshake_rate, config.peer_handshake_burst),
        )
        self._outer_interceptors = tuple(outer_interceptors)
        self.tasks = TaskManager(
            tasks if tasks is not None else default_registry(),
            task_store,
            clock=self.manager.clock,
            limits=config.task_limits,
        )
        self.manager.on_session_end(lambda session: self.tasks.cancel_session(session.session_id))
        self.health = health.aio.HealthServicer()
        #: The server's Prometheus metrics, when ``config.metrics_port`` asks for them.
        self.metrics = ServerMetrics() if config.metrics_port is not None else None
        self._observers = [*self._call_observers(tracer_provider), *observers]
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._store_watch: asyncio.Task[None] | None = None
        #: Whether the stores answered at the last check (what health reports).
        self.store_available = True
        self._port = 0

    def _call_observers(self, tracer_provider: AnyTracerProvider | None) -> list[CallObserver]:
        observers: list[CallObserver] = []
        if self.metrics is not None:
            observers.append(self.metrics)
        if self.config.log_calls:
            observers.append(CallLog())
        if tracer_provider is not None or self.config.otel:
            observers.append(CallTracing(tracer_provider))
        return observers

    @property
    def port(self) -> int:
        """The port the server listens on (useful when the config asked for port 0)."""
        return self._port

    @property
    def metrics_port(self) -> int | None:
        """The port of the metrics endpoint while it serves (None without metrics)."""
        return self._metrics_endpoint.port if self._metrics_endpoint is not None else None

    @property
    def address(self) -> str:
        """The ``host:port`` clients connect to."""
        return format_address(self.config.host, self._port)

    async def start(self) -> None:
        """Bind, start serving and start the sweeper.

        Raises:
            ServerBindError: the address is taken or cannot be bound.
        """
        config = self.config
        servicer = PeerServicer(
            self.manager,
            self.tasks,
            server_peer_id=config.server_peer_id,
            heartbeat_interval=config.effective_heartbeat_interval,
            peer_ids=self.peer_ids,
            throttle=self.handshake_throttle,
        )
        server = grpc.aio.server(
            interceptors=[
                *self._outer_interceptors,
                *peer_interceptors(
                    self.manager,
                    request_validators(self.tasks),
                    allow_sessionless=config.allow_sessionless,
                    check_identity=config.mutual_tls,
                    observers=self._observers,
                ),
            ],
            options=config.grpc_options(),
        )
        server.add_generic_rpc_handlers((peer_service_handler(servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection(server, (SERVICE_NAME, health.SERVICE_NAME))
        # Metrics first: a grpc server that bound its port holds it until it is collected,
        # even when it never started.
        self._metrics_endpoint = self._serve_metrics()
        try:
            self._port = self._bind(server)
            await server.start()
        except BaseException:
            await self._close_metrics()
            raise
        self._server = server
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="peer-grpc-sweeper")
        self._store_watch = asyncio.create_task(self._watch_store(), name="peer-grpc-store-watch")
        store = type(self.manager.store).__name__
        if config.mutual_tls:
            log.info("peer-grpc serving on %s (mutual TLS) with a %s", self.address, store)
        elif config.tls:
            log.info(
                "peer-grpc serving on %s (TLS, no client certificates: sessions are not "
                "bound to identities) with a %s",
                self.address,
                store,
            )
        else:
            log.warning(
                "peer-grpc serving on %s in PLAINTEXT (no TLS): for loopback development "
                "only; anyone on the path can read calls and take over sessions (%s)",
                self.address,
                store,
            )

    def _serve_metrics(self) -> MetricsEndpoint | None:
        config = self.config
        if self.metrics is None or config.metrics_port is None:
            return None
        self.metrics.read_stores_with(self._store_readings, asyncio.get_running_loop())
        host = config.metrics_host or config.host
        try:
            endpoint = MetricsEndpoint(self.metrics, host, config.metrics_port)
        except OSError as error:
            raise ServerBindError(
                f"cannot serve metrics on {format_address(host, config.metrics_port)}: {error}"
            ) from error
        log.info("metrics on http://%s/metrics", format_address(host, endpoint.port))
        return endpoint

    async def _store_readings(self) -> StoreReadings:
        return StoreReadings(
            sessions=await self.manager.get_session_stats(),
            tasks_reached=dict(self.tasks.reached),
            tasks_running=self.tasks.running,
        )

    def _bind(self, server: grpc.aio.Server) -> int:
        config = self.config
        address = config.address
        try:
            if config.tls_cert is not None and config.tls_key is not None:
                credentials = server_credentials(
                    config.tls_cert, config.tls_key, config.tls_client_ca
                )
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise ServerBindError(
                f"cannot listen on {address}: the port is in use or the address is not local"
            ) from error
        if port == 0:
            raise ServerBindError(
                f"cannot listen on {address}: the port is in use or the address is not local"
            )
        return int(port)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls and tasks, let in-flight calls and running tasks finish
        within ``grace`` seconds, cancel the tasks still running, and stop."""
        if self._server is None:
            return
        server, self._server = self._server, None
        grace = self.config.shutdown_grace if grace is None else grace
        await self.health.enter_graceful_shutdown()
        for background in (self._sweeper, self._store_watch):
            # redis-py may turn a cancellation in the middle of a command into a
            # connection error, which these loops survive: cancel until it takes.
            while background is not None and not background.done():
                background.cancel()
                await asyncio.wait({background}, timeout=0.5)
        self._sweeper = self._store_watch = None
        try:
            # Together: calls that wait for tasks end as the tasks end (or are canceled).
            await asyncio.gather(self.tasks.shutdown(grace), server.stop(grace))
        finally:
            await self._close_metrics()
            await self.close_stores()
        log.info("peer-grpc stopped")

    async def _close_metrics(self) -> None:
        """Stop reading the stores for scrapes, and close the metrics endpoint."""
        if self.metrics is not None:
            self.metrics.stop_reading()
        if self._metrics_endpoint is not None:
            endpoint, self._metrics_endpoint = self._metrics_endpoint, None
            # Its shutdown waits for the serving thread's next poll: not on the loop.
            await asyncio.to_thread(endpoint.close)

    async def close_stores(self) -> None:
        """Close the session and task stores (:meth:`stop` does; call it yourself only
        for a server that never started)."""
        await self.tasks.store.close()
        await self.manager.store.close()

    async def wait_for_termination(self) -> None:
        """Wait until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await self.sweep()
            except StoreUnavailable as error:
                self._count_store_error("sweep")
                log.warning("sweep skipped: %s", error.message)
            except Exception:
                log.exception("sweep failed; retrying at the next interval")

    async def _watch_store(self) -> None:
        """Report NOT_SERVING on the health service while the store does not answer."""
        while True:
            try:
                await self.manager.store.check()
                await self.tasks.store.check()
            except StoreUnavailable as error:
                self._count_store_error("check")
                await self._set_store_available(False, error.message)
            except Exception as error:
                log.exception("the store check failed")
                await self._set_store_available(False, str(error))
            else:
                await self._set_store_available(True, "")
            await asyncio.sleep(self.config.store_check_interval)

    def _count_store_error(self, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.store_error(operation)

    async def _set_store_available(self, available: bool, why: str) -> None:
        if available == self.store_available:
            return
        self.store_available = available
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if available
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        if available:
            log.info("the store answers again: SERVING")
        else:
            log.warning("the store does not answer (%s): NOT_SERVING until it does", why)

    async def sweep(self) -> None:
        """Expire idle sessions, cancel the tasks of sessions gone, forget old tasks.

        The server does this every ``sweep_interval`` seconds by itself.
        """
        expired = await self.manager.cleanup_expired_sessions()
        if expired:
            log.info(
                "swept %d expired sessions",
                expired,
                extra={"event": "sessions_expired", "count": expired},
            )
        await self.tasks.cancel_orphans(self.manager.is_session_valid)
        await self.tasks.stop_ended_elsewhere()
        purged = await self.tasks.sweep()
        if purged:
            log.info("forgot %d finished tasks past their retention", purged)

    async def __aenter__(self) -> PeerServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(config: ServerConfig, *, tasks: TaskRegistry | None = None) -> None:
    """Run a server until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = PeerServer(config, tasks=tasks)
    try:
        await server.start()
    except BaseException:
        await server.close_stores()  # a Redis client was opened for the server
        raise
    try:
        await stop.wait()
        log.info("shutting down: draining calls for up to %.1fs", config.shutdown_grace)
    finally:
        await server.stop()


def _open_stores(
    config: ServerConfig, store: SessionStore | None, task_store: TaskStore | None
) -> tuple[SessionStore, TaskStore]:
    """The stores given, and for those not given the ones ``config.store`` names.

    Redis stores built here share one client (one connection pool).
    """
    if not config.uses_redis:
        # `is None`, not `or`: an empty memory store has a length of 0 and is falsy.
        if store is None:
            store = MemorySessionStore(retry_cache_size=config.retry_cache_size)
        if task_store is None:
            task_store = MemoryTaskStore(retention=config.task_retention)
        return store, task_store
    options = RedisOptions(command_timeout=config.redis_timeout)
    client = connect(config.store, options) if store is None or task_store is None else None
    if store is None:
        assert client is not None
        store = RedisSessionStore(
            client,
            key_prefix=config.redis_key_prefix,
            retry_cache_size=config.retry_cache_size,
            retry_after=options.retry_after,
        )
    if task_store is None:
        assert client is not None
        task_store = RedisTaskStore(
            client,
            key_prefix=config.redis_key_prefix,
            retention=config.task_retention,
            retry_after=options.retry_after,
            watch_poll=min(0.5, options.command_timeout / 2),
        )
    return store, task_store
