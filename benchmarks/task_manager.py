"""What ``TaskManager.delegate`` itself costs, in one process, without gRPC.

    python -m benchmarks.task_manager [--calls 32000] [--concurrency 16]

Delegates the built-in ``echo`` task, ``--concurrency`` callers at a time, and
prints CPU microseconds per delegation: on the memory store, and on Redis (the
tests' redis-server, started for the run) where each delegation is two round
trips (store, queue and claim; record the end).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from peer_grpc import MemoryTaskStore, TaskManager, TaskStore, default_registry
from peer_grpc.tasks.manager import TaskLimits
from tests.conftest import redis_task_store, stop_shared_redis


async def per_delegation(store: TaskStore, calls: int, concurrency: int) -> float:
    """CPU microseconds per delegation, after a warm-up."""
    manager = TaskManager(default_registry(), store, limits=TaskLimits(max_running=64))

    async def caller(index: int, count: int) -> None:
        for _ in range(count):
            await manager.delegate(
                peer_id=f"peer-{index}",
                session_id=f"session-{index}",
                task_type="echo",
                payload={"n": 1},
            )

    await asyncio.gather(*(caller(index, 20) for index in range(concurrency)))
    started = time.process_time()
    await asyncio.gather(*(caller(index, calls // concurrency) for index in range(concurrency)))
    cpu = time.process_time() - started
    await manager.shutdown(0)
    await store.close()
    return cpu / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.task_manager")
    parser.add_argument("--calls", type=int, default=32_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    memory = asyncio.run(per_delegation(MemoryTaskStore(), args.calls, args.concurrency))
    print(f"memory: {memory:.1f} us CPU per delegation")
    try:
        redis = asyncio.run(per_delegation(redis_task_store(), args.calls // 10, args.concurrency))
    finally:
        stop_shared_redis()  # started for this run: it must not outlive it
    print(f"redis:  {redis:.1f} us CPU per delegation (this process's side of 2 round trips)")


if __name__ == "__main__":
    main()
