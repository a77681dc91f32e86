"""Tasks at fleet scale: replicas and workers as real processes on one real redis-server.

Front ends (``peer-grpc serve``) queue tasks in Redis; runners (a ``serve`` that runs
tasks, or ``peer-grpc worker``) claim them. Processes here are killed for real
(``kill -9``) and paused for real (SIGSTOP). The handlers record every run in a
file, one line each, so that a test can count runs per task.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from peer_grpc import PeerClient, TaskLimitReached, TaskState
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.server.task_worker import WORKER_SERVICE
from tests.cli.test_cli import ServeProcess, start_serve
from tests.conftest import eventually, shared_redis
from tests.ports import free_port
from tests.redis_server import RedisServer

T = TaskState
LEASE = 1.0
#: How long after a lease lapses its task must have been dealt with (the issue's bound).
RECLAIM_BOUND = LEASE + 5.0

HANDLERS = """
import asyncio, json, os, signal, time
from peer_grpc import TaskRegistry, current_task
from peer_grpc.tasks.registry import Retry

registry = TaskRegistry()
RUNS = os.environ["FLEET_RUNS"]


def record(payload):
    task = current_task()
    with open(RUNS, "a") as runs:
        runs.write(json.dumps({"task": task.task_id, "attempt": task.attempt,
                               "pid": os.getpid(), "n": payload.get("n")}) + "\\n")


@registry.task("record")
async def run_once(payload):
    record(payload)
    await asyncio.sleep(payload.get("seconds", 0.01))
    return {"pid": os.getpid(), "attempt": current_task().attempt}


@registry.task("record-retry", retry=Retry(max_attempts=3))
async def run_again(payload):
    record(payload)
    if payload.get("crash") and current_task().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash, mid-task, of the whole process
    seconds = payload.get("seconds", 0.01) if current_task().attempt == 1 else 0.01
    await asyncio.sleep(seconds)
    return {"pid": os.getpid(), "attempt": current_task().attempt}


@registry.task("hold")
async def hold(payload):
    record(payload)
    try:
        await asyncio.sleep(payload.get("seconds", 60))
    except asyncio.CancelledError:
        with open(RUNS, "a") as runs:
            runs.write(json.dumps({"task": current_task().task_id, "stopped": True}) + "\\n")
        raise
    return {}


@registry.task("blocking-retry", retry=Retry(max_attempts=3))
def blocking(payload):
    record(payload)
    time.sleep(payload.get("seconds", 0.01) if current_task().attempt == 1 else 0.01)
    return {"pid": os.getpid(), "attempt": current_task().attempt}
"""

WORKING = re.compile(r"worker (\S+) running up to")


@dataclass
class Fleet:
    """The processes of one test, their shared Redis keys, and the handlers' run log."""

    directory: Path
    prefix: str
    processes: list[subprocess.Popen[str]]

    @property
    def runs_file(self) -> Path:
        return self.directory / "runs.jsonl"

    @property
    def env(self) -> dict[str, str]:
        return {"FLEET_RUNS": str(self.runs_file), "PYTHONPATH": str(self.directory)}

    def common(self) -> list[str]:
        return [
            "--store", shared_redis().url, "--redis-key-prefix", self.prefix,
            "--tasks", "fleet_tasks:registry", "--task-lease", str(LEASE),
        ]  # fmt: skip

    def serve(self, *args: str) -> ServeProcess:
        server = start_serve(
            "--host", "127.0.0.1", "--port", "0", *self.common(), *args,
            env=self.env, cwd=self.directory,
        )  # fmt: skip
        self.processes.append(server.process)
        return server

    def worker(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "peer_grpc", "worker", *self.common(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env},
            cwd=self.directory,
        )
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if WORKING.search(line):
                self.processes.append(process)
                # Keep reading its log so that it never blocks on a full pipe.
                _drain(process)
                return process
        process.wait(timeout=15)
        raise AssertionError(f"worker exited {process.returncode}:\n{''.join(lines)}")

    def runs(self) -> list[dict[str, object]]:
        if not self.runs_file.exists():
            return []
        return [json.loads(line) for line in self.runs_file.read_text().splitlines()]


