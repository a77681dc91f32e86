"""The task state machine and the task store: which changes are legal, and what a store keeps.

The spec (peer.proto): SUBMITTED -> WORKING -> COMPLETED, FAILED, CANCELED or REJECTED;
SUBMITTED -> FAILED, CANCELED or REJECTED; WORKING -> INPUT_REQUIRED -> WORKING, FAILED or
CANCELED; WORKING or INPUT_REQUIRED -> SUBMITTED when a runner is lost. The four final
states never change again.
Every other change, including staying put, is refused with InvalidTransition and changes
nothing. The store tests run against every TaskStore implementation.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from peer_grpc import InvalidTransition, ManualClock
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.errors import TaskNotFound
from peer_grpc.core.task import TASK_MACHINE, Progress, Task, TaskChange, TaskState
from peer_grpc.stores import TaskStore
from tests.conftest import TaskStoreFactory, state_slug, transition_params

T = TaskState

#: The legal moves, written out from the protocol spec (not derived from the code's table).
LEGAL: frozenset[tuple[TaskState, TaskState]] = frozenset(
    {
        (T.SUBMITTED, T.WORKING),
        (T.SUBMITTED, T.FAILED),
        (T.SUBMITTED, T.CANCELED),
        (T.SUBMITTED, T.REJECTED),
        # Queued again when its runner was lost and the handler is retryable.
        (T.WORKING, T.SUBMITTED),
        (T.WORKING, T.COMPLETED),
        (T.WORKING, T.FAILED),
        (T.WORKING, T.CANCELED),
        (T.WORKING, T.REJECTED),
        # The handler asks a question, and waits.
        (T.WORKING, T.INPUT_REQUIRED),
        # Answered; or out of time, canceled, or its runner lost while it waited.
        (T.INPUT_REQUIRED, T.WORKING),
        (T.INPUT_REQUIRED, T.FAILED),
        (T.INPUT_REQUIRED, T.CANCELED),
        (T.INPUT_REQUIRED, T.SUBMITTED),
    }
)
FINAL = (T.COMPLETED, T.FAILED, T.CANCELED, T.REJECTED)


LEGAL_PAIRS = transition_params(TaskState, LEGAL, legal_ones=True)
ILLEGAL_PAIRS = transition_params(TaskState, LEGAL, legal_ones=False)


def test_the_pairs_cover_every_combination_of_states() -> None:
    assert len(LEGAL_PAIRS) == 14
    assert len(LEGAL_PAIRS) + len(ILLEGAL_PAIRS) == len(TaskState) ** 2


def test_transition_table_is_the_spec() -> None:
    assert set(TASK_MACHINE.transitions) == set(TaskState)
    assert {(s, t) for s, targets in TASK_MACHINE.transitions.items() for t in targets} == LEGAL


@pytest.mark.parametrize("state", list(TaskState), ids=state_slug)
def test_state_values_match_the_proto_enum(state: TaskState) -> None:
    assert peer_pb2.TaskState.Value(f"TASK_STATE_{state.name}") == state.value


@pytest.mark.parametrize("state", list(TaskState), ids=state_slug)
def test_only_completed_failed_canceled_and_rejected_are_final(state: TaskState) -> None:
    assert state.is_final is (state in FINAL)


@pytest.mark.parametrize(("source", "target"), LEGAL_PAIRS)
def test_legal_transition_is_allowed(source: TaskState, target: TaskState) -> None:
    assert TASK_MACHINE.check(source, target) is target


@pytest.mark.parametrize(("source", "target"), ILLEGAL_PAIRS)
def test_illegal_transition_is_refused(source: TaskState, target: TaskState) -> None:
    with pytest.raises(InvalidTransition) as caught:
        TASK_MACHINE.check(source, target)
    assert caught.value.error_metadata() == {
        "from_state": source.name,
        "to_state": target.name,
        "subject": "task",
    }
    assert "illegal task state transition" in caught.value.message


# --- the store applies the machine -----------------------------------------------------------

#: How to bring a new task to each state, one legal change at a time.
PATHS: dict[TaskState, tuple[TaskState, ...]] = {
    T.SUBMITTED: (),
    T.WORKING: (T.WORKING,),
    T.COMPLETED: (T.WORKING, T.COMPLETED),
    T.FAILED: (T.WORKING, T.FAILED),
    T.CANCELED: (T.CANCELED,),
    T.REJECTED: (T.WORKING, T.REJECTED),
    T.INPUT_REQUIRED: (T.WORKING, T.INPUT_REQUIRED),
}


def new_task(task_id: str = "t1", owner: str = "peer-a", now: float = 100.0) -> Task:
    return Task(
        task_id=task_id,
        task_type="echo",
        owner_peer_id=owner,
        session_id="s1",
        state=T.SUBMITTED,
        created_at=now,
        updated_at=now,
        timeout=30.0,
    )


async def task_in(store: TaskStore, state: TaskState, task_id: str = "t1") -> Task:
    task = await store.create(new_task(task_id))
    for step in PATHS[state]:
        task = await store.change(task_id, TaskChange(step), 100.0)
    return task


@pytest.mark.parametrize(("source", "target"), LEGAL_PAIRS)
async def test_store_applies_a_legal_change(
    task_store: TaskStore, source: TaskState, target: TaskState
) -> None:
    before = await task_in(task_store, source)
    if target is T.COMPLETED:
        change = TaskChange(target, result={"ok": True})
    elif source is T.INPUT_REQUIRED and target is T.WORKING:
        change = TaskChange.answered({"colour": "blue"})  # only an answer resumes
    else:
        change = TaskChange(target, error_code="X", error_message="why")

    after = await task_store.change("t1", change, 200.0)

    assert after.state is target
    assert after.updated_at == 200.0
    assert after.version == before.version + 1
    assert await task_store.get("t1") == after


@pytest.mark.parametrize(("source", "target"), ILLEGAL_PAIRS)
async def test_store_refuses_an_illegal_change_and_keeps_the_task(
    task_store: TaskStore, source: TaskState, target: TaskState
) -> None:
    before = await task_in(task_store, source)

    with pytest.raises(InvalidTransition):
        await task_store.change("t1", TaskChange(target), 200.0)

    assert await task_store.get("t1") == before


async def test_store_changing_an_unknown_task_is_not_found(task_store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        await task_store.change("nope", TaskChange(T.WORKING), 1.0)
    assert await task_store.get("nope") is None


async def test_store_assigns_ordinals_in_creation_order(task_store: TaskStore) -> None:
    first = await task_store.create(new_task("a"))
    second = await task_store.create(new_task("b"))
    assert 0 < first.ordinal < second.ordinal


async def test_store_hands_every_change_to_a_watcher_in_order(task_store: TaskStore) -> None:
    created = await task_store.create(new_task())
    waiting = asyncio.ensure_future(task_store.changes_after("t1", created.version))
    await asyncio.sleep(0.01)
    assert not waiting.done()

    # Two changes in a row, perhaps before the watcher runs again: it must see both.
    await task_store.change("t1", TaskChange(T.WORKING), 101.0)
    await task_store.change("t1", TaskChange(T.COMPLETED, result={}), 102.0)

    seen = list(await asyncio.wait_for(waiting, 5))
    while not seen[-1].state.is_final:
        seen += await asyncio.wait_for(task_store.changes_after("t1", seen[-1].version), 5)
    assert [task.state for task in seen] == [T.WORKING, T.COMPLETED]
    assert [task.version for task in seen] == [created.version + 1, created.version + 2]
    assert await task_store.changes_after("t1", seen[0].version) == [seen[1]]


async def test_store_lists_a_peers_tasks_oldest_first_in_pages(task_store: TaskStore) -> None:
    for index in range(5):
        await task_store.create(new_task(f"a{index}", owner="peer-a"))
        await task_store.create(new_task(f"b{index}", owner="peer-b"))
    await task_store.change("a3", TaskChange(T.CANCELED), 101.0)

    first = await task_store.list_owned("peer-a", after=0, limit=2)
    rest = await task_store.list_owned("peer-a", after=first[-1].ordinal, limit=10)
    canceled = await task_store.list_owned("peer-a", after=0, limit=10, state=T.CANCELED)

    assert [task.task_id for task in first] == ["a0", "a1"]
    assert [task.task_id for task in rest] == ["a2", "a3", "a4"]
    assert [task.task_id for task in canceled] == ["a3"]
    assert await task_store.list_owned("nobody", after=0, limit=10) == []


@pytest.mark.parametrize("retention", [0.0, 60.0])
async def test_store_sweep_forgets_only_tasks_ended_longer_ago_than_retention(
    task_store_factory: TaskStoreFactory, retention: float
) -> None:
    clock = ManualClock(1000.0)
    store = task_store_factory(retention=retention)
    try:
        await store.create(new_task("running"))
        await store.create(new_task("ended"))
        await store.change("ended", TaskChange(T.CANCELED), clock.now())

        if retention:
            assert (await store.sweep(clock.now() + retention - 1, 100)).purged == 0
        result = await store.sweep(clock.now() + retention, 100)

        assert result.purged == 1
        assert await store.get("ended") is None
        assert await store.get("running") is not None
        assert [t.task_id for t in await store.list_owned("peer-a", after=0, limit=9)] == [
            "running"
        ]
    finally:
        await store.close()


async def test_store_sweep_works_in_bounded_batches(task_store_factory: TaskStoreFactory) -> None:
    store = task_store_factory(retention=0.0)
    try:
        for index in range(5):
            await store.create(new_task(f"t{index}"))
            await store.change(f"t{index}", TaskChange(T.CANCELED), 100.0)

        first = await store.sweep(100.0, 2)
        second = await store.sweep(100.0, 10)

        assert (first.purged, first.more) == (2, True)
        assert (second.purged, second.more) == (3, False)
    finally:
        await store.close()


# --- reports, questions and answers --------------------------------------------------------------


def working_task() -> Task:
    return new_task().changed(TaskChange(T.WORKING), 101.0)


def test_a_report_keeps_the_task_working_and_replaces_what_it_reports() -> None:
    working = working_task()

    first = working.changed(TaskChange.reported(Progress(0.2, "reading"), {"rows": 1}), 102.0)
    second = first.changed(TaskChange.reported(Progress(0.4, "")), 103.0)

    assert (second.state, second.version, second.attempt) == (T.WORKING, working.version + 2, 1)
    assert second.progress == Progress(0.4, "")
    assert second.partial_result == {"rows": 1}  # not reported again: kept


@pytest.mark.parametrize("state", [T.SUBMITTED, T.INPUT_REQUIRED, *FINAL], ids=state_slug)
def test_a_report_of_a_task_that_is_not_working_is_refused(state: TaskState) -> None:
    task = _task_in_state(state)
    with pytest.raises(InvalidTransition):
        task.changed(TaskChange.reported(Progress(0.5, "")), 200.0)


def _task_in_state(state: TaskState) -> Task:
    task = new_task()
    for step in PATHS[state]:
        task = task.changed(TaskChange(step), 100.0)
    return task


def test_a_question_shows_until_the_answer_resumes_the_handler() -> None:
    asked = working_task().changed(TaskChange.asking({"q": "colour?"}), 102.0)
    assert (asked.state, asked.question, asked.questions_asked) == (
        T.INPUT_REQUIRED,
        {"q": "colour?"},
        1,
    )

    resumed = asked.changed(TaskChange.answered({"colour": "red"}, question=1), 103.0)

    assert (resumed.state, resumed.question, resumed.answer) == (T.WORKING, None, {"colour": "red"})
    assert resumed.attempt == asked.attempt, "a resumed handler is the same run"
    reported = resumed.changed(TaskChange.reported(Progress(0.9, "")), 104.0)
    assert reported.answer is None, "the answer rides on the snapshot that resumed it alone"
    again = reported.changed(TaskChange.asking({"q": "size?"}), 105.0)
    assert again.questions_asked == 2


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(TaskChange(T.WORKING), id="resume-without-an-answer"),
        pytest.param(TaskChange.answered({"a": 1}, question=2), id="answer-to-another-question"),
    ],
)
def test_only_an_answer_to_the_question_waiting_resumes_the_handler(change: TaskChange) -> None:
    asked = working_task().changed(TaskChange.asking({"q": 1}), 102.0)
    with pytest.raises(InvalidTransition):
        asked.changed(change, 103.0)


@pytest.mark.parametrize("state", [T.SUBMITTED, T.WORKING, *FINAL], ids=state_slug)
def test_an_answer_to_a_task_that_asks_nothing_is_refused(state: TaskState) -> None:
    with pytest.raises(InvalidTransition):
        _task_in_state(state).changed(TaskChange.answered({"a": 1}), 200.0)


async def test_store_keeps_a_reporting_tasks_latest_snapshots_for_its_watchers(
    task_store: TaskStore,
) -> None:
    await task_store.create(new_task())
    latest = await task_store.change("t1", TaskChange(T.WORKING), 101.0)
    for number in range(1, 301):
        latest = await task_store.change(
            "t1", TaskChange.reported(Progress(number / 300, "")), 101.0
        )

    kept = await task_store.changes_after("t1", 0)

    assert kept[-1] == latest
    # A watcher far behind skips to the oldest kept, and from there sees every change.
    assert 64 <= len(kept) <= 164
    assert [task.version for task in kept] == list(range(kept[0].version, latest.version + 1))


async def test_store_keeps_only_the_state_changes_of_a_task_that_ended(
    task_store: TaskStore,
) -> None:
    await task_store.create(new_task())
    await task_store.change("t1", TaskChange(T.WORKING), 101.0)
    for number in range(1, 21):
        await task_store.change(
            "t1", TaskChange.reported(Progress(number / 20, ""), {"part": number}), 101.0
        )
    ended = await task_store.change("t1", TaskChange(T.COMPLETED, result={"all": 20}), 102.0)

    kept = await task_store.changes_after("t1", 0)

    assert [task.state for task in kept] == [T.SUBMITTED, T.WORKING, T.COMPLETED]
    assert kept[-1] == ended
    assert (ended.progress, ended.partial_result) == (Progress(1.0, ""), {"part": 20})


def test_a_change_sets_what_it_names_and_carries_every_other_field() -> None:
    reported = working_task().changed(
        TaskChange.reported(Progress(0.5, "half"), {"rows": 2}), 102.0
    )
    before = replace(reported, ordinal=7, max_attempts=3)

    after = before.changed(
        TaskChange(T.FAILED, result=None, error_code="BOOM", error_message="why"), 103.0
    )

    assert after == replace(
        before,
        state=T.FAILED,
        updated_at=103.0,
        error_code="BOOM",
        error_message="why",
        version=before.version + 1,
    )
