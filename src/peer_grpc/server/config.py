"""How a server runs: :class:`ServerConfig`, each of whose settings is declared once.

A field of :class:`ServerConfig` that can be set from outside carries its
:class:`Setting`: the ``peer-grpc serve`` flag, the ``PEER_GRPC_*`` variable (derived
from the flag), the help text and how to read it from a string. The command line is
built from these declarations (:mod:`peer_grpc.cli.serve`), so a new setting is one
new field here and nothing else.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from peer_grpc.core.limits import (
    DEFAULT_CLIENT_HANDSHAKE_BURST,
    DEFAULT_CLIENT_HANDSHAKE_RATE,
    DEFAULT_PEER_HANDSHAKE_BURST,
    DEFAULT_PEER_HANDSHAKE_RATE,
)
from peer_grpc.core.retry import DEFAULT_RETRY_CACHE
from peer_grpc.core.sequence import SequenceMode
from peer_grpc.core.settings import (
    ENV_PREFIX,
    parse_bool,
    parse_choice,
    parse_float,
    parse_int,
    parse_port,
    parse_positive,
)
from peer_grpc.core.window import DEFAULT_WINDOW, MAX_WINDOW, ring_size
from peer_grpc.sessions.manager import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_LIFETIME,
    DEFAULT_MAX_SESSIONS,
)
from peer_grpc.stores.memory.sessions import DEFAULT_ENDED_RETENTION, DEFAULT_MAX_ENDED_SESSIONS
from peer_grpc.stores.memory.tasks import DEFAULT_TASK_RETENTION
from peer_grpc.stores.redis.connection import CLUSTER_SCHEMES, check_store_url
from peer_grpc.stores.redis.keys import DEFAULT_KEY_PREFIX
from peer_grpc.stores.redis.sessions import CLUSTER_WAIT_REFUSED
from peer_grpc.tasks.manager import (
    DEFAULT_MAX_QUEUED_TASKS,
    DEFAULT_MAX_RUNNING_TASKS,
    DEFAULT_MAX_TASK_TIMEOUT,
    DEFAULT_MAX_TASKS_PER_SESSION,
    DEFAULT_TASK_TIMEOUT,
    TaskLimits,
)
from peer_grpc.tasks.registry import DEFAULT_MAX_RESULT_BYTES
from peer_grpc.tasks.reporting import DEFAULT_PROGRESS_INTERVAL
from peer_grpc.tasks.runner import DEFAULT_TASK_LEASE

__all__ = [
    "MEMORY_STORE",
    "OPERATIONS_GROUP",
    "SERVER_GROUP",
    "ServerConfig",
    "Setting",
    "format_address",
    "settings",
]

#: The store that keeps everything in this process.
MEMORY_STORE = "memory"


def _parse_sequence_mode(raw: str) -> SequenceMode:
    return SequenceMode[parse_choice(("strict", "window"))(raw).upper()]


def _default_peer_id() -> str:
    return f"peer-grpc@{socket.gethostname()}"[:128]


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


#: The ``--help`` sections of ``peer-grpc serve``, by what their options are about.
SERVER_GROUP = "server"
OPERATIONS_GROUP = "logs, metrics and traces"


@dataclass(frozen=True, slots=True)
class Setting:
    """How one :class:`ServerConfig` field is set from outside the program."""

    #: The ``peer-grpc serve`` option, e.g. ``--max-tasks``.
    flag: str
    #: What the setting does, for ``--help`` and the docs.
    help: str
    #: Reads the value from a command-line or environment string; raises ValueError.
    parse: Callable[[str], Any] = str
    #: The ``--help`` section it appears in.
    group: str = SERVER_GROUP
    #: What ``--help`` names the value, e.g. ``PEM``.
    metavar: str | None = None
    #: The allowed spellings, when there are few.
    choices: tuple[str, ...] | None = None
    #: How ``--help`` describes the default, when the value alone would not say it.
    default_text: str | None = None
    #: Whether it is on/off (``--x`` / ``--no-x``) rather than taking a value.
    switch: bool = False

    @property
    def env(self) -> str:
        """The environment variable that sets it: PEER_GRPC_ and the flag in capitals."""
        return ENV_PREFIX + self.flag.removeprefix("--").upper().replace("-", "_")


def _setting(default: Any = None, *, factory: Callable[[], Any] | None = None, **how: Any) -> Any:
    """A ServerConfig field with its :class:`Setting`."""
    metadata = {"setting": Setting(**how)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def settings() -> list[tuple[str, Setting, Any]]:
    """Every settable field of :class:`ServerConfig`: its name, its Setting, its default."""
    defaults = ServerConfig()
    return [
        (name, how, getattr(defaults, name))
        for name, how in ((f.name, f.metadata.get("setting")) for f in fields(ServerConfig))
        if how is not None
    ]


_TLS = "TLS (without --tls-cert the server speaks plaintext: for loopback development only)"
_LIMITS = "limits"
_TASKS = "tasks"
_STORE = "store"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How a server runs. Each settable field declares its ``peer-grpc serve`` flag and
    ``PEER_GRPC_*`` variable (see :class:`Setting`)."""

    host: str = _setting("127.0.0.1", flag="--host", help="the address to listen on")
    #: 0 picks a free port (see :attr:`PeerServer.port`).
    port: int = _setting(
        50051, flag="--port", parse=parse_port, help="the port to listen on; 0: a free one"
    )
    #: Seconds without activity after which a session expires.
    idle_timeout: float = _setting(
        DEFAULT_IDLE_TIMEOUT,
        flag="--idle-timeout",
        parse=parse_positive,
        help="seconds without activity before a session expires",
    )
    #: Seconds between heartbeats that peers are asked for; a third of the idle timeout if unset.
    heartbeat_interval: float | None = _setting(
        None,
        flag="--heartbeat-interval",
        parse=parse_positive,
        help="seconds between heartbeats asked of peers",
        default_text="a third of the idle timeout",
    )
    #: Seconds an ended session is remembered, so that a late call learns why it ended.
    ended_session_retention: float = _setting(
        DEFAULT_ENDED_RETENTION,
        flag="--ended-session-retention",
        parse=parse_float,
        help="seconds an ended session is remembered, so that a late call is told why "
        "it ended (SESSION_TERMINATED, SESSION_EXPIRED) rather than SESSION_NOT_FOUND",
    )
    #: Ended sessions the memory store remembers at most; beyond, the oldest go early.
    max_ended_sessions: int = _setting(
        DEFAULT_MAX_ENDED_SESSIONS,
        flag="--max-ended-sessions",
        parse=parse_int,
        group=_LIMITS,
        help="ended sessions remembered at most by the memory store (about 1.2 KB each); "
        "beyond, the oldest are forgotten early (Redis keeps them for the retention)",
    )
    #: Seconds between background sweeps of expired sessions.
    sweep_interval: float = _setting(
        5.0,
        flag="--sweep-interval",
        parse=parse_positive,
        help="seconds between sweeps of expired sessions",
    )
    #: Let Ping, Status and Describe through without session metadata, for older peers.
    allow_sessionless: bool = _setting(
        False,
        flag="--allow-sessionless",
        parse=parse_bool,
        switch=True,
        help="let Ping, Status and Describe through without session metadata",
    )
    #: This server's own peer id.
    server_peer_id: str = _setting(
        flag="--peer-id", factory=_default_peer_id, help="this server's own peer id"
    )
    #: Seconds that in-flight calls get to finish on shutdown.
    shutdown_grace: float = _setting(
        5.0,
        flag="--shutdown-grace",
        parse=parse_float,
        group=_LIMITS,
        help="seconds in-flight calls get on SIGTERM",
    )
    #: How new sessions order sequences: strict (exactly the next) or window (anti-replay).
    sequence_mode: SequenceMode = _setting(  # noqa: RUF009 - an immutable enum member
        SequenceMode.STRICT,
        flag="--sequence-mode",
        parse=_parse_sequence_mode,
        choices=("strict", "window"),
        help="strict: each call carries exactly the next sequence; window: each sequence "
        "once, in any order, within --replay-window of the highest",
    )
    #: The anti-replay window's width in window mode.
    replay_window: int = _setting(
        DEFAULT_WINDOW,
        flag="--replay-window",
        parse=parse_int,
        help=f"the anti-replay window's width in window mode, 1-{MAX_WINDOW}",
    )
    #: How many accepted calls per session are remembered to answer resends.
    retry_cache_size: int = _setting(
        DEFAULT_RETRY_CACHE,
        flag="--retry-cache",
        parse=parse_int,
        help="accepted calls per session remembered to answer resends",
    )
    #: Seconds a task may run when its DelegateTask names no timeout.
    task_timeout: float = _setting(
        DEFAULT_TASK_TIMEOUT,
        flag="--task-timeout",
        parse=parse_positive,
        group=_TASKS,
        help="seconds a task may run when its request names no timeout",
    )
    #: The longest timeout a DelegateTask may ask for.
    max_task_timeout: float = _setting(
        DEFAULT_MAX_TASK_TIMEOUT,
        flag="--max-task-timeout",
        parse=parse_positive,
        group=_TASKS,
        help="the longest timeout a task may ask for",
    )
    #: Tasks running at once in this server (also its worker threads for plain handlers).
    max_running_tasks: int = _setting(
        DEFAULT_MAX_RUNNING_TASKS,
        flag="--max-tasks",
        parse=parse_int,
        group=_TASKS,
        help="tasks running at once: on this server (memory store), or over every "
        "runner together (Redis); also this server's worker threads",
    )
    #: Tasks running at once for one session (on Redis: queued or running).
    max_tasks_per_session: int = _setting(
        DEFAULT_MAX_TASKS_PER_SESSION,
        flag="--max-tasks-per-session",
        parse=parse_int,
        group=_TASKS,
        help="tasks running at once for one session (on Redis, queued ones count too)",
    )
    #: On Redis: tasks that may wait SUBMITTED while --max-tasks are running.
    max_queued_tasks: int = _setting(
        DEFAULT_MAX_QUEUED_TASKS,
        flag="--max-queued-tasks",
        parse=parse_int,
        group=_TASKS,
        help="on Redis: tasks that may wait in the queue while --max-tasks run; over "
        "it DelegateTask is refused RESOURCE_EXHAUSTED",
    )
    #: On Redis: seconds a runner holds a task without renewing before it is reclaimed.
    task_lease: float = _setting(
        DEFAULT_TASK_LEASE,
        flag="--task-lease",
        parse=parse_float,
        group=_TASKS,
        help="on Redis: seconds before a task whose runner stopped renewing is run again "
        "(retryable handlers) or failed WORKER_LOST",
    )
    #: On Redis: whether this server runs queued tasks itself, or is a pure front end.
    run_tasks: bool = _setting(
        True,
        flag="--run-tasks",
        parse=parse_bool,
        switch=True,
        group=_TASKS,
        help="on Redis: run queued tasks in this server too; --no-run-tasks makes a pure "
        "front end that leaves them to `peer-grpc worker` processes",
    )
    #: The largest handler result kept, in bytes of compact JSON; larger fails the task.
    max_task_result_bytes: int = _setting(
        DEFAULT_MAX_RESULT_BYTES,
        flag="--max-task-result-bytes",
        parse=parse_int,
        group=_TASKS,
        help="the largest task result kept, in bytes of JSON; a larger one fails the task "
        "with RESULT_TOO_LARGE",
    )
    #: Seconds between two stored progress reports of one task, at least.
    task_progress_interval: float = _setting(
        DEFAULT_PROGRESS_INTERVAL,
        flag="--task-progress-interval",
        parse=parse_float,
        group=_TASKS,
        help="seconds between two stored progress reports of one task: a handler that "
        "reports more often is coalesced, the latest report winning",
    )
    #: Seconds a finished task is kept for GetTask and ListTasks before it is swept.
    task_retention: float = _setting(
        DEFAULT_TASK_RETENTION,
        flag="--task-retention",
        parse=parse_float,
        group=_TASKS,
        help="seconds a finished task stays readable before it is swept",
    )
    #: Where sessions and tasks live: ``memory`` (this process only) or a Redis URL
    #: (``redis://host:port/db``, ``rediss://`` for TLS, ``unix://``, or
    #: ``redis-sentinel://host:port,.../service[/db]`` through Sentinel) shared by replicas.
    store: str = _setting(
        MEMORY_STORE,
        flag="--store",
        group=_STORE,
        help="where sessions and tasks live: 'memory' (this process) or a Redis URL such as "
        "redis://127.0.0.1:6379/0 shared by every replica, or "
        "redis-sentinel://HOST:PORT[,HOST:PORT...]/SERVICE for a primary with replicas "
        "found through Sentinel, or redis-cluster://HOST:PORT[,HOST:PORT...] for a Redis "
        "Cluster",
    )
    #: The start of every Redis key, so that deployments can share one Redis.
    redis_key_prefix: str = _setting(
        DEFAULT_KEY_PREFIX,
        flag="--redis-key-prefix",
        group=_STORE,
        help="the start of every Redis key, to share one Redis",
    )
    #: Seconds a Redis command may take before the call gets UNAVAILABLE.
    redis_timeout: float = _setting(
        1.0,
        flag="--redis-timeout",
        parse=parse_positive,
        group=_STORE,
        help="seconds a Redis command may take before a call fails UNAVAILABLE",
    )
    #: On Redis: replicas of the primary that must have an admission before its call runs.
    redis_wait_replicas: int = _setting(
        0,
        flag="--redis-wait-replicas",
        parse=parse_int,
        group=_STORE,
        help="on Redis with replicas: run a call only once N replicas have its admission "
        "(Redis WAIT, within half of --redis-timeout), so that a failover cannot accept a "
        "sequence twice; 0 (the default) does not wait",
    )
    #: Seconds between checks of the store, whose answer the health service reports.
    store_check_interval: float = 1.0
    #: The server's TLS certificate chain and private key (PEM files); plaintext without.
    tls_cert: str | None = _setting(
        flag="--tls-cert", metavar="PEM", group=_TLS, help="certificate chain"
    )
    tls_key: str | None = _setting(flag="--tls-key", metavar="PEM", group=_TLS, help="private key")
    #: The CA (PEM file) that issues client certificates: with it, mutual TLS, and
    #: every session is bound to the certificate identity that opened it.
    tls_client_ca: str | None = _setting(
        flag="--tls-client-ca",
        metavar="PEM",
        group=_TLS,
        help="require client certificates from this CA (mutual TLS) and bind each session "
        "to the certificate that opened it",
    )
    #: A JSON file of certificate identity -> peer ids it may claim besides its own.
    identity_map: str | None = _setting(
        flag="--identity-map",
        metavar="JSON",
        group=_TLS,
        help="a JSON object of certificate identity -> peer ids it may claim besides its own "
        '(["*"]: any)',
    )
    #: Live sessions held at most (0: no limit); a Handshake beyond gets RESOURCE_EXHAUSTED.
    max_sessions: int = _setting(
        DEFAULT_MAX_SESSIONS,
        flag="--max-sessions",
        parse=parse_int,
        group=_LIMITS,
        help="live sessions held at most; 0: no limit",
    )
    #: Seconds a session lives at most, however active (0: no limit).
    max_session_lifetime: float = _setting(
        DEFAULT_MAX_LIFETIME,
        flag="--max-session-lifetime",
        parse=parse_float,
        group=_LIMITS,
        help="seconds a session lives at most however active; 0: no limit",
    )
    #: Handshakes a second one peer id may make on average (0: no limit), and in a burst.
    peer_handshake_rate: float = _setting(
        DEFAULT_PEER_HANDSHAKE_RATE,
        flag="--peer-handshake-rate",
        parse=parse_float,
        group=_LIMITS,
        help="handshakes/s per peer id; 0: off",
    )
    peer_handshake_burst: int = _setting(
        DEFAULT_PEER_HANDSHAKE_BURST,
        flag="--peer-handshake-burst",
        parse=parse_int,
        group=_LIMITS,
        help="handshakes in a burst per peer id",
    )
    #: Handshakes a second one client (certificate identity, else address) may make.
    client_handshake_rate: float = _setting(
        DEFAULT_CLIENT_HANDSHAKE_RATE,
        flag="--client-handshake-rate",
        parse=parse_float,
        group=_LIMITS,
        help="handshakes/s per client (certificate identity, else address); 0: off",
    )
    client_handshake_burst: int = _setting(
        DEFAULT_CLIENT_HANDSHAKE_BURST,
        flag="--client-handshake-burst",
        parse=parse_int,
        group=_LIMITS,
        help="handshakes in a burst per client",
    )
    #: The largest request message accepted, in bytes; larger ones get RESOURCE_EXHAUSTED.
    max_request_bytes: int = _setting(
        4 * 1024 * 1024,
        flag="--max-request-bytes",
        parse=parse_int,
        group=_LIMITS,
        help="the largest request message",
    )
    #: The largest request metadata accepted, in bytes as HTTP/2 counts it (each
    #: header's name and value plus 32, gRPC's own headers included).
    max_metadata_bytes: int = _setting(
        16 * 1024,
        flag="--max-metadata-bytes",
        parse=parse_int,
        group=_LIMITS,
        help="the largest request metadata, as HTTP/2 counts it",
    )
    #: Calls in flight on one client connection at most; more wait for a free slot.
    max_concurrent_streams: int = _setting(
        100,
        flag="--max-concurrent-streams",
        parse=parse_int,
        group=_LIMITS,
        help="calls in flight on one connection",
    )
    #: Seconds a client must leave between keepalive pings; one that pings more
    #: often is disconnected (HTTP/2 GOAWAY "too_many_pings").
    min_client_ping_interval: float = _setting(
        10.0,
        flag="--min-client-ping-interval",
        parse=parse_positive,
        group=_LIMITS,
        help="seconds a client must leave between keepalive pings",
    )
    #: Share the port with other processes (SO_REUSEPORT), as ``serve --workers``
    #: does. Off otherwise, so that a port another server holds fails to bind.
    reuse_port: bool = False
    #: The port of the Prometheus endpoint (``/metrics``); None: no metrics, 0: a free port.
    metrics_port: int | None = _setting(
        flag="--metrics-port",
        parse=parse_port,
        group=OPERATIONS_GROUP,
        help="serve Prometheus metrics on this port at /metrics; with --workers N, worker i "
        "serves on this port + i",
        default_text="no metrics",
    )
    #: The address the metrics endpoint listens on; the gRPC host when None.
    metrics_host: str | None = _setting(
        flag="--metrics-host",
        group=OPERATIONS_GROUP,
        help="the address the metrics endpoint listens on",
        default_text="--host's",
    )
    #: Log every PeerService call as one event (method, code, duration, session, peer).
    log_calls: bool = _setting(
        False,
        flag="--log-calls",
        parse=parse_bool,
        switch=True,
        group=OPERATIONS_GROUP,
        help="log every call: method, status code, duration, session id prefix and peer",
    )
    #: Trace every call with OpenTelemetry (the ``otel`` extra), configured by the
    #: standard OTEL_* variables unless a tracer provider is given to the server.
    otel: bool = _setting(
        False,
        flag="--otel",
        parse=parse_bool,
        switch=True,
        group=OPERATIONS_GROUP,
        help="trace calls with OpenTelemetry, exported as the OTEL_* variables say "
        "(needs pip install 'peer-grpc[otel]')",
    )

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
        if self.task_retention < 0 or self.ended_session_retention < 0:
            raise ValueError("task_retention and ended_session_retention must not be negative")
        if self.max_ended_sessions < 0:
            raise ValueError("max_ended_sessions must not be negative")
        if self.store != MEMORY_STORE:
            try:
                check_store_url(self.store)
            except ValueError as error:
                raise ValueError(
                    f"store must be {MEMORY_STORE!r} or a Redis URL: {error}"
                ) from None
        if self.redis_timeout <= 0 or self.store_check_interval <= 0:
            raise ValueError("redis_timeout and store_check_interval must be positive")
        if self.redis_wait_replicas < 0:
            raise ValueError("redis_wait_replicas must not be negative")
        if self.redis_wait_replicas and self.store.startswith(CLUSTER_SCHEMES):
            raise ValueError(CLUSTER_WAIT_REFUSED)
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
            max_result_bytes=self.max_task_result_bytes,
            max_queued=self.max_queued_tasks,
            lease=self.task_lease,
            progress_interval=self.task_progress_interval,
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
