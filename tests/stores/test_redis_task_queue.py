"""The Redis task queue: enqueue, claim, leases, reclaim, fencing and the shared limits.

Each test has a store of its own (keys under a fresh prefix) on the shared real
redis-server; two "runners" are two runner ids on one queue, as two processes
would be. Leases are short so that lapsing takes a moment, not ten seconds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from peer_grpc.core.errors import InvalidTransition, TaskLimitReached
from peer_grpc.core.task import Progress, Task, TaskChange, TaskState
from peer_grpc.stores.protocols import Claim, QueueLimits, ReclaimResult
from peer_grpc.stores.redis import RedisTaskStore, task_scripts
from peer_grpc.stores.redis.task_queue import RedisTaskQueue, decode_snapshot, encode_snapshot
from tests.conftest import cluster_task_store, redis_task_store

T = TaskState
NOW = 1_700_000_000.0
LEASE = 0.2
LIMITS = QueueLimits(max_running=2, max_per_session=3, max_queued=2, retry_after=1.0)


@pytest.fixture(params=["redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisTaskStore]:
    """The task queue's store, on one Redis and on a Redis Cluster (one slot there)."""
    build = cluster_task_store if request.param == "redis-cluster" else redis_task_store
    store = build(retention=60.0)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def queue(store: RedisTaskStore) -> RedisTaskQueue:
    return store.queue


def new_task(session: str = "s1", *, max_attempts: int = 1, peer: str = "p1") -> Task:
    return Task(
        task_id=secrets.token_hex(8),
        task_type="echo",
        owner_peer_id=peer,
        session_id=session,
        state=T.SUBMITTED,
        created_at=NOW,
        updated_at=NOW,
        timeout=30.0,
        max_attempts=max_attempts,
    )


async def counts(store: RedisTaskStore) -> dict[str, int]:
    """The queued and running counts as Redis holds them."""
    queued, running = await store._redis.hmget(store._keys.task_counts, ["queued", "running"])
    return {"queued": int(queued or 0), "running": int(running or 0)}


async def enqueue(queue: RedisTaskQueue, task: Task, payload: dict[str, Any] | None = None) -> Task:
    return (await queue.enqueue(task, payload or {"n": 1}, LIMITS)).task


async def test_a_queued_task_is_stored_submitted_and_claimed_with_its_payload(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task(), {"n": 7})
    assert (await store.get(task.task_id)) == task
    assert task.state is T.SUBMITTED
    assert task.attempt == 0
    assert task.ordinal == 1

    [claim] = await queue.claim("runner-a", 5, NOW + 1)

    assert claim.payload == {"n": 7}
    assert (claim.task.state, claim.task.attempt, claim.task.version) == (T.WORKING, 1, 2)
    assert claim.task.updated_at == NOW + 1
    assert (await store.get(task.task_id)) == claim.task
    assert await counts(store) == {"queued": 0, "running": 1}


async def test_runners_take_tasks_in_the_order_they_were_queued(queue: RedisTaskQueue):
    limits = QueueLimits(max_running=10, max_per_session=10, max_queued=0, retry_after=1.0)
    queued = [(await queue.enqueue(new_task(), {"i": i}, limits)).task for i in range(6)]

    first = await queue.claim("runner-a", 2, NOW)
    second = await queue.claim("runner-b", 4, NOW)

    claimed = [claim.task.task_id for claim in (*first, *second)]
    assert claimed == [task.task_id for task in queued]


