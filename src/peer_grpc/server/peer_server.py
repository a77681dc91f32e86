"""The server: the PeerService wired to its interceptors, health, reflection, sweeper and stores."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from peer_grpc.core.clock import Clock
from peer_grpc.core.errors import StoreUnavailable
from peer_grpc.core.identity import PeerIdPolicy
from peer_grpc.core.limits import (
    HandshakeThrottle,
)
from peer_grpc.observability.calls import CallObserver
from peer_grpc.observability.logs import CallLog
from peer_grpc.observability.metrics import MetricsEndpoint, ServerMetrics, StoreReadings
from peer_grpc.observability.tracing import CallTracing
from peer_grpc.server.config import ServerConfig, format_address
from peer_grpc.server.handlers import peer_method_handlers
from peer_grpc.server.interceptors import Gate, peer_interceptor
from peer_grpc.server.reflection import enable_reflection
from peer_grpc.server.servicer import PeerServicer
from peer_grpc.server.store_factory import open_stores, open_token_buckets
from peer_grpc.server.store_watch import StoreWatch, set_health
from peer_grpc.server.validation import request_validators
from peer_grpc.sessions.manager import (
    SessionManager,
)
from peer_grpc.stores.protocols import SessionStore, TaskStore
from peer_grpc.tasks.manager import (
    TaskManager,
)
from peer_grpc.tasks.registry import TaskRegistry, default_registry
from peer_grpc.wire.contract import SERVICE_NAME
from peer_grpc.wire.tls import server_credentials

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider as AnyTracerProvider

__all__ = ["PeerServer", "ServerBindError", "serve"]

log = logging.getLogger(__name__)

#: Seconds a stopping server answers new calls SHUTTING_DOWN before gRPC stops taking them.
_DRAIN = 0.25


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
        store, task_store = open_stores(config, store, task_store)
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
            per_client=open_token_buckets(
                store, "client", config.client_handshake_rate, config.client_handshake_burst
            ),
            per_peer=open_token_buckets(
                store, "peer", config.peer_handshake_rate, config.peer_handshake_burst
            ),
        )
        self._outer_interceptors = tuple(outer_interceptors)
        self.tasks = TaskManager(
            tasks if tasks is not None else default_registry(),
            task_store,
            clock=self.manager.clock,
            limits=config.task_limits,
            run_tasks=config.run_tasks,
        )
        self.manager.on_session_end(lambda session: self.tasks.cancel_session(session.session_id))
        self.health = health.aio.HealthServicer()
        #: The server's Prometheus metrics, when ``config.metrics_port`` asks for them.
        self.metrics = ServerMetrics() if config.metrics_port is not None else None
        self._observers = [*self._call_observers(tracer_provider), *observers]
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._store_watch = StoreWatch(
            (store, task_store),
            self.health,
            config.store_check_interval,
            on_unavailable=lambda: self._count_store_error("check"),
        )
        self._store_watching: asyncio.Task[None] | None = None
        self._gate = Gate()
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
    def store_available(self) -> bool:
        """Whether the stores answered at the last check (what health reports)."""
        return self._store_watch.available

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
            max_request_bytes=config.max_request_bytes,
        )
        guard = peer_interceptor(
            self.manager,
            request_validators(self.tasks),
            allow_sessionless=config.allow_sessionless,
            check_identity=config.mutual_tls,
            observers=self._observers,
            gate=self._gate,
        )
        server = grpc.aio.server(
            interceptors=self._outer_interceptors, options=config.grpc_options()
        )
        # The interceptor's checks are wrapped around each method once, here, rather than
        # found again on every call; registered methods are routed by grpc's core, as
        # generated code registers them. The same handlers serve generic lookups, which
        # is how grpc finds them for calls that pass through outer interceptors.
        handlers = guard.guard(peer_method_handlers(servicer))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
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
        await set_health(self.health, health_pb2.HealthCheckResponse.SERVING)
        self.tasks.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="peer-grpc-sweeper")
        self._store_watching = asyncio.create_task(
            self._store_watch.run(), name="peer-grpc-store-watch"
        )
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
        within ``grace`` seconds, cancel the tasks still running, and stop.

        New calls are answered UNAVAILABLE (``SHUTTING_DOWN``) from the first moment,
        which clients resend to another replica. gRPC's own server is stopped only
        after a short drain, so that calls it already received are answered that way
        too rather than cut off CANCELLED (grpc/grpc#41785).
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        grace = self.config.shutdown_grace if grace is None else grace
        self._gate.close()
        await self.health.enter_graceful_shutdown()
        for background in (self._sweeper, self._store_watching):
            # redis-py may turn a cancellation in the middle of a command into a
            # connection error, which these loops survive: cancel until it takes.
            while background is not None and not background.done():
                background.cancel()
                await asyncio.wait({background}, timeout=0.5)
        self._sweeper = self._store_watching = None
        try:
            # Together: calls that wait for tasks end as the tasks end (or are canceled).
            await asyncio.gather(self.tasks.shutdown(grace), self._drain_and_stop(server, grace))
        finally:
            await self._close_metrics()
            await self.close_stores()
        log.info("peer-grpc stopped")

    async def _drain_and_stop(self, server: grpc.aio.Server, grace: float) -> None:
        """Keep gRPC handing calls to the closed gate for a moment, then stop it."""
        drain = min(_DRAIN, grace / 2)
        await asyncio.sleep(drain)
        await server.stop(grace - drain)

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

    def _count_store_error(self, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.store_error(operation)

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
