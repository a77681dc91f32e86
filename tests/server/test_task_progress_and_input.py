"""Tasks that tell how they are doing and ask for what they need, on both stores.

A running handler reports progress and partial results: they show on the task and
in WatchTask, in the order they were made, before the task's end, and coalesced to
at most one stored report per progress interval. A handler of a type registered
with ``asks_for_input`` may ask its delegating peer a question: the task waits in
INPUT_REQUIRED, showing the question, until the peer answers with ProvideInput (a
sequence-checked call answered once), then runs on WORKING with the answer. The
wait counts against the task's timeout, and CancelTask works while it lasts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from peer_grpc import PeerClient, PeerServer, TaskNotWaitingForInput
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.task import TaskState
from peer_grpc.tasks.registry import TaskRegistry, current_task, default_registry
from tests.conftest import eventually
from tests.rpc_details import details_of
from tests.server.test_task_rpcs import Peer, expect_error, open_peer

Stub = peer_pb2_grpc.PeerServiceStub
INPUT_REQUIRED = peer_pb2.TASK_STATE_INPUT_REQUIRED
WORKING = peer_pb2.TASK_STATE_WORKING


@dataclass
class Steps:
    """Lets a test move a handler on one step at a time, and records what it saw."""

    go: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    answers: list[dict[str, Any]] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self) -> None:
        await self.go.get()


@pytest.fixture
def steps() -> Steps:
    return Steps()


@pytest.fixture
def task_registry(steps: Steps) -> TaskRegistry:
    registry = default_registry()

    @registry.task("stepped", description="Reports progress at each step the test allows.")
    async def stepped(payload: dict[str, Any]) -> dict[str, Any]:
        task = current_task()
        task.progress(0.25, "reading")
        await steps.next()
        task.progress(0.5, "resizing")
        task.partial({"done": ["a.png"]})
        await steps.next()
        task.progress(0.75)  # a fraction alone keeps no message
        return {"done": ["a.png", "b.png"]}

    @registry.task("chatty")
    async def chatty(payload: dict[str, Any]) -> dict[str, Any]:
        # Reports far faster than any store should take them, for about a second.
        count = int(payload["reports"])
        for number in range(1, count + 1):
            current_task().progress(number / count, f"step {number}")
            await asyncio.sleep(1.0 / count)
        return {"reports": count}

    @registry.task("threaded")
    def threaded(payload: dict[str, Any]) -> dict[str, Any]:
        # A plain handler reports from its worker thread.
        task = current_task()
        for number in range(1, 4):
            task.progress(number / 3, f"thread step {number}")
            time.sleep(0.3)
        assert threading.current_thread() is not threading.main_thread()
        return {"ok": True}

    @registry.task("ask", asks_for_input=True, description="Asks for a colour, then a size.")
    async def ask(payload: dict[str, Any]) -> dict[str, Any]:
        try:
            colour = await current_task().ask({"question": "which colour?"})
            steps.answers.append(colour)
            if payload.get("twice"):
                size = await current_task().ask({"question": "which size?"})
                steps.answers.append(size)
        except asyncio.CancelledError:
            steps.stopped.set()
            raise
        return {"answers": steps.answers}

    @registry.task("ask-then-report", asks_for_input=True)
    async def ask_then_report(payload: dict[str, Any]) -> dict[str, Any]:
        task = current_task()
        task.progress(0.1, "before")  # and at once a question: the report goes first
        steps.answers.append(await task.ask({"question": "go on?"}))
        task.progress(0.5, "after the answer")
        await steps.next()
        task.progress(0.9, "later")
        await steps.next()
        return {"ok": True}

    @registry.task("impatient", asks_for_input=True)
    async def impatient(payload: dict[str, Any]) -> dict[str, Any]:
        task = current_task()
        try:
            steps.answers.append(await asyncio.wait_for(task.ask({"question": "quick?"}), 0.5))
        except TimeoutError:
            task.progress(0.5, "went on without an answer")
        await steps.next()
        return {"answered": bool(steps.answers)}

    @registry.task("leaves-a-question", asks_for_input=True)
    async def leaves_a_question(payload: dict[str, Any]) -> dict[str, Any]:
        # Asks in the background, and returns before anyone answers.
        asking = asyncio.create_task(current_task().ask({"question": "never mind"}))
        await steps.next()
        assert not asking.done()
        return {"done": True}

    @registry.task("rude")
    async def rude(payload: dict[str, Any]) -> dict[str, Any]:
        await current_task().ask({"question": "not allowed to ask"})
        return {}

    return registry


async def until_state(client: PeerClient, task_id: str, state: int) -> peer_pb2.Task:
    """The task once it is in ``state``."""
    async for update in client.watch_task(task_id):
        if update.task.state == state:
            return update.task
    raise AssertionError(f"task {task_id} ended without reaching state {state}")


async def until_progress(client: PeerClient, task_id: str, fraction: float) -> None:
    async def reached() -> bool:
        task = await client.get_task(task_id)
        return task.progress.fraction == fraction

    await eventually(reached)


# --- progress and partial results ---------------------------------------------------------------


async def test_progress_and_partial_results_show_on_the_task_and_in_order_on_the_watch(
    server: PeerServer, steps: Steps
):
    async with PeerClient(server.address, "watcher") as client:
        task = await client.delegate_task("stepped", wait=False)
        seen: list[peer_pb2.Task] = []

        async def watch() -> None:
            async for update in client.watch_task(task.task_id):
                seen.append(update.task)

        watching = asyncio.create_task(watch())
        await until_progress(client, task.task_id, 0.25)
        shown = await client.get_task(task.task_id)
        assert (shown.state, shown.progress.message) == (WORKING, "reading")
        assert not shown.HasField("partial_result")

        steps.go.put_nowait(None)
        await until_progress(client, task.task_id, 0.5)
        shown = await client.get_task(task.task_id)
        assert json_format.MessageToDict(shown.partial_result) == {"done": ["a.png"]}

        steps.go.put_nowait(None)
        await asyncio.wait_for(watching, 10)

    reports = [
        (t.progress.fraction, t.progress.message)
        for t in seen
        if t.state == WORKING and t.HasField("progress")
    ]
    # Each report in the order made, none twice, the last before the end.
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(set(fractions))
    assert (0.25, "reading") in reports
    assert (0.5, "resizing") in reports
    assert seen[-1].state == peer_pb2.TASK_STATE_COMPLETED
    assert (seen[-1].progress.fraction, seen[-1].progress.message) == (0.75, "")
    assert json_format.MessageToDict(seen[-1].partial_result) == {"done": ["a.png"]}
    assert json_format.MessageToDict(seen[-1].result) == {"done": ["a.png", "b.png"]}
    versions = [t.updated_at.ToNanoseconds() for t in seen]
    assert versions == sorted(versions)


async def test_a_chatty_handler_is_coalesced_to_one_stored_report_per_interval(
    server: PeerServer,
):
    async with PeerClient(server.address, "watcher") as client:
        interval = (await client.describe()).limits.progress_interval.ToTimedelta()
        task = await client.delegate_task("chatty", {"reports": 400}, wait=False)
        started = time.monotonic()
        seen = [update.task async for update in client.watch_task(task.task_id)]
        took = time.monotonic() - started

    reports = [t for t in seen if t.state == WORKING and t.HasField("progress")]
    fractions = [t.progress.fraction for t in reports]
    assert fractions == sorted(set(fractions)), "reports arrive in order, none twice"
    # 400 reports over about a second: at most one per interval (and the first at once).
    assert 1 <= len(reports) <= took / interval.total_seconds() + 2
    # The last report is written before the end, whatever the interval skipped.
    assert seen[-1].state == peer_pb2.TASK_STATE_COMPLETED
    assert (seen[-1].progress.fraction, seen[-1].progress.message) == (1.0, "step 400")


async def test_a_plain_handler_reports_progress_from_its_thread(server: PeerServer):
    async with PeerClient(server.address, "watcher") as client:
        task = await client.delegate_task("threaded", wait=False)
        seen = [update.task async for update in client.watch_task(task.task_id)]

    messages = [t.progress.message for t in seen if t.HasField("progress")]
    assert "thread step 1" in messages
    assert seen[-1].state == peer_pb2.TASK_STATE_COMPLETED
    assert seen[-1].progress.message == "thread step 3"


# --- asking for input ----------------------------------------------------------------------


async def test_a_task_asks_and_resumes_with_the_answer(server: PeerServer, steps: Steps):
    async with PeerClient(server.address, "asker") as client:
        task = await client.delegate_task("ask", wait=False)
        waiting = await until_state(client, task.task_id, INPUT_REQUIRED)
        assert json_format.MessageToDict(waiting.question) == {"question": "which colour?"}
        assert waiting.questions_asked == 1
        listed = await client.list_tasks(state=INPUT_REQUIRED)
        assert [t.task_id for t in listed.tasks] == [task.task_id]

        resumed = await client.provide_input(task.task_id, {"colour": "blue"}, question=1)
        assert resumed.state == WORKING
        assert not resumed.HasField("question")

        finished = await until_state(client, task.task_id, peer_pb2.TASK_STATE_COMPLETED)

    assert json_format.MessageToDict(finished.result) == {"answers": [{"colour": "blue"}]}
    assert steps.answers == [{"colour": "blue"}]


async def test_a_resent_provide_input_gets_the_first_answer_and_gives_the_input_once(
    server: PeerServer, stub: Stub, steps: Steps
):
    peer = await open_peer(stub)
    task = await peer.delegate("ask", payload={"twice": True}, return_immediately=True)
    await until_asked(peer, task.task_id, 1)
    request = peer_pb2.ProvideInputRequest(task_id=task.task_id, input={"colour": "red"})
    metadata = peer.metadata()

    first = await stub.ProvideInput(request, metadata=metadata)
    # The handler goes on to its second question before the resend comes (looked at
    # in the store: a call on the session would move its sequence on).
    await eventually(lambda: asked_in_store(server, task.task_id, 2))
    again = await stub.ProvideInput(request, metadata=metadata)  # the reply was lost

    assert again == first
    assert first.task.state == WORKING
    waiting = await peer.get(task.task_id)
    assert (waiting.state, waiting.questions_asked) == (INPUT_REQUIRED, 2), (
        "the resend did not answer the second question"
    )
    assert steps.answers == [{"colour": "red"}]


async def asked_in_store(server: PeerServer, task_id: str, question: int) -> bool:
    task = await server.tasks.store.get(task_id)
    assert task is not None
    return task.state is TaskState.INPUT_REQUIRED and task.questions_asked == question


async def until_asked(peer: Peer, task_id: str, question: int) -> peer_pb2.Task:
    async def asked() -> bool:
        task = await peer.get(task_id)
        return task.state == INPUT_REQUIRED and task.questions_asked == question

    await eventually(asked)
    return await peer.get(task_id)


async def test_an_answer_to_an_earlier_question_answers_no_later_one(
    server: PeerServer, steps: Steps
):
    async with PeerClient(server.address, "asker") as client:
        task = await client.delegate_task("ask", {"twice": True}, wait=False)
        await until_state(client, task.task_id, INPUT_REQUIRED)
        await client.provide_input(task.task_id, {"colour": "green"}, question=1)
        second = await until_state(client, task.task_id, INPUT_REQUIRED)
        assert second.questions_asked == 2

        with pytest.raises(TaskNotWaitingForInput) as refused:
            await client.provide_input(task.task_id, {"colour": "late"}, question=1)
        assert refused.value.questions_asked == 2

        await client.provide_input(task.task_id, {"size": "L"}, question=2)
        finished = await until_state(client, task.task_id, peer_pb2.TASK_STATE_COMPLETED)

    assert json_format.MessageToDict(finished.result) == {
        "answers": [{"colour": "green"}, {"size": "L"}]
    }


async def test_an_answer_to_a_task_that_asks_nothing_is_failed_precondition(stub: Stub):
    peer = await open_peer(stub)
    task = await peer.delegate("echo", payload={"a": 1})
    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    before = await peer.get(task.task_id)

    error = await expect_error(
        peer.call("ProvideInput", peer_pb2.ProvideInputRequest(task_id=task.task_id))
    )

    details = details_of(error)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "TASK_NOT_WAITING_FOR_INPUT"
    assert details.error_info is not None
    assert details.error_info.metadata["state"] == "COMPLETED"
    assert "not waiting for input" in details.message
    after = await peer.get(task.task_id)
    assert after.updated_at == before.updated_at


async def test_another_peers_task_takes_no_answer_from_you(stub: Stub, steps: Steps):
    owner = await open_peer(stub, "owner")
    stranger = await open_peer(stub, "stranger")
    task = await owner.delegate("ask", return_immediately=True)
    await until_asked(owner, task.task_id, 1)

    error = await expect_error(
        stranger.call(
            "ProvideInput",
            peer_pb2.ProvideInputRequest(task_id=task.task_id, input={"colour": "mine"}),
        )
    )

    assert details_of(error).code == grpc.StatusCode.NOT_FOUND
    assert (await owner.get(task.task_id)).state == INPUT_REQUIRED
    assert steps.answers == []


async def test_cancel_works_while_a_task_waits_for_input(server: PeerServer, steps: Steps):
    async with PeerClient(server.address, "asker") as client:
        task = await client.delegate_task("ask", wait=False)
        await until_state(client, task.task_id, INPUT_REQUIRED)

        canceled = await client.cancel_task(task.task_id)

        assert canceled.state == peer_pb2.TASK_STATE_CANCELED
        assert not canceled.HasField("question")
        await asyncio.wait_for(steps.stopped.wait(), 10)  # its handler was stopped
        with pytest.raises(TaskNotWaitingForInput):
            await client.provide_input(task.task_id, {"colour": "too late"})
    assert steps.answers == []


async def test_waiting_for_input_counts_against_the_tasks_timeout(server: PeerServer, steps: Steps):
    async with PeerClient(server.address, "asker") as client:
        task = await client.delegate_task("ask", wait=False, timeout=1.0)
        await until_state(client, task.task_id, INPUT_REQUIRED)

        ended = await until_state(client, task.task_id, peer_pb2.TASK_STATE_FAILED)

    assert ended.error.code == "DEADLINE_EXCEEDED"
    await asyncio.wait_for(steps.stopped.wait(), 10)
    assert steps.answers == []


async def test_reports_after_an_answer_are_written_while_the_task_runs(
    server: PeerServer, steps: Steps
):
    async with PeerClient(server.address, "asker") as client:
        task = await client.delegate_task("ask-then-report", wait=False)
        waiting = await until_state(client, task.task_id, INPUT_REQUIRED)
        assert waiting.progress.message == "before", "the report is written before the question"
        await client.provide_input(task.task_id, {"go": True})

        await until_progress(client, task.task_id, 0.5)
        steps.go.put_nowait(None)
        await until_progress(client, task.task_id, 0.9)
        steps.go.put_nowait(None)
        finished = await until_state(client, task.task_id, peer_pb2.TASK_STATE_COMPLETED)

    assert finished.progress.message == "later"


async def test_a_handler_that_stops_waiting_gets_its_task_back_and_goes_on(
    server: PeerServer, steps: Steps
):
    async with PeerClient(server.address, "asker") as client:
        task = await client.delegate_task("impatient", wait=False)
        asked = await until_state(client, task.task_id, INPUT_REQUIRED)

        async def went_on() -> bool:
            shown = await client.get_task(task.task_id)
            return shown.progress.message == "went on without an answer"

        await eventually(went_on)
        shown = await client.get_task(task.task_id)
        assert (shown.state, shown.HasField("question")) == (WORKING, False)
        with pytest.raises(TaskNotWaitingForInput):
            await client.provide_input(task.task_id, {"late": True}, question=asked.questions_asked)
        steps.go.put_nowait(None)
        finished = await until_state(client, task.task_id, peer_pb2.TASK_STATE_COMPLETED)

    assert json_format.MessageToDict(finished.result) == {"answered": False}
    assert steps.answers == []


async def test_a_handler_that_returns_while_its_question_waits_ends_its_task(
    server: PeerServer, steps: Steps
):
    async with PeerClient(server.address, "asker") as client:
        task = await client.delegate_task("leaves-a-question", wait=False)
        await until_state(client, task.task_id, INPUT_REQUIRED)
        steps.go.put_nowait(None)

        finished = await until_state(client, task.task_id, peer_pb2.TASK_STATE_COMPLETED)

    assert json_format.MessageToDict(finished.result) == {"done": True}
    assert not finished.HasField("question")


async def test_a_type_not_registered_to_ask_fails_when_it_asks(server: PeerServer):
    async with PeerClient(server.address, "asker") as client:
        ended = await client.delegate_task("rude")

    assert ended.state == peer_pb2.TASK_STATE_FAILED
    assert ended.error.code == "HANDLER_ERROR"
    assert "asks_for_input=True" in ended.error.message


async def test_describe_says_which_types_ask_and_the_progress_interval(server: PeerServer):
    async with PeerClient(server.address, "curious") as client:
        described = await client.describe()

    asking = {t.name for t in described.task_types if t.asks_for_input}
    assert asking == {"ask", "ask-then-report", "impatient", "leaves-a-question"}
    assert described.limits.progress_interval.ToMilliseconds() == 250
