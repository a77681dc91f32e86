"""Several server processes on one port: the supervisor behind ``peer-grpc serve --workers N``.

One Python process serves calls on one core at a time. Workers bind the same
port with SO_REUSEPORT, and the kernel spreads incoming connections among them.
They share nothing in memory, so sessions must live in a shared store (Redis):
a peer's next connection may land on another worker.

The supervisor starts the workers as fresh interpreters (``spawn``: grpc does
not survive ``fork``), passes SIGINT and SIGTERM on to them, and exits when they
have. If one worker fails, it stops the others and exits with the failure, for
the process manager above it to restart the whole.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

__all__ = ["run_workers"]

log = logging.getLogger(__name__)


def run_workers(count: int, target: Callable[..., int], args: tuple[Any, ...]) -> int:
    """Run ``target(*args, index)`` in ``count`` worker processes until they all exit.

    ``target`` must be a module-level function (it is imported again in each
    worker) and returns the worker's exit status.

    Returns:
        0 when the workers stopped on a signal, else the first failure's status.
    """
    context = multiprocessing.get_context("spawn")
    workers: list[BaseProcess] = [
        context.Process(
            target=_exit_with, args=(target, (*args, index)), name=f"peer-grpc-worker-{index}"
        )
        for index in range(count)
    ]
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    previous = {
        signum: signal.signal(signum, stop_all) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        for worker in workers:
            worker.start()
        return _supervise(workers, stop_all, lambda: stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _supervise(
    workers: list[BaseProcess], stop_all: Callable[[], None], stopping: Callable[[], bool]
) -> int:
    """Wait for every worker; the first to fail (or to exit unasked) stops the rest."""
    status = 0
    running = list(workers)
    while running:
        ended = multiprocessing.connection.wait([worker.sentinel for worker in running])
        for worker in [worker for worker in running if worker.sentinel in ended]:
            worker.join()
            running.remove(worker)
            code = worker.exitcode
            if stopping():
                continue
            log.error("%s exited with %s; stopping the other workers", worker.name, code)
            # Killed by a signal (negative) or exited 0 unasked: both are failures here.
            status = code if code and code > 0 else 1
            stop_all()
    return status


def _exit_with(target: Callable[..., int], args: tuple[Any, ...]) -> None:
    sys.exit(target(*args))
