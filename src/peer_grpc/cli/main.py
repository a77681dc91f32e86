"""The ``peer-grpc`` command: ``serve``, and client commands that print JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc._version import __version__
from peer_grpc.client.peer_client import PeerClient, SessionTicket
from peer_grpc.core.errors import PeerError
from peer_grpc.core.identity import PeerIdPolicy
from peer_grpc.core.sequence import SequenceMode
from peer_grpc.core.task import TaskState
from peer_grpc.core.window import MAX_WINDOW
from peer_grpc.observability.logs import LOG_FORMATS, configure_logging
from peer_grpc.observability.tracing import tracer_provider_from_env
from peer_grpc.server.peer_server import ServerBindError, ServerConfig, serve
from peer_grpc.server.workers import run_workers
from peer_grpc.tasks.registry import TaskRegistry
from peer_grpc.wire.tls import channel_credentials

__all__ = ["main"]

_ENV_PREFIX = "PEER_GRPC_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env(name: str, convert: Callable[[str], Any], default: Any) -> Any:
    """The value of PEER_GRPC_<NAME>, converted, or ``default`` when unset."""
    raw = os.environ.get(_ENV_PREFIX + name)
    if raw is None:
        return default
    try:
        return convert(raw)
    except ValueError as error:
        raise SystemExit(f"peer-grpc: error: {_ENV_PREFIX}{name}={raw!r}: {error}") from None


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _one_of(*choices: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return convert


def _positive(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _at_least_one(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be 0-65535")
    return value


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = ServerConfig()
    serve_cmd = commands.add_parser(
        "serve",
        help="run a server",
        description="Run a peer-grpc server. Every option can also come from the "
        "PEER_GRPC_<OPTION> environment variable (e.g. PEER_GRPC_PORT).",
    )
    serve_cmd.add_argument("--host", default=_env("HOST", str, defaults.host))
    serve_cmd.add_argument("--port", type=_port, default=_env("PORT", _port, defaults.port))
    serve_cmd.add_argument(
        "--idle-timeout",
        type=_positive,
        default=_env("IDLE_TIMEOUT", _positive, defaults.idle_timeout),
        help="seconds without activity before a session expires (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--heartbeat-interval",
        type=_positive,
        default=_env("HEARTBEAT_INTERVAL", _positive, None),
        help="seconds between heartbeats asked of peers (default: a third of the idle timeout)",
    )
    serve_cmd.add_argument(
        "--sweep-interval",
        type=_positive,
        default=_env("SWEEP_INTERVAL", _positive, defaults.sweep_interval),
        help="seconds between sweeps of expired sessions (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--sequence-mode",
        choices=["strict", "window"],
        type=str.lower,
        default=_env(
            "SEQUENCE_MODE", _one_of("strict", "window"), defaults.sequence_mode.name.lower()
        ),
        help="strict: each call carries exactly the next sequence; window: each sequence "
        "once, in any order, within --replay-window of the highest (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--replay-window",
        type=int,
        default=_env("REPLAY_WINDOW", int, defaults.replay_window),
        help=f"the anti-replay window's width in window mode, 1-{MAX_WINDOW} "
        "(default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--retry-cache",
        type=int,
        default=_env("RETRY_CACHE", int, defaults.retry_cache_size),
        help="accepted calls per session remembered to answer resends (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--allow-sessionless",
        action=argparse.BooleanOptionalAction,
        default=_env("ALLOW_SESSIONLESS", _flag, False),
        help="let Ping and Status through without session metadata (default: off)",
    )
    serve_cmd.add_argument(
        "--peer-id", default=_env("PEER_ID", str, defaults.server_peer_id), help="this server's id"
    )
    serve_cmd.add_argument(
        "--tasks",
        metavar="MODULE:ATTRIBUTE",
        default=_env("TASKS", str, None),
        help="the TaskRegistry of task handlers to serve, e.g. mypackage.tasks:registry "
        "(default: the built-in echo and sleep)",
    )
    serve_cmd.add_argument(
        "--task-timeout",
        type=_positive,
        default=_env("TASK_TIMEOUT", _positive, defaults.task_timeout),
        help="seconds a task may run when its request names no timeout (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--max-task-timeout",
        type=_positive,
        default=_env("MAX_TASK_TIMEOUT", _positive, defaults.max_task_timeout),
        help="the longest timeout a task may ask for (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--max-tasks",
        type=int,
        default=_env("MAX_TASKS", int, defaults.max_running_tasks),
        help="tasks running at once on this server; also its worker threads (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--max-tasks-per-session",
        type=int,
        default=_env("MAX_TASKS_PER_SESSION", int, defaults.max_tasks_per_session),
        help="tasks running at once for one session (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--task-retention",
        type=float,
        default=_env("TASK_RETENTION", float, defaults.task_retention),
        help="seconds a finished task stays readable before it is swept (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--store",
        default=_env("STORE", str, defaults.store),
        help="where sessions and tasks live: 'memory' (this process) or a Redis URL such as "
        "redis://127.0.0.1:6379/0 shared by every replica (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--redis-key-prefix",
        default=_env("REDIS_KEY_PREFIX", str, defaults.redis_key_prefix),
        help="the start of every Redis key, to share one Redis (default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--redis-timeout",
        type=_positive,
        default=_env("REDIS_TIMEOUT", _positive, defaults.redis_timeout),
        help="seconds a Redis command may take before a call fails UNAVAILABLE "
        "(default: %(default)s)",
    )
    serve_cmd.add_argument(
        "--workers",
        type=_at_least_one,
        default=_env("WORKERS", _at_least_one, 1),
        help="server processes sharing the port (SO_REUSEPORT), for more than one core; "
        "more than 1 needs a Redis --store and a fixed --port (default: %(default)s)",
    )
    _add_serve_security(serve_cmd, defaults)
    _add_serve_operations(serve_cmd)


def _add_serve_operations(serve_cmd: argparse.ArgumentParser) -> None:
    """The serve options of logs, metrics and traces."""
    operations = serve_cmd.add_argument_group("logs, metrics and traces")
    operations.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", _one_of("debug", "info", "warning", "error"), "info").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    operations.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        type=str.lower,
        default=_env("LOG_FORMAT", _one_of(*LOG_FORMATS), "text"),
        help="one event per line, as text or as a JSON object (default: %(default)s)",
    )
    operations.add_argument(
        "--log-calls",
        action=argparse.BooleanOptionalAction,
        default=_env("LOG_CALLS", _flag, False),
        help="log every call: method, status code, duration, session id prefix and peer "
        "(default: off)",
    )
    operations.add_argument(
        "--metrics-port",
        type=_port,
        default=_env("METRICS_PORT", _port, None),
        help="serve Prometheus metrics on this port at /metrics; with --workers N, worker i "
        "serves on this port + i (default: no metrics)",
    )
    operations.add_argument(
        "--metrics-host",
        default=_env("METRICS_HOST", str, None),
        help="the address the metrics endpoint listens on (default: --host's)",
    )
    operations.add_argument(
        "--otel",
        action=argparse.BooleanOptionalAction,
        default=_env("OTEL", _flag, False),
        help="trace calls with OpenTelemetry, exported as the OTEL_* variables say "
        "(needs pip install 'peer-grpc[otel]'; default: off)",
    )


#: The serve options that set a limit: (flag, ServerConfig field, type, help).
_LIMIT_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--max-sessions", "max_sessions", int, "live sessions held at most; 0: no limit"),
    (
        "--max-session-lifetime",
        "max_session_lifetime",
        float,
        "seconds a session lives at most however active; 0: no limit",
    ),
    ("--peer-handshake-rate", "peer_handshake_rate", float, "handshakes/s per peer id; 0: off"),
    ("--peer-handshake-burst", "peer_handshake_burst", int, "handshakes in a burst per peer id"),
    (
        "--client-handshake-rate",
        "client_handshake_rate",
        float,
        "handshakes/s per client (certificate identity, else address); 0: off",
    ),
    ("--client-handshake-burst", "client_handshake_burst", int, "handshakes in a burst per client"),
    ("--max-request-bytes", "max_request_bytes", int, "the largest request message"),
    (
        "--max-metadata-bytes",
        "max_metadata_bytes",
        int,
        "the largest request metadata, as HTTP/2 counts it",
    ),
    (
        "--max-concurrent-streams",
        "max_concurrent_streams",
        int,
        "calls in flight on one connection",
    ),
    (
        "--min-client-ping-interval",
        "min_client_ping_interval",
        _positive,
        "seconds a client must leave between keepalive pings",
    ),
    ("--shutdown-grace", "shutdown_grace", float, "seconds in-flight calls get on SIGTERM"),
)


def _add_serve_security(serve_cmd: argparse.ArgumentParser, defaults: ServerConfig) -> None:
    """The serve options of TLS, identities and limits."""
    tls = serve_cmd.add_argument_group(
        "TLS", "Without --tls-cert the server speaks plaintext: for loopback development only."
    )
    tls.add_argument(
        "--tls-cert", metavar="PEM", default=_env("TLS_CERT", str, None), help="certificate chain"
    )
    tls.add_argument(
        "--tls-key", metavar="PEM", default=_env("TLS_KEY", str, None), help="private key"
    )
    tls.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        default=_env("TLS_CLIENT_CA", str, None),
        help="require client certificates from this CA (mutual TLS) and bind each session "
        "to the certificate that opened it",
    )
    tls.add_argument(
        "--identity-map",
        metavar="JSON",
        default=_env("IDENTITY_MAP", str, None),
        help="a JSON object of certificate identity -> peer ids it may claim besides its own "
        '(["*"]: any)',
    )
    limits = serve_cmd.add_argument_group("limits")
    for flag, field, convert, text in _LIMIT_OPTIONS:
        env_name = flag[2:].upper().replace("-", "_")
        limits.add_argument(
            flag,
            type=convert,
            dest=field,
            default=_env(env_name, convert, getattr(defaults, field)),
            help=f"{text} (default: %(default)s)",
        )


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("address", help="the server's host:port")
    common.add_argument(
        "--peer-id",
        help="the peer id to handshake as (default: the one in --session-file, else cli-HOST-PID)",
    )
    common.add_argument("--timeout", type=_positive, default=10.0, help="seconds per call")
    common.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="speak TLS, trusting this CA for the server's certificate (with --tls-cert "
        "or --tls-key alone: the system's CAs)",
    )
    common.add_argument("--tls-cert", metavar="PEM", help="client certificate, for mutual TLS")
    common.add_argument("--tls-key", metavar="PEM", help="the client certificate's key")
    common.add_argument(
        "--session-file",
        metavar="FILE",
        default=_env("SESSION_FILE", str, None),
        help="keep the session across commands: resume the one saved in FILE (or open one "
        "and save it there), and leave it open on exit. FILE holds a secret; it is "
        "written readable by you alone (default: a new session, terminated on exit)",
    )
    commands.add_parser("ping", parents=[common], help="ping a server")
    commands.add_parser("status", parents=[common], help="print a server's status")
    delegate = commands.add_parser(
        "delegate",
        parents=[common],
        help="hand a task to a server",
        description="Hand a task to a server. Without --wait or --watch it prints the task "
        "as soon as it is created; that needs --session-file, since a task is canceled "
        "when its session ends. Exits 3 when a waited-for task did not complete.",
    )
    delegate.add_argument("task_type", metavar="TYPE", help="a registered task type, e.g. echo")
    delegate.add_argument("--payload", default="{}", help="the task's input as a JSON object")
    delegate.add_argument(
        "--task-timeout", type=_positive, help="seconds the task may run (default: the server's)"
    )
    until = delegate.add_mutually_exclusive_group()
    until.add_argument("--wait", action="store_true", help="print the task once it has ended")
    until.add_argument(
        "--watch", action="store_true", help="print every change of the task, one JSON per line"
    )
    task = commands.add_parser("task", help="look at or cancel your tasks on a server")
    task_commands = task.add_subparsers(dest="task_command", required=True, metavar="COMMAND")
    for name, text in (("get", "print a task"), ("cancel", "cancel a task that is running")):
        command = task_commands.add_parser(name, parents=[common], help=text)
        command.add_argument("task_id", metavar="TASK_ID")
    listing = task_commands.add_parser(
        "list", parents=[common], help="print a page of your tasks, oldest first"
    )
    listing.add_argument(
        "--state",
        type=str.upper,
        choices=[state.name for state in TaskState],
        help="only tasks in this state",
    )
    listing.add_argument("--page-size", type=int, default=0, help="tasks per page (default: 50)")
    listing.add_argument("--page-token", default="", help="the nextPageToken of the last page")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="peer-grpc", description="gRPC peer sessions with ordered, replay-protected messages."
    )
    parser.add_argument("--version", action="version", version=f"peer-grpc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_client_commands(commands)
    return parser


@dataclass(frozen=True, slots=True)
class _Logging:
    """How a serve process logs (handed to each worker process)."""

    level: str
    log_format: str


def _run_serve(args: argparse.Namespace) -> int:
    logs = _Logging(args.log_level, args.log_format)
    configure_logging(logs.level, logs.log_format)
    try:
        tasks = load_registry(args.tasks) if args.tasks else None
        config = _server_config(args)
        if config.identity_map:
            PeerIdPolicy.from_file(config.identity_map)  # a bad map fails here, not later
        if config.otel:
            tracer_provider_from_env().shutdown()  # a missing extra or bad exporter fails here
        if args.workers > 1:
            _check_workers(config, args.workers)
    except (ValueError, RuntimeError) as error:
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 2
    if args.workers > 1:
        config = replace(config, reuse_port=True)
        return run_workers(args.workers, _serve_worker, (config, args.tasks, logs))
    return _serve_until_stopped(config, tasks)


def _check_workers(config: ServerConfig, workers: int) -> None:
    if not config.uses_redis:
        raise ValueError(
            "--workers above 1 needs a shared store: workers share no memory, and a peer's "
            "next connection may reach another worker (use --store redis://...)"
        )
    if config.port == 0:
        raise ValueError("--workers above 1 needs a fixed --port for the workers to share")
    if config.metrics_port == 0:
        raise ValueError("--workers above 1 needs a fixed --metrics-port (worker i adds i)")
    if config.metrics_port is not None and config.metrics_port + workers - 1 > 65535:
        raise ValueError(
            f"--metrics-port {config.metrics_port} leaves no port for worker {workers - 1}"
        )


def _serve_worker(config: ServerConfig, tasks_spec: str | None, logs: _Logging, index: int) -> int:
    """One worker of ``serve --workers``: a server process of its own on the shared port,
    with a metrics port of its own (each worker counts only its own calls)."""
    configure_logging(logs.level, logs.log_format, worker=index)
    if config.metrics_port is not None:
        config = replace(config, metrics_port=config.metrics_port + index)
    return _serve_until_stopped(config, load_registry(tasks_spec) if tasks_spec else None)


def _serve_until_stopped(config: ServerConfig, tasks: TaskRegistry | None) -> int:
    with _tracing(config):
        return _serve_and_report(config, tasks)


@contextlib.contextmanager
def _tracing(config: ServerConfig) -> Iterator[None]:
    """The process's OpenTelemetry tracer provider while it serves, when ``config.otel``;
    the spans still queued are sent on the way out."""
    if not config.otel:
        yield
        return
    from opentelemetry import trace

    provider = tracer_provider_from_env()
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        provider.shutdown()


def _serve_and_report(config: ServerConfig, tasks: TaskRegistry | None) -> int:
    try:
        asyncio.run(serve(config, tasks=tasks))
    except ServerBindError as error:
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # what only starting shows: unreadable TLS files
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 2
    return 0


def _server_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        idle_timeout=args.idle_timeout,
        heartbeat_interval=args.heartbeat_interval,
        sweep_interval=args.sweep_interval,
        allow_sessionless=args.allow_sessionless,
        server_peer_id=args.peer_id,
        sequence_mode=SequenceMode[args.sequence_mode.upper()],
        replay_window=args.replay_window,
        retry_cache_size=args.retry_cache,
        task_timeout=args.task_timeout,
        max_task_timeout=args.max_task_timeout,
        max_running_tasks=args.max_tasks,
        max_tasks_per_session=args.max_tasks_per_session,
        task_retention=args.task_retention,
        store=args.store,
        redis_key_prefix=args.redis_key_prefix,
        redis_timeout=args.redis_timeout,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        identity_map=args.identity_map,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        log_calls=args.log_calls,
        otel=args.otel,
        **{field: getattr(args, field) for _, field, _, _ in _LIMIT_OPTIONS},
    )


def load_registry(spec: str) -> TaskRegistry:
    """The TaskRegistry named ``module:attribute``, imported the way uvicorn imports apps.

    The working directory is on the import path, so a project's own module is found.

    Raises:
        ValueError: the name is malformed, does not import, or is not a TaskRegistry.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--tasks {spec!r}: expected MODULE:ATTRIBUTE, e.g. myapp.tasks:registry")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # whatever the application's module raises as it loads
        raise ValueError(
            f"--tasks {spec!r}: cannot import {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"--tasks {spec!r}: {module_name} has no {attribute!r}") from None
    if not isinstance(found, TaskRegistry):
        raise ValueError(
            f"--tasks {spec!r}: {attribute} is a {type(found).__name__}, not a TaskRegistry"
        )
    return found


#: Exit status of ``delegate --wait/--watch`` when the task ended other than COMPLETED.
EXIT_TASK_NOT_COMPLETED = 3


@dataclass(frozen=True, slots=True)
class _SessionFile:
    """Where the CLI keeps a session between commands (``--session-file``): a secret."""

    path: Path

    def load(self) -> tuple[str, SessionTicket] | None:
        """The saved peer id and ticket, or None when there is no file yet."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise ValueError(f"--session-file {self.path}: cannot read it: {error}") from None
        fields = ("peer_id", "session_id", "session_token")
        if not isinstance(saved, dict) or not all(isinstance(saved.get(f), str) for f in fields):
            raise ValueError(
                f"--session-file {self.path}: not a saved session "
                "(a JSON object of peer_id, session_id and session_token)"
            )
        return saved["peer_id"], SessionTicket(saved["session_id"], saved["session_token"])

    def save(self, peer_id: str, ticket: SessionTicket) -> None:
        """Write the session, readable by its owner alone, replacing the file in one step."""
        text = json.dumps(
            {
                "peer_id": peer_id,
                "session_id": ticket.session_id,
                "session_token": ticket.session_token,
            }
        )
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
            os.replace(partial, self.path)
        except OSError as error:
            raise ValueError(f"--session-file {self.path}: cannot write it: {error}") from None


@contextlib.asynccontextmanager
async def _connected(args: argparse.Namespace) -> AsyncIterator[PeerClient]:
    """A client on a new session (terminated on exit) or on the one in ``--session-file``."""
    session_file = _SessionFile(Path(args.session_file)) if args.session_file else None
    saved = session_file.load() if session_file else None
    peer_id = args.peer_id or (saved[0] if saved else _default_peer_id())
    ticket = saved[1] if saved and saved[0] == peer_id else None
    client = PeerClient(
        args.address,
        peer_id,
        timeout=args.timeout,
        ticket=ticket,
        credentials=_client_credentials(args),
    )
    keep_session = False
    try:
        await client.connect()
        if session_file is not None and client.ticket is not None:
            session_file.save(peer_id, client.ticket)  # a session nobody can resume is ended
            keep_session = True
        yield client
    finally:
        await client.close(terminate=not keep_session)


def _client_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from --tls-ca/--tls-cert/--tls-key, or None for plaintext."""
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None:
        return None
    return channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)


