"""What a chatty handler costs: progress reports against the stored ones, in one process.

    python -m benchmarks.progress [--seconds 2] [--interval 0.25]

One task whose handler reports progress in a loop for ``--seconds``, yielding to
the event loop between reports (an async handler that reports at every step of
its work), on the memory store and on Redis (the tests' redis-server, started for
the run). Prints, per store: the reports made, the reports stored, stored reports
per second, and the handler's CPU microseconds per report (the call, its share of
the coalescing, and the loop step between two reports).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from peer_grpc import MemoryTaskStore, TaskManager, TaskRegistry, TaskStore, current_task
from peer_grpc.tasks.manager import TaskLimits
from tests.conftest import redis_task_store, stop_shared_redis


async def chatty_task(store: TaskStore, seconds: float, interval: float) -> dict[str, float]:
    """Run one chatty task to its end; its figures."""
    registry = TaskRegistry()

    @registry.task("chatty")
    async def chatty(payload: dict[str, Any]) -> dict[str, Any]:
        task = current_task()
        reports = 0
        cpu = time.process_time()
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            reports += 1
            task.progress(min(reports / 1e6, 1.0), f"step {reports}")
            await asyncio.sleep(0)
        return {"reports": reports, "cpu": time.process_time() - cpu}

    manager = TaskManager(
        registry, store, limits=TaskLimits(progress_interval=interval, max_running=4)
    )
    try:
        task = await manager.delegate(
            peer_id="peer", session_id="session", task_type="chatty", payload={}
        )
    finally:
        await manager.shutdown(0)
        await store.close()
    assert task.result is not None
    reports = task.result["reports"]
    # A task that ended keeps the snapshots of its state changes only: count the stored
    # reports by version (each is one) instead.
    writes = task.version - 3  # SUBMITTED, WORKING and the end are not reports
    return {
        "reports": reports,
        "stored_reports": writes,
        "stored_per_second": writes / seconds,
        "cpu_us_per_report": task.result["cpu"] / reports * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.progress")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    try:
        for name, store in (("memory", MemoryTaskStore()), ("redis", redis_task_store())):
            figures = asyncio.run(chatty_task(store, args.seconds, args.interval))
            print(
                f"{name}: {figures['reports']:.0f} reports in {args.seconds:g}s, "
                f"{figures['stored_reports']:.0f} stored "
                f"({figures['stored_per_second']:.1f}/s), "
                f"{figures['cpu_us_per_report']:.2f} us CPU per report"
            )
    finally:
        stop_shared_redis()


if __name__ == "__main__":
    main()
