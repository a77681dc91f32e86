"""The task manager: delegation, waiting, timeouts, cancellation, limits, listing and watching.

No gRPC here: these run the core directly, against every task store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from peer_grpc import InvalidArgument, ManualClock, TaskRegistry, default_registry
from peer_grpc.core.errors import (
    ShuttingDown,
    StoreUnavailable,
    TaskLimitReached,
    TaskNotCancelable,
    TaskNotFound,
)
from peer_grpc.core.task import Task, TaskChange, TaskState
from peer_grpc.stores import TaskStore
from peer_grpc.stores.memory.tasks import MemoryTaskStore
from peer_grpc.tasks import TaskRejected, current_task
from peer_grpc.tasks.manager import MAX_PAGE_BYTES, MAX_PAGE_SIZE, TaskLimits, TaskManager
from tests.conftest import Gate, TaskStoreFactory, eventually

T = TaskState
PEER = "peer-a"
SESSION = "session-1"


class Worker:
    """A plain (thread) handler that works until it is told to stop, as a good one should."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.saw_cancel = threading.Event()

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.started.set()
        try:
            if current_task().wait_cancelled(10):
                self.saw_cancel.set()
            return {"finished": True}
        finally:
            self.stopped.set()


@pytest.fixture
def worker() -> Worker:
    return Worker()


