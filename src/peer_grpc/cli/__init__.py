"""The ``peer-grpc`` command: ``serve``, and client commands for scripts and people."""

from peer_grpc.cli.main import main

__all__ = ["main"]
