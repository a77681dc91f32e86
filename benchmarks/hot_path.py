"""The server's own Python per sequenced Ping, in one process, without grpc.

``python -m benchmarks.hot_path [--reject unknown|gap]`` builds the PeerService as the
server does (memory store, the servicer, the interceptor's wrapper), then calls the
wrapped Ping directly with a stand-in for grpc's context, and prints the CPU time per
call: peer-grpc's share of a call, which the RPC benchmarks see only as a few percent
of the whole. ``--reject`` sends calls that are refused: on an unknown session, or
with a gap in the sequence.

The code before the single wrapper (issue 17) is measured the same way: serve it on
``PYTHONPATH`` (``PYTHONPATH=<worktree>/src python -m benchmarks.hot_path``); its
chained interceptors are found and wrapped as it did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.core.session import SessionState
from peer_grpc.server import handlers
from peer_grpc.server.servicer import PeerServicer
from peer_grpc.server.validation import request_validators
from peer_grpc.sessions.manager import SessionManager
from peer_grpc.tasks.manager import TaskManager
from peer_grpc.tasks.registry import TaskRegistry

#: Calls timed, after as many again to warm up.
CALLS = 20_000

Behavior = Callable[[Any, Any], Awaitable[Any]]


class StandInContext:
    """What the wrapper asks of grpc's servicer context, and nothing more."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata
        self._trailing: tuple[tuple[str, Any], ...] = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def time_remaining(self) -> float | None:
        return None

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    async def abort_with_status(self, status: Any) -> None:
        raise grpc.aio.AbortError()

    async def abort(self, *args: Any, **kwargs: Any) -> None:
        raise grpc.aio.AbortError()


def wrapped_ping(manager: SessionManager, tasks: TaskManager) -> tuple[Behavior, Any]:
    """The Ping behavior and request deserializer a server would serve."""
    servicer = PeerServicer(manager, tasks, server_peer_id="bench", heartbeat_interval=10)
    validators = request_validators(tasks)
    try:
        from peer_grpc.server.interceptors import peer_interceptor
    except ImportError:  # the chained interceptors before issue 17
        from peer_grpc.server import interceptors as old

        chain = old.peer_interceptors(manager, validators)[0]  # type: ignore[attr-defined]
        handler = handlers.peer_service_handler(servicer).service(_PingDetails())
        serialize = old._passing_bytes_through(handler.response_serializer)
        behavior = chain.wrap("Ping", handler.unary_unary, serialize)
        return behavior, handler.request_deserializer
    ping = peer_interceptor(manager, validators).guard(handlers.peer_method_handlers(servicer))[
        "Ping"
    ]
    return ping.unary_unary, ping.request_deserializer


class _PingDetails:
    method = "/peer.v1.PeerService/Ping"
    invocation_metadata = ()


async def cpu_per_call(reject: str) -> float:
    """Microseconds of CPU per wrapped Ping (see the module's doc)."""
    manager = SessionManager(idle_timeout=3600)
    tasks = TaskManager(TaskRegistry())
    behavior, deserialize = wrapped_ping(manager, tasks)
    session = await manager.create_session("bench", "1.0")
    await manager.update_session_state(session.session_id, SessionState.HANDSHAKE_SENT)
    session_id = "0" * 32 if reject == "unknown" else session.session_id
    body = peer_pb2.PingRequest(payload=b"x" * 32).SerializeToString()

    async def call(sequence: int) -> None:
        sent = sequence * 2 + 5 if reject == "gap" else sequence
        context = StandInContext(((SESSION_ID_KEY, session_id), (SEQUENCE_KEY, str(sent))))
        with contextlib.suppress(grpc.aio.AbortError):  # how the old code refused
            await behavior(deserialize(body), context)

    for sequence in range(1, CALLS + 1):
        await call(sequence)
    started = time.process_time()
    for sequence in range(CALLS + 1, 2 * CALLS + 1):
        await call(sequence)
    return (time.process_time() - started) / CALLS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reject", choices=["unknown", "gap"], default="")
    args = parser.parse_args()
    print(f"{args.reject or 'accepted'}: {asyncio.run(cpu_per_call(args.reject)):.1f} us per call")


if __name__ == "__main__":
    main()