@pytest.fixture
def registry(gate: Gate, worker: Worker) -> TaskRegistry:
    registry = default_registry()
    registry.register("held", gate)
    registry.register("blocking", worker)

    @registry.task("explode")
    async def explode(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    @registry.task("refuse")
    def refuse(payload: dict[str, Any]) -> dict[str, Any]:
        raise TaskRejected("no thanks")

    @registry.task("whoami")
    def whoami(payload: dict[str, Any]) -> dict[str, Any]:
        task = current_task()
        return {"task_id": task.task_id, "peer": task.peer_id, "type": task.task_type}

    return registry


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def tasks(
    registry: TaskRegistry, task_store: TaskStore, clock: ManualClock
) -> AsyncIterator[TaskManager]:
    manager = TaskManager(
        registry,
        task_store,
        clock=clock,
        # No queue beyond the running limit: over it, a delegation is refused.
        limits=TaskLimits(max_running=4, max_running_per_session=2, max_queued=0),
    )
    try:
        yield manager
    finally:
        await manager.shutdown(0)


async def delegate(tasks: TaskManager, task_type: str = "echo", **options: Any) -> Task:
    options.setdefault("peer_id", PEER)
    options.setdefault("session_id", SESSION)
    options.setdefault("payload", {})
    return await tasks.delegate(task_type=task_type, **options)


async def until(tasks: TaskManager, task_id: str, state: TaskState) -> Task:
    """The task once it reaches ``state`` (it must, within a few seconds)."""
    async with asyncio.timeout(5):
        async for task in tasks.watch(PEER, task_id):
            if task.state is state:
                return task
    raise AssertionError(f"task {task_id} ended without reaching {state.name}")


async def settled(tasks: TaskManager, running: int = 0) -> None:
    """Wait until the manager holds no more than ``running`` tasks."""
    await eventually(lambda: tasks.running <= running)


# --- delegation ------------------------------------------------------------------------------


async def test_waiting_delegation_returns_the_completed_task(tasks: TaskManager) -> None:
    task = await delegate(tasks, "echo", payload={"n": 1})

    assert task.state is T.COMPLETED
    assert task.result == {"n": 1}
    assert (task.owner_peer_id, task.session_id, task.task_type) == (PEER, SESSION, "echo")
    assert task.timeout == tasks.limits.default_timeout
    assert await tasks.get(PEER, task.task_id) == task


async def test_delegation_without_waiting_returns_at_once_and_the_task_runs_on(
    tasks: TaskManager, gate: Gate
) -> None:
    task = await delegate(tasks, "held", wait=False)

    assert task.state is T.SUBMITTED
    await gate.started.wait()
    assert (await tasks.get(PEER, task.task_id)).state is T.WORKING
    gate.release.set()
    done = await until(tasks, task.task_id, T.COMPLETED)
    assert done.result == {"runs": 1}


async def test_waiting_at_most_max_wait_returns_the_task_as_it_stands(
    tasks: TaskManager, gate: Gate
) -> None:
    task = await delegate(tasks, "held", max_wait=0.05)

    assert task.state is T.WORKING
    gate.release.set()
    await until(tasks, task.task_id, T.COMPLETED)


async def test_a_handler_sees_its_task(tasks: TaskManager) -> None:
    task = await delegate(tasks, "whoami")
    assert task.result == {"task_id": task.task_id, "peer": PEER, "type": "whoami"}


async def test_an_unknown_task_type_is_invalid_and_creates_nothing(tasks: TaskManager) -> None:
    with pytest.raises(InvalidArgument):
        await delegate(tasks, "nope")
    assert (await tasks.list_tasks(PEER)).tasks == ()


@pytest.mark.parametrize("seconds", [0.0, -1.0, 3600.5], ids=["zero", "negative", "over-max"])
async def test_a_timeout_out_of_range_is_invalid(tasks: TaskManager, seconds: float) -> None:
    with pytest.raises(InvalidArgument, match="timeout"):
        await delegate(tasks, "echo", timeout=seconds)
    assert (await tasks.list_tasks(PEER)).tasks == ()


# --- how tasks end ---------------------------------------------------------------------------


async def test_a_handler_exception_fails_the_task_without_a_traceback(
    tasks: TaskManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        task = await delegate(tasks, "explode")

    assert task.state is T.FAILED
    assert (task.error_code, task.error_message) == ("HANDLER_ERROR", "RuntimeError: disk on fire")
    assert "Traceback" not in task.error_message
    assert any(record.exc_info for record in caplog.records)  # the server's log has it


async def test_a_handler_that_refuses_rejects_the_task(tasks: TaskManager) -> None:
    task = await delegate(tasks, "refuse")
    assert task.state is T.REJECTED
    assert (task.error_code, task.error_message) == ("REJECTED", "no thanks")


@pytest.mark.parametrize("payload", [{"seconds": -1}, {"seconds": "x"}, {"seconds": 301}])
async def test_sleep_rejects_a_bad_duration(tasks: TaskManager, payload: dict[str, Any]) -> None:
    task = await delegate(tasks, "sleep", payload=payload)
    assert task.state is T.REJECTED
    assert "seconds must be a number from 0 to 300" in task.error_message


async def test_an_async_handler_past_its_timeout_fails_with_deadline_exceeded(
    tasks: TaskManager, gate: Gate
) -> None:
    task = await delegate(tasks, "held", timeout=0.05)

    assert task.state is T.FAILED
    assert task.error_code == "DEADLINE_EXCEEDED"
    assert "0.05s" in task.error_message
    await settled(tasks)


async def test_a_thread_handler_past_its_timeout_is_asked_to_stop(
    tasks: TaskManager, worker: Worker
) -> None:
    task = await delegate(tasks, "blocking", timeout=0.05)

    assert task.state is T.FAILED
    assert task.error_code == "DEADLINE_EXCEEDED"
    assert await asyncio.to_thread(worker.saw_cancel.wait, 5)
    await settled(tasks)


async def test_a_handler_that_cancels_itself_fails_its_task(
    registry: TaskRegistry, tasks: TaskManager
) -> None:
    @registry.task("self-cancel")
    async def self_cancel(payload: dict[str, Any]) -> dict[str, Any]:
        raise asyncio.CancelledError  # say, from a future something else canceled

    task = await delegate(tasks, "self-cancel")

    assert (task.state, task.error_code) == (T.FAILED, "HANDLER_ERROR")
    await settled(tasks)


async def test_a_timed_out_handler_keeps_its_slot_until_it_has_stopped(
    registry: TaskRegistry, task_store: TaskStore, clock: ManualClock
) -> None:
    cleaned_up = asyncio.Event()

    @registry.task("slow-cleanup")
    async def slow_cleanup(payload: dict[str, Any]) -> dict[str, Any]:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.2)  # still running, after its timeout
            cleaned_up.set()
        return {}

    limits = TaskLimits(max_running=1, max_running_per_session=1, max_queued=1)
    manager = TaskManager(registry, task_store, clock=clock, limits=limits)
    try:
        task = await delegate(manager, "slow-cleanup", timeout=0.05)
        assert (task.state, task.error_code) == (T.FAILED, "DEADLINE_EXCEEDED")
        if manager.queue is None:  # refused while the one slot is held
            with pytest.raises(TaskLimitReached):
                await delegate(manager, "echo", session_id="other")
        else:  # queued, and not run until the runner's one slot is free
            waiting = await delegate(manager, "echo", session_id="other", wait=False)
            await asyncio.sleep(0.05)
            assert (await manager.get(PEER, waiting.task_id)).state is T.SUBMITTED
            assert (await until(manager, waiting.task_id, T.COMPLETED)).result == {}
            assert cleaned_up.is_set()
        await cleaned_up.wait()
        await settled(manager)
        assert (await delegate(manager, "echo", session_id="other")).state is T.COMPLETED
    finally:
        await manager.shutdown(0)


async def test_cancel_stops_an_async_handler(tasks: TaskManager, gate: Gate) -> None:
    task = await delegate(tasks, "held", wait=False)
    await gate.started.wait()

    canceled = await tasks.cancel(PEER, task.task_id)

    assert canceled.state is T.CANCELED
    assert (canceled.error_code, canceled.error_message) == ("CANCELED", "canceled by its owner")
    await settled(tasks)
    assert (await tasks.get(PEER, task.task_id)).state is T.CANCELED  # not COMPLETED after all
    assert not gate.release.is_set()


async def test_cancel_asks_a_thread_handler_to_stop_and_holds_its_slot_until_it_does(
    tasks: TaskManager, worker: Worker
) -> None:
    task = await delegate(tasks, "blocking", wait=False)
    assert await asyncio.to_thread(worker.started.wait, 5)

    canceled = await tasks.cancel(PEER, task.task_id)

    assert canceled.state is T.CANCELED
    assert await asyncio.to_thread(worker.stopped.wait, 5)
    assert worker.saw_cancel.is_set()
    await settled(tasks)
    assert (await tasks.get(PEER, task.task_id)).state is T.CANCELED  # its result was dropped


async def test_a_waiting_caller_gets_the_canceled_task(tasks: TaskManager, gate: Gate) -> None:
    waiting = asyncio.ensure_future(delegate(tasks, "held"))
    await gate.started.wait()
    (task,) = (await tasks.list_tasks(PEER)).tasks

    await tasks.cancel(PEER, task.task_id)

    assert (await waiting).state is T.CANCELED


@pytest.mark.parametrize("task_type", ["echo", "explode", "refuse"])
async def test_a_task_that_ended_cannot_be_canceled(tasks: TaskManager, task_type: str) -> None:
    task = await delegate(tasks, task_type)
    with pytest.raises(TaskNotCancelable) as caught:
        await tasks.cancel(PEER, task.task_id)
    assert caught.value.state == task.state.name
    assert await tasks.get(PEER, task.task_id) == task


# --- one peer's tasks ------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["get", "cancel", "watch"])
async def test_another_peers_task_is_not_found(
    tasks: TaskManager, gate: Gate, operation: str
) -> None:
    task = await delegate(tasks, "held", wait=False)
    await gate.started.wait()

    attempts = {
        "get": lambda: tasks.get("peer-b", task.task_id),
        "cancel": lambda: tasks.cancel("peer-b", task.task_id),
        "watch": lambda: anext(tasks.watch("peer-b", task.task_id)),
    }
    with pytest.raises(TaskNotFound) as caught:
        await attempts[operation]()

    # Exactly what a task that never existed gets: nothing tells them apart.
    with pytest.raises(TaskNotFound) as never:
        await tasks.get("peer-b", "f" * 32)
    assert caught.value.reason == never.value.reason
    assert (await tasks.get(PEER, task.task_id)).state is T.WORKING
    assert (await tasks.list_tasks("peer-b")).tasks == ()


async def test_list_pages_through_the_peers_own_tasks_oldest_first(tasks: TaskManager) -> None:
    mine = [(await delegate(tasks, "echo", payload={"i": i})).task_id for i in range(5)]
    await delegate(tasks, "echo", peer_id="peer-b")

    pages: list[list[str]] = []
    token = ""
    while True:
        page = await tasks.list_tasks(PEER, page_size=2, page_token=token)
        pages.append([task.task_id for task in page.tasks])
        token = page.next_page_token
        if not token:
            break

    assert pages == [mine[0:2], mine[2:4], mine[4:5]]


async def test_list_filters_by_state(tasks: TaskManager) -> None:
    await delegate(tasks, "echo")
    failed = await delegate(tasks, "explode")
    page = await tasks.list_tasks(PEER, state=T.FAILED)
    assert [task.task_id for task in page.tasks] == [failed.task_id]


async def test_list_page_size_defaults_to_50_and_is_capped(tasks: TaskManager) -> None:
    for _ in range(51):
        await delegate(tasks, "echo")
    assert len((await tasks.list_tasks(PEER)).tasks) == 50
    assert MAX_PAGE_SIZE == 1000
    assert len((await tasks.list_tasks(PEER, page_size=5000)).tasks) == 51


async def test_a_page_ends_before_its_tasks_outgrow_a_reply(tasks: TaskManager) -> None:
    # Echo results of 700 KB: two fit MAX_PAGE_BYTES (2 MiB), three would not.
    blob = {"blob": "x" * 700_000}
    delegated = [(await delegate(tasks, "echo", payload=blob)).task_id for _ in range(5)]

    pages, token = [], ""
    while True:
        page = await tasks.list_tasks(PEER, page_token=token)
        pages.append([task.task_id for task in page.tasks])
        token = page.next_page_token
        if not token:
            break

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [task_id for page in pages for task_id in page] == delegated
    assert MAX_PAGE_BYTES == 2 * 1024 * 1024


async def test_a_page_holds_one_task_however_large(
    registry: TaskRegistry, task_store: TaskStore
) -> None:
    # Results allowed beyond a page's bytes: each page still carries one.
    limits = TaskLimits(max_result_bytes=2 * MAX_PAGE_BYTES)
    manager = TaskManager(registry, task_store, limits=limits)
    try:
        huge = {"blob": "x" * (MAX_PAGE_BYTES + 1)}
        first = await delegate(manager, "echo", payload=huge)
        second = await delegate(manager, "echo", payload=huge)
        page = await manager.list_tasks(PEER)
        following = await manager.list_tasks(PEER, page_token=page.next_page_token)
    finally:
        await manager.shutdown(0)

    assert [task.task_id for task in page.tasks] == [first.task_id]
    assert [task.task_id for task in following.tasks] == [second.task_id]
    assert following.next_page_token == ""


async def test_a_result_over_the_limit_fails_the_task_and_is_not_kept(
    registry: TaskRegistry, task_store: TaskStore
) -> None:
    manager = TaskManager(registry, task_store, limits=TaskLimits(max_result_bytes=100))
    try:
        fits = await delegate(manager, "echo", payload={"text": "x" * 80})
        too_large = await delegate(manager, "echo", payload={"text": "x" * 100})
    finally:
        await manager.shutdown(0)

    assert fits.state is TaskState.COMPLETED
    assert too_large.state is TaskState.FAILED
    assert too_large.error_code == "RESULT_TOO_LARGE"
    assert "111 bytes of JSON; at most 100 are kept" in too_large.error_message
    assert too_large.result is None
    assert (await task_store.get(too_large.task_id)).result is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("page_size", "page_token", "field"),
    [
        pytest.param(-1, "", "page_size", id="negative-page-size"),
        pytest.param(0, "not-a-token", "page_token", id="garbage-token"),
        pytest.param(0, "YWZ0ZXI6LTE", "page_token", id="negative-ordinal"),
        pytest.param(0, "x" * 65, "page_token", id="over-long-token"),
    ],
)
async def test_list_refuses_a_bad_page_request(
    tasks: TaskManager, page_size: int, page_token: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await tasks.list_tasks(PEER, page_size=page_size, page_token=page_token)
    assert [violation.field for violation in caught.value.violations] == [field]


# --- watching --------------------------------------------------------------------------------


async def test_watch_sees_the_current_state_then_every_change_and_ends(
    tasks: TaskManager, gate: Gate
) -> None:
    task = await delegate(tasks, "held", wait=False)
    await gate.started.wait()
    seen: list[Task] = []

    async def watch() -> None:
        async for update in tasks.watch(PEER, task.task_id):
            seen.append(update)

    watching = asyncio.ensure_future(watch())
    await asyncio.sleep(0.02)
    gate.release.set()
    await asyncio.wait_for(watching, 5)

    assert [update.state for update in seen] == [T.WORKING, T.COMPLETED]
    assert [update.version for update in seen] == [2, 3]


async def test_watch_from_the_start_sees_every_state(tasks: TaskManager, gate: Gate) -> None:
    task = await delegate(tasks, "held", wait=False)
    states = []
    async for update in tasks.watch(PEER, task.task_id):
        states.append(update.state)
        if update.state is T.WORKING:
            gate.release.set()
    assert states[-1] is T.COMPLETED
    assert states in ([T.SUBMITTED, T.WORKING, T.COMPLETED], [T.WORKING, T.COMPLETED])


async def test_watching_an_ended_task_gives_it_once(tasks: TaskManager) -> None:
    task = await delegate(tasks, "echo")
    assert [update async for update in tasks.watch(PEER, task.task_id)] == [task]


# --- limits ----------------------------------------------------------------------------------


async def test_over_the_session_limit_nothing_is_created(tasks: TaskManager, gate: Gate) -> None:
    for _ in range(2):
        await delegate(tasks, "held", wait=False)

    with pytest.raises(TaskLimitReached) as caught:
        await delegate(tasks, "held", wait=False)

    assert (caught.value.scope, caught.value.limit) == ("session", 2)
    assert caught.value.retry_after == 1.0
    assert len((await tasks.list_tasks(PEER)).tasks) == 2
    # Another session still has room.
    await delegate(tasks, "held", wait=False, session_id="session-2")


async def test_over_the_server_limit_nothing_is_created(tasks: TaskManager, gate: Gate) -> None:
    for index in range(4):
        await delegate(tasks, "held", wait=False, session_id=f"s{index}", peer_id=f"p{index}")

    with pytest.raises(TaskLimitReached) as caught:
        await delegate(tasks, "held", wait=False, session_id="s9", peer_id="p9")

    assert (caught.value.scope, caught.value.limit) == ("server", 4)
    assert (await tasks.list_tasks("p9")).tasks == ()


async def test_a_slot_frees_when_a_task_ends(tasks: TaskManager, gate: Gate) -> None:
    first = await delegate(tasks, "held", wait=False)
    await delegate(tasks, "held", wait=False)
    with pytest.raises(TaskLimitReached):
        await delegate(tasks, "held", wait=False)  # both slots are taken

    await tasks.cancel(PEER, first.task_id)
    await settled(tasks, 1)

    third = await delegate(tasks, "held", wait=False)
    assert not third.state.is_final
    assert tasks.running == 2


async def test_concurrent_delegations_never_oversell_the_limit(tasks: TaskManager) -> None:
    results = await asyncio.gather(
        *(delegate(tasks, "held", wait=False) for _ in range(10)), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, Task)]
    refused = [r for r in results if isinstance(r, TaskLimitReached)]
    assert (len(created), len(refused)) == (2, 8)


