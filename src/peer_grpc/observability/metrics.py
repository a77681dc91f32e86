"""Prometheus metrics of a server (``peer-grpc serve --metrics-port``).

Per call, as :class:`ServerMetrics` observes it (see :mod:`peer_grpc.observability.calls`):

- ``grpc_server_handled_total{grpc_service, grpc_method, grpc_type, grpc_code}``:
  calls answered, by method and status code (the names and labels of the
  go-grpc-prometheus convention, so existing gRPC dashboards read them);
- ``grpc_server_handling_seconds{grpc_service, grpc_method, grpc_type}``: how
  long calls took, as a histogram;
- ``peer_grpc_sequence_errors_total{kind}``: calls refused for their sequence,
  ``gap`` or ``replay``;
- ``peer_grpc_store_errors_total{operation}``: store failures, by what failed:
  a ``call``, the ``sweep``, the health ``check``, or reading ``stats``;
- ``peer_grpc_fenced_calls_total``: calls refused SESSION_FENCED, after a Redis
  failover or restart, until their peers resumed (alert on it: the store may have
  lost acknowledged writes).

Read from the stores at each scrape:

- ``peer_grpc_sessions{state}``: sessions by state (in the store, so with Redis
  the whole deployment's); ``peer_grpc_sessions_created_total``, ``..._expired_total``,
  ``..._terminated_total``;
- ``peer_grpc_tasks_total{state}``: tasks of this server that reached each
  state; ``peer_grpc_tasks_running``: tasks this server runs now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from peer_grpc.core.errors import SequenceError, SessionFenced, StoreUnavailable
from peer_grpc.core.session import SessionStats
from peer_grpc.core.task import TaskState
from peer_grpc.observability.calls import CallEnded, CallStarted
from peer_grpc.wire.contract import SERVICE_NAME

__all__ = ["LATENCY_BUCKETS", "MetricsEndpoint", "ServerMetrics", "StoreReadings"]

log = logging.getLogger(__name__)

#: Histogram buckets in seconds: from a fraction of a millisecond (a Ping on loopback)
#: to the long waits of DelegateTask.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Seconds a scrape waits for the stores' figures before leaving them out.
STATS_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class StoreReadings:
    """What a scrape reads from the stores and the task manager."""

    sessions: SessionStats
    #: Tasks of this server that reached each state.
    tasks_reached: Mapping[TaskState, int]
    #: Tasks this server runs now.
    tasks_running: int


class ServerMetrics:
    """A server's Prometheus metrics, in a registry of their own.

    It is a :class:`~peer_grpc.observability.calls.CallObserver`: the server tells it of
    every call. :meth:`read_stores_with` adds what the stores report at each scrape.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._handled = Counter(
            "grpc_server_handled",
            "PeerService calls answered, by method and status code.",
            ("grpc_service", "grpc_method", "grpc_type", "grpc_code"),
            registry=self.registry,
        )
        self._handling = Histogram(
            "grpc_server_handling_seconds",
            "Seconds from a PeerService call's arrival to its answer (a stream's end).",
            ("grpc_service", "grpc_method", "grpc_type"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._sequence_errors = Counter(
            "peer_grpc_sequence_errors",
            "Calls refused for their peer-sequence: gap (ahead) or replay (used or too old).",
            ("kind",),
            registry=self.registry,
        )
        self._store_errors = Counter(
            "peer_grpc_store_errors",
            "Times the session or task store did not answer, by what needed it.",
            ("operation",),
            registry=self.registry,
        )
        self._fenced = Counter(
            "peer_grpc_fenced_calls",
            "Calls refused SESSION_FENCED: the store changed primary or restarted and may "
            "have lost the session's latest records; each session's peer resumes once.",
            registry=self.registry,
        )
        # The label children of each (method, code): looked up once, not on every call.
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        self._stores = _StoreCollector(self)
        self.registry.register(self._stores)

    def call_started(self, call: CallStarted, context: grpc.aio.ServicerContext) -> None:
        """Nothing to do until the call ends."""

    def call_ended(self, call: CallEnded) -> None:
        """Count the call by method and code, time it, and count why it was refused."""
        key = (call.method, call.code)
        children = self._children.get(key)
        if children is None:
            kind = "server_stream" if call.streaming else "unary"
            children = self._children[key] = (
                self._handled.labels(SERVICE_NAME, call.method, kind, call.code.name),
                self._handling.labels(SERVICE_NAME, call.method, kind),
            )
        handled, handling = children
        handled.inc()
        handling.observe(call.duration)
        error = call.error
        if error is None:
            return
        if isinstance(error, SequenceError):
            self._sequence_errors.labels(error.kind.name.lower()).inc()
        elif isinstance(error, StoreUnavailable):
            self.store_error("call")
        elif isinstance(error, SessionFenced):
            self._fenced.inc()

    def store_error(self, operation: str) -> None:
        """Count a store failure met by ``operation`` (call, sweep, check or stats)."""
        self._store_errors.labels(operation).inc()

    def read_stores_with(
        self, read: Callable[[], Awaitable[StoreReadings]], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Report session and task figures at each scrape, from ``read`` run on ``loop``
        (until :meth:`stop_reading`)."""
        self._stores.source = (read, loop)

    def stop_reading(self) -> None:
        """Leave the session and task figures out of scrapes from now on (the stores
        are closing)."""
        self._stores.source = None


_Source = tuple[Callable[[], Awaitable[StoreReadings]], asyncio.AbstractEventLoop]


class _StoreCollector(Collector):
    """Session and task figures, read from the server's event loop at each scrape.

    Scrapes are answered on prometheus-client's own thread, while the stores belong
    to the server's loop: the reading runs there, and the scrape waits for it.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        #: Where the figures come from; None while the server does not serve.
        self.source: _Source | None = None

    def describe(self) -> Iterable[Metric]:
        # Registering would otherwise call collect() to learn the names, from the loop
        # itself, which would then wait on itself.
        return ()

    def collect(self) -> Iterable[Metric]:
        readings = self._readings()
        if readings is None:
            return
        sessions = readings.sessions
        by_state = GaugeMetricFamily(
            "peer_grpc_sessions", "Sessions in the store, by state.", labels=("state",)
        )
        for state, count in (
            ("handshaking", sessions.handshaking),
            ("established", sessions.established),
            ("terminated", sessions.terminated),
            ("expired", sessions.expired),
        ):
            by_state.add_metric((state,), count)
        yield by_state
        for name, text, value in (
            ("created", "Sessions opened", sessions.created_total),
            ("expired", "Sessions that expired", sessions.expired_total),
            ("terminated", "Sessions terminated or replaced", sessions.terminated_total),
        ):
            yield CounterMetricFamily(
                f"peer_grpc_sessions_{name}", f"{text}, since the store was created.", value
            )
        tasks = CounterMetricFamily(
            "peer_grpc_tasks",
            "Tasks of this server that reached each state.",
            labels=("state",),
        )
        for task_state in TaskState:
            count = readings.tasks_reached.get(task_state, 0)
            tasks.add_metric((task_state.name.lower(),), count)
        yield tasks
        yield GaugeMetricFamily(
            "peer_grpc_tasks_running", "Tasks this server runs now.", readings.tasks_running
        )

    def _readings(self) -> StoreReadings | None:
        source = self.source
        if source is None:
            return None
        read, loop = source
        try:
            if asyncio.get_running_loop() is loop:
                return None  # a scrape from the loop itself could not wait for it
        except RuntimeError:
            pass  # no loop in this thread: the usual case, prometheus-client's thread
        if loop.is_closed():
            return None
        future = asyncio.run_coroutine_threadsafe(_awaited(read), loop)
        try:
            return future.result(STATS_TIMEOUT)
        except Exception as error:  # the store is down or slow: the rest of the scrape stands
            future.cancel()
            if self.source is source:  # not a reading cut short by the server stopping
                self._metrics.store_error("stats")
                log.warning("metrics: session and task figures left out of a scrape: %r", error)
            return None


async def _awaited(read: Callable[[], Awaitable[StoreReadings]]) -> StoreReadings:
    return await read()


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes, on a thread of prometheus-client's."""

    def __init__(self, metrics: ServerMetrics, host: str, port: int) -> None:
        """Serve ``metrics`` on ``host:port`` (0: a free port, see :attr:`port`).

        Raises:
            OSError: the address cannot be bound.
        """
        self._server, self._thread = start_http_server(port, host, metrics.registry)
        self.port: int = self._server.server_address[1]

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
