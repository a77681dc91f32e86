"""``peer-grpc worker``: run queued tasks from the front ends' Redis, serving no PeerService."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from peer_grpc.cli.options import add_log_options, env_default, typed
from peer_grpc.cli.serve import add_setting, load_registry
from peer_grpc.core.settings import (
    ENV_PREFIX,
    parse_at_least_one,
    parse_float,
)
from peer_grpc.observability.logs import configure_logging
from peer_grpc.server.config import settings
from peer_grpc.server.task_worker import WorkerConfig, run_worker
from peer_grpc.tasks.registry import default_registry

__all__ = ["add_worker", "run_worker_command"]

#: The ServerConfig settings a worker takes too, which must be the front ends' values.
_SHARED_WITH_SERVE = frozenset(
    {
        "redis_key_prefix",
        "redis_timeout",
        "task_retention",
        "max_task_result_bytes",
        "task_lease",
        "task_progress_interval",
    }
)


def add_worker(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker``; its options read the same environment variables as ``serve``'s."""
    worker = commands.add_parser(
        "worker",
        help="run queued tasks from a Redis store, serving no PeerService",
        description="Claim tasks that peer-grpc servers queued in Redis and run them. "
        f"Options can also come from {ENV_PREFIX}<OPTION> variables, as for serve.",
    )
    defaults = WorkerConfig(store="redis://")

    def option(flag: str, parse: Callable[[str], Any], default: Any, text: str) -> None:
        variable = ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")
        worker.add_argument(
            flag,
            type=typed(parse),
            default=env_default(variable, parse, default),
            help=f"{text} (default: %(default)s; env {variable})",
        )

    option(
        "--store",
        str,
        None,
        "the Redis the front ends queue tasks in: redis://HOST:PORT/DB, or "
        "redis-sentinel://HOST:PORT[,...]/SERVICE",
    )
    worker.add_argument(
        "--tasks",
        metavar="MODULE:ATTRIBUTE",
        default=env_default(f"{ENV_PREFIX}TASKS", str, None),
        help="the TaskRegistry of task handlers to run (default: the built-in echo and sleep)",
    )
    option("--concurrency", parse_at_least_one, defaults.concurrency, "tasks run at once")
    option(
        "--shutdown-grace",
        parse_float,
        defaults.shutdown_grace,
        "seconds held tasks get to finish on SIGTERM before they are handed back",
    )
    option(
        "--health-address",
        str,
        None,
        "HOST:PORT to serve grpc.health.v1.Health on (service peer.v1.TaskWorker)",
    )
    # What must match the front ends: the very settings of `serve`, declared once.
    shared = worker.add_argument_group("as the front ends (set them alike)")
    for name, setting, default in settings():
        if name in _SHARED_WITH_SERVE:
            add_setting(shared, name, setting, default)
    add_log_options(worker.add_argument_group("operations"))


def run_worker_command(args: argparse.Namespace) -> int:
    """Run ``worker`` as ``args`` say; returns the exit status."""
    configure_logging(args.log_level.upper(), args.log_format)
    try:
        if args.store is None:
            raise ValueError("--store is required: the Redis the front ends queue tasks in")
        registry = load_registry(args.tasks) if args.tasks else default_registry()
        config = WorkerConfig(
            store=args.store,
            concurrency=args.concurrency,
            task_lease=args.task_lease,
            shutdown_grace=args.shutdown_grace,
            health_address=args.health_address,
            redis_key_prefix=args.redis_key_prefix,
            redis_timeout=args.redis_timeout,
            task_retention=args.task_retention,
            max_task_result_bytes=args.max_task_result_bytes,
            task_progress_interval=args.task_progress_interval,
        )
        asyncio.run(run_worker(config, registry))
    except ValueError as error:
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 2
    return 0