# --- sessions end, time passes, servers stop ----------------------------------------------------


async def test_ending_a_session_cancels_its_running_tasks_only(
    tasks: TaskManager, gate: Gate
) -> None:
    doomed = await delegate(tasks, "held", wait=False)
    other = await delegate(tasks, "held", wait=False, session_id="session-2")
    finished = await delegate(tasks, "echo")

    assert await tasks.cancel_session(SESSION) == 1

    ended = await tasks.get(PEER, doomed.task_id)
    assert (ended.state, ended.error_code) == (T.CANCELED, "SESSION_ENDED")
    assert not (await tasks.get(PEER, other.task_id)).state.is_final
    assert (await tasks.get(PEER, finished.task_id)).state is T.COMPLETED


async def test_orphans_of_sessions_no_longer_live_are_canceled(
    tasks: TaskManager, gate: Gate
) -> None:
    orphan = await delegate(tasks, "held", wait=False, session_id="gone")
    kept = await delegate(tasks, "held", wait=False, session_id="live")

    async def is_live(session_id: str) -> bool:
        return session_id == "live"

    assert await tasks.cancel_orphans(is_live) == 1
    assert (await tasks.get(PEER, orphan.task_id)).state is T.CANCELED
    assert not (await tasks.get(PEER, kept.task_id)).state.is_final