def _default_peer_id() -> str:
    return f"cli-{socket.gethostname()}-{os.getpid()}"[:128]


def _json_object(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--payload is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ValueError("--payload must be a JSON object")
    return payload


def _print(message: Message, *, lines: bool = False) -> None:
    """Print a message as JSON: indented, or on one line for a stream of them."""
    as_dict = json_format.MessageToDict(message)
    if lines:
        print(json.dumps(as_dict, sort_keys=True), flush=True)
    else:
        print(json.dumps(as_dict, indent=2, sort_keys=True))


async def _delegate(args: argparse.Namespace) -> int:
    payload = _json_object(args.payload)
    if not (args.wait or args.watch or args.session_file):
        raise ValueError(
            "without --wait or --watch the task would be canceled as this command's session "
            "ends; add --session-file FILE to keep the session, or wait for the task"
        )
    async with _connected(args) as client:
        task = await client.delegate_task(
            args.task_type, payload, wait=args.wait, timeout=args.task_timeout
        )
        if args.watch:
            async for update in client.watch_task(task.task_id):
                _print(update, lines=True)
                task = update.task
        else:
            _print(task)
    waited = args.wait or args.watch
    return EXIT_TASK_NOT_COMPLETED if waited and task.state != _COMPLETED else 0


_COMPLETED = peer_pb2.TASK_STATE_COMPLETED


async def _task(args: argparse.Namespace) -> int:
    async with _connected(args) as client:
        if args.task_command == "get":
            _print(await client.get_task(args.task_id))
        elif args.task_command == "cancel":
            _print(await client.cancel_task(args.task_id))
        else:
            state = peer_pb2.TaskState.Value(f"TASK_STATE_{args.state}") if args.state else 0
            _print(
                await client.list_tasks(
                    page_size=args.page_size, page_token=args.page_token, state=state
                )
            )
    return 0


async def _ping_or_status(args: argparse.Namespace) -> int:
    async with _connected(args) as client:
        _print(await (client.ping() if args.command == "ping" else client.status()))
    return 0


_CLIENT_COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "ping": _ping_or_status,
    "status": _ping_or_status,
    "delegate": _delegate,
    "task": _task,
}


def _run_client(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_CLIENT_COMMANDS[args.command](args))
    except ValueError as error:
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 2
    except PeerError as error:
        print(f"peer-grpc: error: {error.reason}: {error.message}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    return _run_client(args)
