"""The ``peer-grpc`` command: ``serve``, and client commands that print JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from peer_grpc._version import __version__
from peer_grpc.client import PeerClient
from peer_grpc.errors import PeerError
from peer_grpc.sequence import SequenceMode
from peer_grpc.server import ServerBindError, ServerConfig, serve
from peer_grpc.window import MAX_WINDOW

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
        "--log-level",
        default=_env("LOG_LEVEL", _one_of("debug", "info", "warning", "error"), "info").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("address", help="the server's host:port")
    common.add_argument(
        "--peer-id",
        default=f"cli-{socket.gethostname()}-{os.getpid()}"[:128],
        help="the peer id to handshake as (default: cli-HOST-PID)",
    )
    common.add_argument("--timeout", type=_positive, default=10.0, help="seconds per call")
    commands.add_parser("ping", parents=[common], help="ping a server over a new session")
    commands.add_parser("status", parents=[common], help="print a server's status")
    delegate = commands.add_parser("delegate", parents=[common], help="run a task on a server")
    delegate.add_argument("task_type", metavar="TYPE", help="a registered task type, e.g. echo")
    delegate.add_argument("--payload", default="{}", help="the task's input as a JSON object")


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


def _run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = ServerConfig(
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
        )
    except ValueError as error:
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except ServerBindError as error:
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 1
    return 0


async def _client_call(args: argparse.Namespace) -> Message:
    payload: dict[str, Any] | None = None
    if args.command == "delegate":
        try:
            payload = json.loads(args.payload)
        except json.JSONDecodeError as error:
            raise ValueError(f"--payload is not JSON: {error}") from None
        if not isinstance(payload, dict):
            raise ValueError("--payload must be a JSON object")
    async with PeerClient(args.address, args.peer_id, timeout=args.timeout, heartbeat=False) as c:
        if args.command == "ping":
            return await c.ping()
        if args.command == "status":
            return await c.status()
        return await c.delegate_task(args.task_type, payload)


def _run_client(args: argparse.Namespace) -> int:
    try:
        response = asyncio.run(_client_call(args))
    except ValueError as error:
        print(f"peer-grpc: error: {error}", file=sys.stderr)
        return 2
    except PeerError as error:
        print(f"peer-grpc: error: {error.reason}: {error.message}", file=sys.stderr)
        return 1
    print(json.dumps(json_format.MessageToDict(response), indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    return _run_client(args)
