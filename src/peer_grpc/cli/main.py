"""The ``peer-grpc`` command line: its parser, and which command runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from peer_grpc._version import __version__
from peer_grpc.cli.commands import add_client_commands, run_client
from peer_grpc.cli.serve import add_serve, run_serve
from peer_grpc.cli.worker import add_worker, run_worker_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="peer-grpc", description="gRPC peer sessions with ordered, replay-protected messages."
    )
    parser.add_argument("--version", action="version", version=f"peer-grpc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve(commands)
    add_worker(commands)
    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "worker":
        return run_worker_command(args)
    return run_client(args)
