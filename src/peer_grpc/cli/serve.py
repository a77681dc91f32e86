"""``peer-grpc serve``: its options, built from :class:`ServerConfig`'s settings, and its runner."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

from peer_grpc.cli.options import add_log_options, describe_default, env_default, typed
from peer_grpc.core.identity import PeerIdPolicy
from peer_grpc.core.settings import ENV_PREFIX, parse_at_least_one
from peer_grpc.observability.logs import configure_logging
from peer_grpc.observability.tracing import tracer_provider_from_env
from peer_grpc.server.config import (
    OPERATIONS_GROUP,
    SERVER_GROUP,
    ServerConfig,
    Setting,
    settings,
)
from peer_grpc.server.peer_server import ServerBindError, serve
from peer_grpc.server.workers import run_workers
from peer_grpc.tasks.registry import TaskRegistry

__all__ = ["add_serve", "add_setting", "load_registry", "run_serve"]


def add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``: one option per ServerConfig setting, plus the process's own."""
    serve_cmd = commands.add_parser(
        "serve",
        help="run a server",
        description="Run a peer-grpc server. Every option can also come from the "
        f"{ENV_PREFIX}<OPTION> environment variable (e.g. {ENV_PREFIX}PORT).",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(title: str) -> argparse._ArgumentGroup:
        """The ``--help`` section titled so, made on first use."""
        if title not in groups:
            groups[title] = serve_cmd.add_argument_group(title)
        return groups[title]

    for name, setting, default in settings():
        add_setting(group(setting.group), name, setting, default)
    _add_process_options(group(SERVER_GROUP), group(OPERATIONS_GROUP))


def add_setting(
    group: argparse._ArgumentGroup, name: str, setting: Setting, default: object
) -> None:
    """Add the option of the ServerConfig setting ``name`` (its flag, parser, help and
    environment variable) to ``group``."""
    value = env_default(setting.env, setting.parse, default)
    shown = describe_default(value) if value != default else None
    shown = shown or setting.default_text or describe_default(default)
    options: dict[str, object] = {
        "dest": name,
        "default": value,
        "help": f"{setting.help} (default: {shown}; env {setting.env})",
    }
    if setting.switch:
        group.add_argument(setting.flag, action=argparse.BooleanOptionalAction, **options)  # type: ignore[arg-type]
        return
    # No argparse choices: they are checked after parsing, against parsed values; the
    # setting's parse refuses what is not a choice, naming the choices.
    options["metavar"] = (
        "|".join(setting.choices)
        if setting.choices
        else setting.metavar or setting.flag.removeprefix("--").upper().replace("-", "_")
    )
    group.add_argument(setting.flag, type=typed(setting.parse), **options)  # type: ignore[arg-type]


def _add_process_options(
    server: argparse._ArgumentGroup, operations: argparse._ArgumentGroup
) -> None:
    """The options of the serving process itself, which no ServerConfig holds."""
    server.add_argument(
        "--tasks",
        metavar="MODULE:ATTRIBUTE",
        default=env_default(f"{ENV_PREFIX}TASKS", str, None),
        help="the TaskRegistry of task handlers to serve, e.g. mypackage.tasks:registry "
        "(default: the built-in echo and sleep)",
    )
    server.add_argument(
        "--workers",
        type=typed(parse_at_least_one),
        default=env_default(f"{ENV_PREFIX}WORKERS", parse_at_least_one, 1),
        help="server processes sharing the port (SO_REUSEPORT), for more than one core; "
        "more than 1 needs a Redis --store and a fixed --port (default: %(default)s)",
    )
    add_log_options(operations)


@dataclass(frozen=True, slots=True)
class _Logging:
    """How a serve process logs (handed to each worker process)."""

    level: str
    log_format: str


def run_serve(args: argparse.Namespace) -> int:
    """Run ``serve`` as ``args`` say; returns the exit status."""
    logs = _Logging(args.log_level.upper(), args.log_format)
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
    settable = (f.name for f in fields(ServerConfig) if "setting" in f.metadata)
    return ServerConfig(**{name: getattr(args, name) for name in settable})


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