async def test_sweep_forgets_ended_tasks_after_the_retention(
    registry: TaskRegistry, task_store_factory: TaskStoreFactory, clock: ManualClock
) -> None:
    manager = TaskManager(registry, task_store_factory(retention=60.0), clock=clock)
    try:
        task = await manager.delegate(
            peer_id=PEER, session_id=SESSION, task_type="echo", payload={}
        )
        clock.advance(59)
        assert await manager.sweep() == 0
        clock.advance(1)
        assert await manager.sweep() == 1
        with pytest.raises(TaskNotFound):
            await manager.get(PEER, task.task_id)
    finally:
        await manager.shutdown(0)


async def test_shutdown_lets_quick_tasks_finish_and_cancels_the_rest(
    tasks: TaskManager, gate: Gate
) -> None:
    quick = await delegate(tasks, "sleep", payload={"seconds": 0.05}, wait=False)
    slow = await delegate(tasks, "held", wait=False, session_id="session-2")

    await tasks.shutdown(grace=1.0)

    assert (await tasks.get(PEER, quick.task_id)).state is T.COMPLETED
    stopped = await tasks.get(PEER, slow.task_id)
    assert (stopped.state, stopped.error_code) == (T.CANCELED, "SHUTDOWN")
    assert tasks.running == 0
    with pytest.raises(ShuttingDown):
        await delegate(tasks, "echo")


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        TaskLimits(default_timeout=10, max_timeout=5)
    with pytest.raises(ValueError, match="at least 1"):
        TaskLimits(max_running=0)


