"""How long a task outlives the process that ran it: ``kill -9`` to the task's end.

    python -m benchmarks.task_failover [--leases 1,10] [--runs 3]

Two ``peer-grpc serve`` replicas on one Redis (the tests' redis-server, started
for the run), both running tasks. A task is delegated through the first, which
starts it; the first is killed with SIGKILL; the task is read through the second
until it ends. A plain handler ends FAILED ``WORKER_LOST``; a retryable one is run
again by the second and ends COMPLETED. Prints seconds from the kill to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

from peer_grpc import PeerClient, TaskState
from tests.conftest import eventually, shared_redis
from tests.server.test_task_fleet import HANDLERS, Fleet


def kill_to_end(task_type: str, lease: float) -> tuple[float, str]:
    """Seconds from the kill of the running replica to the task's end, and how it ended."""
    directory = Path(tempfile.mkdtemp())
    (directory / "fleet_tasks.py").write_text(textwrap.dedent(HANDLERS))
    fleet = Fleet(directory, f"failover-{os.getpid()}-{time.monotonic_ns()}", [])
    lease_flag = ("--task-lease", str(lease))
    try:
        doomed, survivor = fleet.serve(*lease_flag), fleet.serve(*lease_flag)

        async def run() -> tuple[float, str]:
            first = PeerClient(doomed.address, "owner", timeout=60)
            await first.connect()
            task = await first.delegate_task(task_type, {"seconds": 600}, wait=False)
            await eventually(lambda: bool(fleet.runs()), seconds=30)
            os.kill(doomed.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            await first.close(terminate=False)
            resumed = PeerClient(survivor.address, "owner", timeout=60, ticket=first.ticket)
            async with resumed as peer:
                while True:
                    found = await peer.get_task(task.task_id)
                    if TaskState(found.state).is_final:
                        ended = found.error.code or TaskState(found.state).name
                        return time.monotonic() - killed, ended
                    await asyncio.sleep(0.02)

        return asyncio.run(run())
    finally:
        for process in fleet.processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.task_failover")
    parser.add_argument("--leases", default="1,10", help="comma-separated --task-lease values")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    shared_redis()  # started once for every run
    print("| --task-lease | handler | kill -9 to the task's end (median, range) | ended |")
    print("|---:|---|---|---|")
    for lease in (float(value) for value in args.leases.split(",")):
        for task_type, kind in (("record", "plain"), ("record-retry", "retryable")):
            runs = [kill_to_end(task_type, lease) for _ in range(args.runs)]
            took = [seconds for seconds, _ in runs]
            ended = ", ".join(sorted({how for _, how in runs}))
            print(
                f"| {lease:g} s | {kind} | {statistics.median(took):.2f} s "
                f"({min(took):.2f}-{max(took):.2f}) | {ended} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