async def test_over_running_plus_queued_a_delegation_is_refused_and_nothing_is_stored(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    for session in ("s1", "s2", "s3", "s4"):  # 2 running + 2 queued
        await enqueue(queue, new_task(session))
    refused = new_task("s5")

    with pytest.raises(TaskLimitReached) as caught:
        await enqueue(queue, refused)

    assert (caught.value.scope, caught.value.limit) == ("queue", 2)
    assert await store.get(refused.task_id) is None
    assert await counts(store) == {"queued": 4, "running": 0}


async def test_a_session_over_its_limit_is_refused_whatever_the_queue_holds(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    limits = QueueLimits(max_running=10, max_per_session=2, max_queued=10, retry_after=1.0)
    for _ in range(2):
        await queue.enqueue(new_task("s1"), {}, limits)

    with pytest.raises(TaskLimitReached) as caught:
        await queue.enqueue(new_task("s1"), {}, limits)
    assert caught.value.scope == "session"
    await queue.enqueue(new_task("s2"), {}, limits)  # another session still may


async def test_claims_never_take_more_than_the_running_limit_over_all_runners(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    for session in ("s1", "s2", "s3", "s4"):
        await enqueue(queue, new_task(session))

    got = [*await queue.claim("runner-a", 5, NOW), *await queue.claim("runner-b", 5, NOW)]

    assert len(got) == LIMITS.max_running
    assert await counts(store) == {"queued": 2, "running": 2}


async def test_a_finished_task_frees_its_running_slot_for_the_next_claim(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    for session in ("s1", "s2", "s3"):
        await enqueue(queue, new_task(session))
    first, _ = await queue.claim("runner-a", 5, NOW)
    assert await queue.claim("runner-b", 5, NOW) == []

    done = await queue.finish(first, TaskChange(T.COMPLETED, result={"ok": True}), NOW + 1)

    assert done is not None
    assert done.state is T.COMPLETED
    assert done.result == {"ok": True}
    assert len(await queue.claim("runner-b", 5, NOW)) == 1
    assert await counts(store) == {"queued": 0, "running": 2}
    assert await store._redis.xlen(store._keys.task_queue) == 2  # the finished one's entry went


async def test_the_delegating_runner_claims_in_the_same_step(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = new_task()
    enqueued = await queue.enqueue(task, {"n": 1}, LIMITS, runner_id="front-end", claim=1)

    assert enqueued.task.state is T.SUBMITTED
    [claim] = enqueued.claims
    assert claim.task.task_id == task.task_id
    assert claim.task.state is T.WORKING


async def test_a_lapsed_lease_of_a_plain_handler_ends_the_task_worker_lost(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task())
    await queue.claim("runner-a", 1, NOW)

    assert await queue.reclaim("reaper", LEASE, NOW, 10) == ReclaimResult()  # not lapsed yet
    await asyncio.sleep(LEASE + 0.05)
    result = await queue.reclaim("reaper", LEASE, NOW + 5, 10)

    assert (result.requeued, result.ended) == (0, 1)
    lost = await store.get(task.task_id)
    assert lost is not None
    assert (lost.state, lost.error_code, lost.updated_at) == (T.FAILED, "WORKER_LOST", NOW + 5)
    assert await counts(store) == {"queued": 0, "running": 0}
    assert await queue.unfinished("s1") == []


async def test_a_renewed_lease_does_not_lapse(store: RedisTaskStore, queue: RedisTaskQueue):
    await enqueue(queue, new_task())
    [claim] = await queue.claim("runner-a", 1, NOW)

    for _ in range(4):
        await asyncio.sleep(LEASE / 2)
        assert await queue.renew("runner-a", [claim], NOW, LEASE / 2) == set()
    result = await queue.reclaim("reaper", LEASE, NOW, 10)

    assert (result.requeued, result.ended) == (0, 0)
    assert (await store.get(claim.task.task_id)).state is T.WORKING  # type: ignore[union-attr]


async def test_a_retryable_task_whose_lease_lapsed_runs_again_at_its_next_attempt(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task(max_attempts=2), {"n": 2})
    [_first] = await queue.claim("runner-a", 1, NOW)
    await asyncio.sleep(LEASE + 0.05)

    result = await queue.reclaim("reaper", LEASE, NOW, 10)

    assert (result.requeued, result.ended) == (1, 0)
    requeued = await store.get(task.task_id)
    assert requeued is not None
    assert (requeued.state, requeued.attempt) == (T.SUBMITTED, 1)
    [second] = await queue.claim("runner-b", 1, NOW)
    assert (second.task.attempt, second.payload) == (2, {"n": 2})
    # Its second attempt lapses too: out of attempts, it fails.
    await asyncio.sleep(LEASE + 0.05)
    assert (await queue.reclaim("reaper", LEASE, NOW, 10)).ended == 1
    assert (await store.get(task.task_id)).error_code == "WORKER_LOST"  # type: ignore[union-attr]


async def taken_over(queue: RedisTaskQueue) -> tuple[Task, Claim, Claim]:
    """A retryable task whose first runner's lease lapsed: the claims of both runners."""
    task = await enqueue(queue, new_task(max_attempts=3))
    [stale] = await queue.claim("runner-a", 1, NOW)
    await asyncio.sleep(LEASE + 0.05)
    await queue.reclaim("reaper", LEASE, NOW, 10)
    [current] = await queue.claim("runner-b", 1, NOW)
    return task, stale, current


async def test_a_runner_that_lost_its_lease_cannot_write_over_the_new_attempt(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task, stale, current = await taken_over(queue)

    assert await queue.finish(stale, TaskChange(T.COMPLETED, result={"by": "a"}), NOW) is None
    assert await queue.finish(stale, TaskChange(T.FAILED, error_code="X"), NOW) is None
    assert await queue.renew("runner-a", [stale], NOW, LEASE / 2) == {task.task_id}

    done = await queue.finish(current, TaskChange(T.COMPLETED, result={"by": "b"}), NOW)
    assert done is not None
    assert done.result == {"by": "b"}
    assert done.attempt == 2
    assert (await store.get(task.task_id)).result == {"by": "b"}  # type: ignore[union-attr]


async def test_a_stale_runner_cannot_fail_a_task_that_went_back_to_the_queue(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task(max_attempts=2))
    [stale] = await queue.claim("runner-a", 1, NOW)
    await asyncio.sleep(LEASE + 0.05)
    await queue.reclaim("reaper", LEASE, NOW, 10)  # SUBMITTED again, attempt 1

    assert await queue.finish(stale, TaskChange(T.FAILED, error_code="X"), NOW) is None
    assert (await store.get(task.task_id)).state is T.SUBMITTED  # type: ignore[union-attr]


async def test_a_cancel_elsewhere_is_reported_to_the_runner_at_its_renewal(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task())
    [claim] = await queue.claim("runner-a", 1, NOW)

    await store.change(task.task_id, TaskChange(T.CANCELED, error_code="CANCELED"), NOW)

    assert await queue.renew("runner-a", [claim], NOW, LEASE / 2) == {task.task_id}
    assert await queue.finish(claim, TaskChange(T.COMPLETED, result={}), NOW) is None
    assert await counts(store) == {"queued": 0, "running": 0}


async def test_a_task_canceled_while_queued_is_never_claimed(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task())
    await store.change(task.task_id, TaskChange(T.CANCELED, error_code="CANCELED"), NOW)

    assert await queue.claim("runner-a", 5, NOW) == []
    assert await counts(store) == {"queued": 0, "running": 0}


async def test_a_stopping_runner_hands_back_retryable_tasks_and_cancels_the_rest(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    retryable = await enqueue(queue, new_task("s1", max_attempts=3))
    plain = await enqueue(queue, new_task("s2"))
    await queue.claim("runner-a", 2, NOW)

    assert await queue.hand_back("runner-a", [retryable.task_id, plain.task_id], NOW) == 2

    back = await store.get(retryable.task_id)
    assert back is not None
    assert back.state is T.SUBMITTED
    ended = await store.get(plain.task_id)
    assert ended is not None
    assert (ended.state, ended.error_code) == (T.CANCELED, "SHUTDOWN")
    assert await counts(store) == {"queued": 1, "running": 0}


async def test_a_session_lists_its_unfinished_tasks(store: RedisTaskStore, queue: RedisTaskQueue):
    first = await enqueue(queue, new_task("s1"))
    second = await enqueue(queue, new_task("s1"))
    await enqueue(queue, new_task("s2"))
    await store.change(first.task_id, TaskChange(T.CANCELED), NOW)

    assert await queue.unfinished("s1") == [second.task_id]


async def test_scripts_sent_twice_act_once(store: RedisTaskStore, queue: RedisTaskQueue):
    """redis-py sends a script again after a timeout although the first send ran: the
    resend finds the first one's effect, and what the first one claimed (its answer
    lost) goes back to the queue at the runner's next renewal, never run."""
    task = new_task()
    first = await queue.enqueue(task, {}, LIMITS, runner_id="front-end", claim=1)
    again = await queue.enqueue(task, {}, LIMITS, runner_id="front-end", claim=1)

    assert again.task == first.task
    assert again.claims == ()
    assert await counts(store) == {"queued": 0, "running": 1}

    await enqueue(queue, new_task("s2"))
    claim_script = store._redis.register_script(task_scripts.CLAIM)
    args: list[str | int] = [store._keys.tasks, "runner-b", 5, repr(NOW)]
    _, sent = await claim_script(keys=[store._keys.task_counts], args=args)
    _, resent = await claim_script(keys=[store._keys.task_counts], args=args)
    assert (len(sent), len(resent)) == (1, 0)
    assert await counts(store) == {"queued": 0, "running": 2}

    await asyncio.sleep(LEASE / 2 + 0.05)
    await queue.renew("front-end", [], NOW, LEASE / 2)
    await queue.renew("runner-b", [], NOW, LEASE / 2)
    assert await counts(store) == {"queued": 2, "running": 0}


async def test_a_task_claimed_as_it_was_queued_wakes_no_idle_runner(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    """Idle runners wait for a wake; only a task left waiting sends one."""
    assert await queue.claim("idle-runner", 1, NOW) == []
    wakes = await store._redis.xlen(store._keys.task_wake)

    await queue.enqueue(new_task("s1"), {}, LIMITS, runner_id="front-end", claim=1)
    assert await store._redis.xlen(store._keys.task_wake) == wakes

    await queue.enqueue(new_task("s2"), {}, LIMITS)  # left waiting
    assert await store._redis.xlen(store._keys.task_wake) == wakes + 1
    async with asyncio.timeout(1):
        await queue.wait_for_work(30)  # returns at once: the wake came after the claim


async def test_a_claim_whose_reply_was_lost_goes_back_to_the_queue_unrun(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    """The runner never learned of the claim, so the task never ran: it is queued again
    at its next renewal, its attempt given back, instead of failing WORKER_LOST."""
    task = await enqueue(queue, new_task())
    claim_script = store._redis.register_script(task_scripts.CLAIM)
    args: list[str | int] = [store._keys.tasks, "runner-a", 1, repr(NOW)]
    await claim_script(keys=[store._keys.task_counts], args=args)  # its answer never read
    assert (await store.get(task.task_id)).state is T.WORKING  # type: ignore[union-attr]

    assert await queue.renew("runner-a", [], NOW, LEASE / 2) == set()  # too soon to tell
    await asyncio.sleep(LEASE / 2 + 0.05)
    assert await queue.renew("runner-a", [], NOW, LEASE / 2) == set()

    back = await store.get(task.task_id)
    assert back is not None
    assert (back.state, back.attempt) == (T.SUBMITTED, 0)
    assert await counts(store) == {"queued": 1, "running": 0}
    [claim] = await queue.claim("runner-b", 1, NOW)
    assert claim.task.attempt == 1


async def test_an_unfinished_task_is_kept_until_it_ends_then_for_the_retention(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    """A queued task may wait longer than any fixed time: it must not vanish from under
    its counts and its session's open set."""
    task = await enqueue(queue, new_task())
    key = store._keys.task(task.task_id)
    assert await store._redis.pttl(key) == -1
    [claim] = await queue.claim("runner-a", 1, NOW)
    assert await store._redis.pttl(key) == -1

    await queue.finish(claim, TaskChange(T.COMPLETED, result={}), NOW)

    assert 0 < await store._redis.pttl(key) <= 60_000


async def test_a_lapsed_lease_deep_in_a_long_pending_list_is_still_found(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    """Each reclaim scans a bounded stretch of the pending list and the next goes on
    from there, so renewed leases ahead of a lapsed one cannot hide it."""
    limits = QueueLimits(max_running=100, max_per_session=100, max_queued=0, retry_after=1.0)
    for _ in range(30):
        await queue.enqueue(new_task(), {}, limits)
    claims = await queue.claim("runner-a", 30, NOW)
    await asyncio.sleep(LEASE + 0.05)
    await queue.renew("runner-a", claims[:-1], NOW, 60)

    ended = 0
    for _ in range(4):  # each call claims at most 1 and scans at most 10 entries
        ended += (await queue.reclaim("reaper", LEASE, NOW, 1)).ended

    assert ended == 1
    lost = await store.get(claims[-1].task.task_id)
    assert lost is not None
    assert lost.error_code == "WORKER_LOST"


async def test_a_stopping_runner_leaves_the_group_and_gives_back_what_it_never_learned_of(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task())
    claim_script = store._redis.register_script(task_scripts.CLAIM)
    args: list[str | int] = [store._keys.tasks, "runner-a", 1, repr(NOW)]
    await claim_script(keys=[store._keys.task_counts], args=args)

    assert await queue.hand_back("runner-a", [], NOW) == 1

    back = await store.get(task.task_id)
    assert back is not None
    assert (back.state, back.attempt) == (T.SUBMITTED, 0)
    consumers = await store._redis.xinfo_consumers(store._keys.task_queue, "runners")
    assert "runner-a" not in {c["name"].decode() for c in consumers}


async def test_a_claim_given_back_unrun_cannot_write_over_the_next_claim_at_the_same_attempt(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    """A claim given back refunds its attempt, so the next claim has the same number:
    writes are fenced by the claim's own queue entry, which never repeats."""
    task = await enqueue(queue, new_task())
    [late] = await queue.claim("runner-a", 1, NOW)  # runner-a learns of this only later
    await asyncio.sleep(LEASE / 2 + 0.05)
    await queue.renew("runner-a", [], NOW, LEASE / 2)  # given back as unknown
    [current] = await queue.claim("runner-b", 1, NOW)
    assert current.task.attempt == late.task.attempt == 1

    assert await queue.finish(late, TaskChange(T.COMPLETED, result={"by": "a"}), NOW) is None
    assert await queue.renew("runner-a", [late], NOW, LEASE / 2) == {task.task_id}
    done = await queue.finish(current, TaskChange(T.COMPLETED, result={"by": "b"}), NOW)
    assert done is not None
    assert done.result == {"by": "b"}


# --- a task waiting for input is still its runner's ------------------------------------------


async def asking(queue: RedisTaskQueue, claim: Claim) -> Claim:
    """The claim after its handler asked a question (the task INPUT_REQUIRED)."""
    asked = await queue.finish(claim, TaskChange.asking({"q": "colour?"}), NOW)
    assert asked is not None
    assert asked.state is T.INPUT_REQUIRED
    return replace(claim, task=asked)


async def test_a_task_waiting_for_input_keeps_its_running_slot_and_its_lease(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    await enqueue(queue, new_task())
    [claim] = await queue.claim("runner-a", 1, NOW)
    claim = await asking(queue, claim)

    assert await counts(store) == {"queued": 0, "running": 1}
    for _ in range(3):
        await asyncio.sleep(LEASE / 2)
        assert await queue.renew("runner-a", [claim], NOW, LEASE / 2) == set()
    assert await queue.reclaim("reaper", LEASE, NOW, 10) == ReclaimResult()

    resumed = await store.change(claim.task.task_id, TaskChange.answered({"c": "red"}), NOW)
    assert (resumed.state, resumed.answer) == (T.WORKING, {"c": "red"})
    assert await counts(store) == {"queued": 0, "running": 1}
    done = await queue.finish(replace(claim, task=resumed), TaskChange(T.COMPLETED, result={}), NOW)
    assert done is not None
    assert await counts(store) == {"queued": 0, "running": 0}


async def test_a_task_whose_runner_died_while_it_waited_for_input_is_reclaimed(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    plain = await enqueue(queue, new_task("s1"))
    retryable = await enqueue(queue, new_task("s2", max_attempts=2))
    for claim in await queue.claim("runner-a", 2, NOW):
        await asking(queue, claim)
    await asyncio.sleep(LEASE + 0.05)

    result = await queue.reclaim("reaper", LEASE, NOW + 5, 10)

    assert (result.requeued, result.ended) == (1, 1)
    lost = await store.get(plain.task_id)
    assert lost is not None
    assert (lost.state, lost.error_code, lost.question) == (T.FAILED, "WORKER_LOST", None)
    again = await store.get(retryable.task_id)
    assert again is not None
    # Queued for a fresh run: its question went with the handler that asked it.
    assert (again.state, again.question, again.questions_asked) == (T.SUBMITTED, None, 1)
    assert await counts(store) == {"queued": 1, "running": 0}


async def test_an_answer_never_starts_a_task_that_went_back_to_the_queue(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task(max_attempts=2))
    [claim] = await queue.claim("runner-a", 1, NOW)
    await asking(queue, claim)
    await asyncio.sleep(LEASE + 0.05)
    await queue.reclaim("reaper", LEASE, NOW, 10)

    with pytest.raises(InvalidTransition):
        await store.change(task.task_id, TaskChange.answered({"c": "late"}), NOW)
    assert (await store.get(task.task_id)).state is T.SUBMITTED  # type: ignore[union-attr]


async def test_progress_reports_are_fenced_by_the_claim_like_every_write(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task, stale, current = await taken_over(queue)

    report = TaskChange.reported(Progress(0.5, "half"), {"so": "far"})
    assert await queue.finish(stale, report, NOW) is None
    written = await queue.finish(current, report, NOW)

    assert written is not None
    assert (written.state, written.progress, written.partial_result) == (
        T.WORKING,
        Progress(0.5, "half"),
        {"so": "far"},
    )
    assert await store.get(task.task_id) == written


async def test_a_task_keeps_its_latest_snapshots_however_often_it_reports(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task())
    [claim] = await queue.claim("runner-a", 1, NOW)
    for number in range(1, 501):
        written = await queue.finish(claim, TaskChange.reported(Progress(number / 500, "")), NOW)
        assert written is not None
        claim = replace(claim, task=written)

    kept = await store._redis.xlen(store._keys.task(task.task_id))
    # Redis trims whole nodes of a stream (100 entries by default) past the 64 asked.
    assert 64 <= kept <= 64 + 100
    newest = await store.changes_after(task.task_id, 0)
    assert newest[-1] == claim.task
    assert [t.version for t in newest] == list(range(newest[0].version, claim.task.version + 1))


# --- snapshots across a rolling upgrade --------------------------------------------------------

#: The fields of a snapshot's JSON that every release reads.
FIRST_RELEASE_FIELDS = {
    "task_id", "task_type", "owner_peer_id", "session_id", "state", "created_at",
    "updated_at", "timeout", "result", "error_code", "error_message", "version",
    "ordinal", "attempt", "max_attempts",
}  # fmt: skip


def test_a_snapshot_of_a_task_that_reports_nothing_holds_only_the_fields_older_releases_read():
    encoded = json.loads(encode_snapshot(new_task()))
    assert set(encoded) == FIRST_RELEASE_FIELDS


def test_a_snapshot_keeps_progress_partial_results_and_questions():
    task = (
        new_task()
        .changed(TaskChange(T.WORKING), NOW)
        .changed(TaskChange.reported(Progress(None, "warming up"), {"rows": 3}), NOW)
        .changed(TaskChange.asking({"q": "colour?"}), NOW)
    )
    entry = {b"task": encode_snapshot(task).encode()}

    assert decode_snapshot(f"{task.version}-0".encode(), entry) == task


def test_an_older_snapshot_reads_with_the_new_fields_unset_and_a_newer_ones_extras_are_ignored():
    old = json.loads(encode_snapshot(new_task()))
    newer = {**old, "a_field_of_a_later_release": [1, 2]}

    for raw in (old, newer):
        task = decode_snapshot(b"1-0", {b"task": json.dumps(raw).encode()})
        assert (task.progress, task.partial_result, task.question, task.questions_asked) == (
            None,
            None,
            None,
            0,
        )


async def test_a_task_run_again_starts_its_progress_afresh(
    store: RedisTaskStore, queue: RedisTaskQueue
):
    task = await enqueue(queue, new_task(max_attempts=2))
    [first] = await queue.claim("runner-a", 1, NOW)
    reported = await queue.finish(
        first, TaskChange.reported(Progress(0.9, "nearly"), {"n": 9}), NOW
    )
    assert reported is not None
    await asyncio.sleep(LEASE + 0.05)
    await queue.reclaim("reaper", LEASE, NOW, 10)

    queued = await store.get(task.task_id)
    [second] = await queue.claim("runner-b", 1, NOW)

    assert queued is not None
    assert (queued.state, queued.progress, queued.partial_result) == (T.SUBMITTED, None, None)
    assert (second.task.attempt, second.task.progress, second.task.partial_result) == (
        2,
        None,
        None,
    )