# --- an answer whose reply the store lost ---------------------------------------------------


class LosesTheReplyOfAnswers(MemoryTaskStore):
    """A store that applies an answer and then fails as if the reply was lost on the way
    back (a Redis connection that broke after the script ran), once."""

    lost = 0

    async def change(self, task_id: str, change: TaskChange, now: float) -> Task:
        task = await super().change(task_id, change, now)
        if change.answer is not None and not self.lost:
            self.lost += 1
            raise StoreUnavailable("connection lost after the command ran", 1.0)
        return task


async def test_an_answer_whose_reply_was_lost_is_given_once_and_reported_given() -> None:
    registry = TaskRegistry()
    answers: list[dict[str, Any]] = []

    @registry.task("ask", asks_for_input=True)
    async def ask(payload: dict[str, Any]) -> dict[str, Any]:
        answers.append(await current_task().ask({"question": "colour?"}))
        await asyncio.sleep(0.2)
        return {"ok": True}

    store = LosesTheReplyOfAnswers()
    tasks = TaskManager(registry, store)
    try:
        task = await tasks.delegate(
            peer_id=PEER, session_id=SESSION, task_type="ask", payload={}, wait=False
        )
        await eventually(lambda: _state_of(store, task.task_id) is T.INPUT_REQUIRED)

        resumed = await tasks.provide_input(PEER, task.task_id, {"colour": "red"}, question=1)

        assert store.lost == 1
        assert (resumed.state, resumed.answer) == (T.WORKING, {"colour": "red"})
        await eventually(lambda: _state_of(store, task.task_id) is T.COMPLETED)
        assert answers == [{"colour": "red"}]
    finally:
        await tasks.shutdown(grace=0)


def _state_of(store: MemoryTaskStore, task_id: str) -> TaskState | None:
    record = store._tasks.get(task_id)
    return record.latest.state if record is not None else None