def _drain(process: subprocess.Popen[str]) -> None:
    import threading

    def read() -> None:
        assert process.stderr is not None
        for _ in process.stderr:
            pass

    threading.Thread(target=read, daemon=True).start()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    (tmp_path / "fleet_tasks.py").write_text(textwrap.dedent(HANDLERS))
    fleet = Fleet(tmp_path, f"fleet-{os.getpid()}-{time.monotonic_ns()}", [])
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.communicate(timeout=15)


def client(server: ServeProcess, peer: str) -> PeerClient:
    return PeerClient(server.address, peer, timeout=30)


async def until_final(peer: PeerClient, task_id: str, within: float) -> tuple[peer_pb2.Task, float]:
    """The task once final, polled with GetTask, and how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        task = await peer.get_task(task_id)
        if T(task.state).is_final:
            return task, time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} not final within {within}s: {task}")


def test_a_front_end_that_runs_no_tasks_has_them_run_by_a_worker(fleet: Fleet):
    front = fleet.serve("--no-run-tasks")
    worker = fleet.worker("--concurrency", "2")

    async def delegate() -> peer_pb2.Task:
        async with client(front, "caller") as peer:
            return await peer.delegate_task("record", {"n": 1})

    task = asyncio.run(delegate())

    assert T(task.state) is T.COMPLETED
    assert task.result["pid"] == worker.pid
    assert [run["pid"] for run in fleet.runs()] == [worker.pid]


@pytest.mark.parametrize(
    ("task_type", "expected"),
    [("record", T.FAILED), ("record-retry", T.COMPLETED)],
    ids=["plain handler fails WORKER_LOST", "retryable handler runs again"],
)
def test_kill_9_of_the_runner_is_answered_within_the_lease(
    fleet: Fleet, task_type: str, expected: TaskState
):
    doomed = fleet.serve()
    survivor = fleet.serve()  # runs tasks too: the retry lands here

    async def kill_mid_task() -> tuple[peer_pb2.Task, float]:
        first = client(doomed, "owner")
        await first.connect()
        task = await first.delegate_task(task_type, {"seconds": 60}, wait=False)
        await eventually(lambda: len(fleet.runs()) >= 1)
        os.kill(doomed.process.pid, signal.SIGKILL)
        await first.close(terminate=False)  # the session lives on, in Redis
        resumed = PeerClient(survivor.address, "owner", timeout=30, ticket=first.ticket)
        async with resumed as peer:
            return await until_final(peer, task.task_id, RECLAIM_BOUND + 5)

    task, took = asyncio.run(kill_mid_task())

    assert T(task.state) is expected
    assert took < RECLAIM_BOUND, f"{took:.1f}s"
    runs = fleet.runs()
    assert runs[0]["pid"] == doomed.process.pid
    if expected is T.FAILED:
        assert task.error.code == "WORKER_LOST"
        assert len(runs) == 1
    else:
        assert task.attempt == 2
        assert task.result["pid"] == survivor.process.pid
        assert [run["attempt"] for run in runs] == [1, 2]


def test_two_replicas_and_two_workers_run_each_of_200_tasks_exactly_once(fleet: Fleet):
    replicas = [fleet.serve("--no-run-tasks", "--max-queued-tasks", "500") for _ in range(2)]
    workers = [fleet.worker("--concurrency", "8") for _ in range(2)]

    async def delegate_all() -> list[peer_pb2.Task]:
        async def one_peer(index: int) -> list[peer_pb2.Task]:
            async with client(replicas[index % 2], f"peer-{index}") as peer:
                return [
                    await peer.delegate_task("record", {"n": index * 100 + n}) for n in range(25)
                ]

        batches = await asyncio.gather(*(one_peer(index) for index in range(8)))
        return [task for batch in batches for task in batch]

    tasks = asyncio.run(delegate_all())

    assert len(tasks) == 200
    assert {T(task.state) for task in tasks} == {T.COMPLETED}
    runs = Counter(run["task"] for run in fleet.runs())
    assert len(runs) == 200
    assert set(runs.values()) == {1}
    pids = Counter(run["pid"] for run in fleet.runs())
    assert set(pids) == {worker.pid for worker in workers}


def test_with_crashes_injected_every_task_completes_within_its_attempts(fleet: Fleet):
    replica = fleet.serve("--no-run-tasks", "--max-queued-tasks", "500")
    for _ in range(2):
        fleet.worker("--concurrency", "4")

    async def keep_two_workers() -> None:
        while True:
            await asyncio.sleep(0.2)
            alive = [p for p in fleet.processes if p is not replica.process and p.poll() is None]
            if len(alive) < 2:
                await asyncio.to_thread(fleet.worker, "--concurrency", "4")

    async def delegate_all() -> list[peer_pb2.Task]:
        restarting = asyncio.create_task(keep_two_workers())
        try:

            async def one_peer(index: int) -> list[peer_pb2.Task]:
                async with client(replica, f"peer-{index}") as peer:
                    return [
                        await peer.delegate_task(
                            "record-retry", {"n": n, "crash": index == 0 and n % 10 == 0}
                        )
                        for n in range(25)
                    ]

            batches = await asyncio.gather(*(one_peer(index) for index in range(4)))
        finally:
            restarting.cancel()
        return [task for batch in batches for task in batch]

    tasks = asyncio.run(delegate_all())

    assert {T(task.state) for task in tasks} == {T.COMPLETED}
    runs = Counter(run["task"] for run in fleet.runs())
    assert len(runs) == 100
    assert max(runs.values()) <= 3
    assert sum(1 for count in runs.values() if count > 1) >= 3  # the crashes did happen


def test_a_paused_runner_cannot_overwrite_the_result_of_the_attempt_that_replaced_it(
    fleet: Fleet,
):
    front = fleet.serve("--no-run-tasks")
    paused = fleet.worker("--concurrency", "1")

    async def pause_mid_task() -> tuple[peer_pb2.Task, peer_pb2.Task, int]:
        async with client(front, "owner") as peer:
            task = await peer.delegate_task("blocking-retry", {"seconds": 1.5}, wait=False)
            await eventually(lambda: len(fleet.runs()) >= 1)
            os.kill(paused.pid, signal.SIGSTOP)
            replacement = fleet.worker("--concurrency", "1")
            ended, _ = await until_final(peer, task.task_id, RECLAIM_BOUND + 5)
            os.kill(paused.pid, signal.SIGCONT)  # its thread finishes, it tries to write
            await asyncio.sleep(LEASE * 2 + 1)
            return ended, await peer.get_task(task.task_id), replacement.pid

    ended, later, replacement_pid = asyncio.run(pause_mid_task())

    assert T(ended.state) is T.COMPLETED
    assert ended.result["pid"] == replacement_pid
    assert later == ended
    assert [run["pid"] for run in fleet.runs()] == [paused.pid, replacement_pid]


def test_the_running_and_queue_limits_hold_across_replicas(fleet: Fleet):
    limits = ("--max-tasks", "2", "--max-queued-tasks", "1")
    replicas = [fleet.serve(*limits), fleet.serve(*limits)]

    async def overfill() -> tuple[list[peer_pb2.Task], list[TaskLimitReached]]:
        accepted, refused = [], []
        peers = [client(replicas[index % 2], f"peer-{index}") for index in range(6)]
        try:  # each peer's session stays open, and its task with it
            for peer in peers:
                await peer.connect()
                try:
                    accepted.append(await peer.delegate_task("record", {"seconds": 30}, wait=False))
                except TaskLimitReached as error:
                    refused.append(error)
        finally:
            for peer in peers:
                await peer.close()
        return accepted, refused

    accepted, refused = asyncio.run(overfill())

    assert (len(accepted), len(refused)) == (3, 3)
    assert {error.scope for error in refused} == {"queue"}
    assert all((error.retry_after or 0) > 0 for error in refused)


def test_tasks_queue_and_drain_in_the_order_they_were_delegated(fleet: Fleet):
    front = fleet.serve("--no-run-tasks")

    async def delegate_then_start_a_worker() -> None:
        async with client(front, "owner") as peer:
            tasks = [await peer.delegate_task("record", {"n": n}, wait=False) for n in range(6)]
            assert {T(task.state) for task in tasks} == {T.SUBMITTED}
            await asyncio.to_thread(fleet.worker, "--concurrency", "1")
            for task in tasks:
                await peer.wait_for_task(task.task_id)

    asyncio.run(delegate_then_start_a_worker())

    assert [run["n"] for run in fleet.runs()] == list(range(6))


def test_a_stopping_worker_finishes_what_it_can_and_hands_back_the_rest(fleet: Fleet):
    front = fleet.serve("--no-run-tasks")
    stopping = fleet.worker("--concurrency", "2", "--shutdown-grace", "0.5")

    async def stop_mid_task() -> tuple[peer_pb2.Task, peer_pb2.Task]:
        async with client(front, "owner") as peer:
            quick = await peer.delegate_task("record", {"seconds": 0.2}, wait=False)
            slow = await peer.delegate_task("record-retry", {"seconds": 30}, wait=False)
            await eventually(lambda: len(fleet.runs()) >= 2)
            stopping.send_signal(signal.SIGTERM)
            await asyncio.to_thread(stopping.wait, 15)
            assert stopping.returncode == 0
            fleet.worker("--concurrency", "2")
            return await peer.wait_for_task(quick.task_id), await peer.wait_for_task(slow.task_id)

    quick, slow = asyncio.run(stop_mid_task())

    assert T(quick.state) is T.COMPLETED
    assert (T(slow.state), slow.attempt) == (T.COMPLETED, 2)


def healthcheck(address: str) -> int:
    """The image's health check (deploy/healthcheck.py) against a worker's health service."""
    script = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"
    done = subprocess.run(
        [sys.executable, str(script), address, WORKER_SERVICE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def test_a_worker_reports_its_health_while_redis_answers_and_not_after(
    tmp_path: Path, redis_server: RedisServer
):
    (tmp_path / "fleet_tasks.py").write_text(textwrap.dedent(HANDLERS))
    fleet = Fleet(tmp_path, f"health-{os.getpid()}", [])
    address = f"127.0.0.1:{free_port()}"
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "peer_grpc", "worker", "--store", redis_server.url,
            "--health-address", address, "--redis-timeout", "0.3",
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, **fleet.env},
    )  # fmt: skip
    try:

        def serving() -> bool:
            return healthcheck(address) == 0

        asyncio.run(eventually(serving, seconds=15))
        redis_server.freeze()
        asyncio.run(eventually(lambda: not serving(), seconds=15))
        redis_server.thaw()
        asyncio.run(eventually(serving, seconds=15))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        assert not serving()
    finally:
        redis_server.thaw()
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@pytest.mark.parametrize("how", ["CancelTask", "Terminate"])
def test_a_task_ended_through_another_replica_stops_on_the_worker_within_a_lease_tick(
    fleet: Fleet, how: str
):
    here, there = fleet.serve("--no-run-tasks"), fleet.serve("--no-run-tasks")
    fleet.worker("--concurrency", "2")

    async def end_it_elsewhere() -> tuple[peer_pb2.Task, float]:
        first = client(here, "owner")
        await first.connect()
        task = await first.delegate_task("hold", {"seconds": 60}, wait=False)
        await eventually(lambda: len(fleet.runs()) >= 1)
        await first.close(terminate=False)
        elsewhere = PeerClient(there.address, "owner", timeout=30, ticket=first.ticket)
        await elsewhere.connect()
        ended_at = time.monotonic()
        if how == "CancelTask":
            await elsewhere.cancel_task(task.task_id)
        else:
            await elsewhere.close()  # Terminate: the session ends, and its tasks
        await eventually(lambda: any(run.get("stopped") for run in fleet.runs()), seconds=10)
        took = time.monotonic() - ended_at
        async with client(there, "owner") as reader:  # a new session of the same peer
            return await reader.get_task(task.task_id), took

    task, took = asyncio.run(end_it_elsewhere())

    expected = "CANCELED" if how == "CancelTask" else "SESSION_ENDED"
    assert (T(task.state), task.error.code) == (T.CANCELED, expected)

    # A lease tick is a quarter of the lease (here 1 s); allow for a loaded machine.
    assert took < LEASE / 4 + 2.0, f"{took:.2f}s"
    stopped = [run for run in fleet.runs() if run.get("stopped")]
    assert [run["task"] for run in stopped] == [task.task_id]
