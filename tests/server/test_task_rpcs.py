"""Delegated tasks on the wire: the task RPCs against a real server, with raw stubs.

Every task RPC is session- and sequence-checked like the others; a peer sees and
cancels only its own tasks; the limits refuse work with RESOURCE_EXHAUSTED and a
RetryInfo, and leave no task behind.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from peer_grpc import ManualClock, PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.metadata import SEQUENCE_KEY
from tests.conftest import Gate, eventually, open_session, session_metadata
from tests.rpc_details import details_of

Stub = peer_pb2_grpc.PeerServiceStub
StatusCode = grpc.StatusCode


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return replace(server_config, max_running_tasks=4, max_tasks_per_session=2)


class Peer:
    """A peer on a raw stub that numbers its own calls."""

    def __init__(self, stub: Stub, session_id: str) -> None:
        self.stub = stub
        self.session_id = session_id
        self.sequence = 0

    def metadata(self, sequence: int | None = None) -> tuple[tuple[str, str], ...]:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        return session_metadata(self.session_id, sequence)

    async def call(self, method: str, request: Any, **options: Any) -> Any:
        return await getattr(self.stub, method)(request, metadata=self.metadata(), **options)

    async def delegate(self, task_type: str = "echo", **fields: Any) -> peer_pb2.Task:
        payload = fields.pop("payload", None)
        request = peer_pb2.DelegateTaskRequest(task_type=task_type, **fields)
        if payload is not None:
            request.payload.update(payload)
        response = await self.call("DelegateTask", request)
        return response.task  # type: ignore[no-any-return]

    async def get(self, task_id: str) -> peer_pb2.Task:
        response = await self.call("GetTask", peer_pb2.GetTaskRequest(task_id=task_id))
        return response.task  # type: ignore[no-any-return]

    async def list_ids(self, **fields: Any) -> list[str]:
        response = await self.call("ListTasks", peer_pb2.ListTasksRequest(**fields))
        return [task.task_id for task in response.tasks]


async def open_peer(stub: Stub, peer_id: str = "peer-a") -> Peer:
    return Peer(stub, (await open_session(stub, peer_id)).session_id)


@pytest.fixture
async def peer(stub: Stub) -> Peer:
    return await open_peer(stub)


async def expect_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def drain(call: Any) -> list[Any]:
    return [message async for message in call]


# --- DelegateTask ----------------------------------------------------------------------------


async def test_delegate_waits_for_the_finished_task(peer: Peer, server: PeerServer):
    task = await peer.delegate("echo", payload={"invoice": 42, "lines": ["a"]})

    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    assert dict(task.result) == {"invoice": 42.0, "lines": ["a"]}
    assert task.owner_peer_id == "peer-a"
    assert task.timeout.ToSeconds() == server.config.task_timeout
    assert len(task.task_id) == 32


async def test_delegate_returning_immediately_answers_before_the_task_ends(peer: Peer, gate: Gate):
    task = await peer.delegate("held", return_immediately=True)

    assert task.state in (peer_pb2.TASK_STATE_SUBMITTED, peer_pb2.TASK_STATE_WORKING)
    await gate.started.wait()
    assert (await peer.get(task.task_id)).state == peer_pb2.TASK_STATE_WORKING
    gate.release.set()

    async def completed() -> bool:
        return bool((await peer.get(task.task_id)).state == peer_pb2.TASK_STATE_COMPLETED)

    await eventually(completed)


async def test_a_waiting_delegate_answers_before_the_callers_deadline(peer: Peer, gate: Gate):
    """Rather than DEADLINE_EXCEEDED, a long task is answered as it stands."""
    response = await peer.call(
        "DelegateTask", peer_pb2.DelegateTaskRequest(task_type="held"), timeout=0.5
    )
    assert response.task.state == peer_pb2.TASK_STATE_WORKING
    gate.release.set()


async def test_delegate_with_a_timeout_fails_the_task_with_deadline_exceeded(peer: Peer):
    request = {"payload": {"seconds": 5}}
    task = await peer.delegate("sleep", timeout={"nanos": 50_000_000}, **request)
    assert task.state == peer_pb2.TASK_STATE_FAILED
    assert task.error.code == "DEADLINE_EXCEEDED"
    assert task.timeout.ToMilliseconds() == 50


async def test_a_resent_delegate_creates_one_task_not_two(peer: Peer, gate: Gate):
    """After a lost response the peer sends the same bytes under the same sequence."""
    request = peer_pb2.DelegateTaskRequest(task_type="held", return_immediately=True)
    metadata = peer.metadata()

    first = await peer.stub.DelegateTask(request, metadata=metadata)
    again = await peer.stub.DelegateTask(request, metadata=metadata)

    assert again == first
    await gate.started.wait()
    assert await peer.list_ids() == [first.task.task_id]
    assert gate.runs == 1


async def test_a_resend_after_the_caller_went_away_learns_of_the_task(peer: Peer, gate: Gate):
    """The connection broke while DelegateTask waited: sending it again finds the task."""
    request = peer_pb2.DelegateTaskRequest(task_type="held")
    metadata = peer.metadata()
    first = peer.stub.DelegateTask(request, metadata=metadata)
    await gate.started.wait()
    first.cancel()

    again = await peer.stub.DelegateTask(request, metadata=metadata)

    assert again.task.state == peer_pb2.TASK_STATE_SUBMITTED
    assert await peer.list_ids() == [again.task.task_id]
    assert gate.runs == 1
    gate.release.set()


def nested_payload(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


async def test_a_payload_32_deep_is_accepted_and_33_is_invalid(peer: Peer, server: PeerServer):
    task = await peer.delegate("echo", payload=nested_payload(32))
    assert task.state == peer_pb2.TASK_STATE_COMPLETED

    error = await expect_error(peer.delegate("echo", payload=nested_payload(33)))

    assert details_of(error).code == StatusCode.INVALID_ARGUMENT
    assert details_of(error).bad_fields == ["payload"]


# --- GetTask, CancelTask, ListTasks --------------------------------------------------------------


async def test_cancel_task_cancels_and_a_second_cancel_is_refused(peer: Peer, gate: Gate):
    task = await peer.delegate("held", return_immediately=True)
    await gate.started.wait()

    canceled = await peer.call("CancelTask", peer_pb2.CancelTaskRequest(task_id=task.task_id))
    error = await expect_error(
        peer.call("CancelTask", peer_pb2.CancelTaskRequest(task_id=task.task_id))
    )

    assert canceled.task.state == peer_pb2.TASK_STATE_CANCELED
    assert canceled.task.error.code == "CANCELED"
    details = details_of(error)
    assert details.code == StatusCode.FAILED_PRECONDITION
    assert details.reason == "TASK_NOT_CANCELABLE"
    assert details.error_info is not None
    assert details.error_info.metadata["state"] == "CANCELED"


@pytest.mark.parametrize("method", ["GetTask", "CancelTask", "WatchTask"])
async def test_another_peers_task_is_not_found(stub: Stub, peer: Peer, gate: Gate, method: str):
    task = await peer.delegate("held", return_immediately=True)
    stranger = await open_peer(stub, "peer-b")
    request_type = {"GetTask": peer_pb2.GetTaskRequest, "CancelTask": peer_pb2.CancelTaskRequest}
    request = request_type.get(method, peer_pb2.WatchTaskRequest)(task_id=task.task_id)

    call = getattr(stub, method)(request, metadata=stranger.metadata())
    error = await expect_error(drain(call) if method == "WatchTask" else call)

    details = details_of(error)
    assert details.code == StatusCode.NOT_FOUND
    assert details.reason == "TASK_NOT_FOUND"
    assert await stranger.list_ids() == []
    await gate.started.wait()
    assert (await peer.get(task.task_id)).state == peer_pb2.TASK_STATE_WORKING


async def test_list_tasks_pages_through_the_callers_tasks(stub: Stub, peer: Peer):
    ids = [(await peer.delegate("echo", payload={"i": i})).task_id for i in range(3)]
    other = await open_peer(stub, "peer-b")
    await other.delegate("echo")

    first = await peer.call("ListTasks", peer_pb2.ListTasksRequest(page_size=2))
    second = await peer.call(
        "ListTasks", peer_pb2.ListTasksRequest(page_size=2, page_token=first.next_page_token)
    )

    assert [task.task_id for task in first.tasks] == ids[:2]
    assert [task.task_id for task in second.tasks] == ids[2:]
    assert second.next_page_token == ""
    assert await peer.list_ids(state=peer_pb2.TASK_STATE_FAILED) == []


# --- WatchTask -------------------------------------------------------------------------------


async def test_watch_task_streams_every_change_numbered_on_the_session(peer: Peer, gate: Gate):
    task = await peer.delegate("held", return_immediately=True)
    await gate.started.wait()

    call = peer.stub.WatchTask(
        peer_pb2.WatchTaskRequest(task_id=task.task_id), metadata=peer.metadata()
    )
    messages = [await call.read()]
    gate.release.set()
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)

    assert [m.task.state for m in messages] == [
        peer_pb2.TASK_STATE_WORKING,
        peer_pb2.TASK_STATE_COMPLETED,
    ]
    # The first message is the admitted response; each later one is the session's next.
    announced = int(dict(await call.initial_metadata())[SEQUENCE_KEY])
    numbers = [m.sequence_num for m in messages]
    assert numbers == [announced, announced + 1]
    assert await call.code() == StatusCode.OK
    status = await peer.call("Status", peer_pb2.StatusRequest())
    assert status.session.sequence_num == numbers[-1] + 1  # Status itself is one more


async def test_watching_a_finished_task_sends_it_once(peer: Peer):
    task = await peer.delegate("echo")
    call = peer.stub.WatchTask(
        peer_pb2.WatchTaskRequest(task_id=task.task_id), metadata=peer.metadata()
    )
    assert [m.task for m in await drain(call)] == [task]


async def test_a_watch_resent_with_its_sequence_is_a_replay(peer: Peer):
    task = await peer.delegate("echo")
    request = peer_pb2.WatchTaskRequest(task_id=task.task_id)
    metadata = peer.metadata()
    await drain(peer.stub.WatchTask(request, metadata=metadata))

    error = await expect_error(drain(peer.stub.WatchTask(request, metadata=metadata)))

    details = details_of(error)
    assert details.code == StatusCode.ABORTED
    assert details.sequence_error is not None
    assert details.sequence_error.kind == peer_pb2.SEQUENCE_ERROR_KIND_REPLAY


@pytest.mark.parametrize("offset", [0, 2], ids=["replay", "gap"])
async def test_a_watch_out_of_sequence_is_refused_and_spends_nothing(
    peer: Peer, server: PeerServer, offset: int
):
    task = await peer.delegate("echo")
    before = await server.manager.get_session(peer.session_id)

    call = peer.stub.WatchTask(
        peer_pb2.WatchTaskRequest(task_id=task.task_id),
        metadata=peer.metadata(peer.sequence + offset),
    )
    error = await expect_error(drain(call))

    assert details_of(error).code == StatusCode.ABORTED
    assert await server.manager.get_session(peer.session_id) == before


# --- session and input checks ------------------------------------------------------------------


TASK_METHODS = {
    "GetTask": peer_pb2.GetTaskRequest(task_id="a" * 32),
    "CancelTask": peer_pb2.CancelTaskRequest(task_id="a" * 32),
    "ListTasks": peer_pb2.ListTasksRequest(),
    "WatchTask": peer_pb2.WatchTaskRequest(task_id="a" * 32),
    "ProvideInput": peer_pb2.ProvideInputRequest(task_id="a" * 32),
}


@pytest.mark.parametrize("method", sorted(TASK_METHODS))
async def test_task_methods_need_a_session(stub: Stub, method: str):
    call = getattr(stub, method)(TASK_METHODS[method])
    error = await expect_error(drain(call) if method == "WatchTask" else call)
    assert details_of(error).code == StatusCode.UNAUTHENTICATED
    assert details_of(error).reason == "SESSION_REQUIRED"


def answer_with_nan() -> peer_pb2.ProvideInputRequest:
    request = peer_pb2.ProvideInputRequest(task_id="a" * 32)
    request.input.fields["n"].number_value = math.nan
    return request


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        pytest.param("GetTask", peer_pb2.GetTaskRequest(), "task_id", id="get-without-id"),
        pytest.param(
            "CancelTask", peer_pb2.CancelTaskRequest(task_id="a/b"), "task_id", id="bad-id"
        ),
        pytest.param(
            "WatchTask", peer_pb2.WatchTaskRequest(task_id="a" * 129), "task_id", id="long-id"
        ),
        pytest.param(
            "ProvideInput", peer_pb2.ProvideInputRequest(), "task_id", id="answer-without-id"
        ),
        pytest.param(
            "ProvideInput",
            answer_with_nan(),
            "input.n",
            id="answer-not-json",
        ),
        pytest.param(
            "ListTasks", peer_pb2.ListTasksRequest(page_size=-1), "page_size", id="negative-size"
        ),
        pytest.param(
            "ListTasks", peer_pb2.ListTasksRequest(page_token="zz"), "page_token", id="bad-token"
        ),
        pytest.param(
            "ListTasks",
            peer_pb2.ListTasksRequest(state=99),  # type: ignore[arg-type]
            "state",
            id="unknown-state",
        ),
        pytest.param(
            "DelegateTask",
            peer_pb2.DelegateTaskRequest(task_type="echo", timeout={"seconds": -1}),
            "timeout",
            id="negative-timeout",
        ),
        pytest.param(
            "DelegateTask",
            peer_pb2.DelegateTaskRequest(task_type="echo", timeout={"seconds": 3601}),
            "timeout",
            id="timeout-over-max",
        ),
        pytest.param(
            "DelegateTask",
            peer_pb2.DelegateTaskRequest(task_type="echo", timeout={"seconds": 1, "nanos": -1}),
            "timeout",
            id="malformed-duration",
        ),
    ],
)
async def test_bad_task_requests_are_invalid_and_spend_no_sequence(
    peer: Peer, server: PeerServer, method: str, request_: Any, field: str
):
    before = await server.manager.get_session(peer.session_id)
    call = getattr(peer.stub, method)(request_, metadata=peer.metadata(1))

    error = await expect_error(drain(call) if method == "WatchTask" else call)

    details = details_of(error)
    assert details.code == StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == [field]
    assert before is not None
    assert await server.manager.get_session(peer.session_id) == before
    assert await server.tasks.store.list_owned(before.peer_id, after=0, limit=10) == []


# --- limits ----------------------------------------------------------------------------------


async def test_over_the_limit_is_resource_exhausted_with_retry_info_and_no_task(
    peer: Peer, gate: Gate
):
    for _ in range(2):
        await peer.delegate("held", return_immediately=True)

    error = await expect_error(peer.delegate("held", return_immediately=True))

    details = details_of(error)
    assert details.code == StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "TASK_LIMIT_REACHED"
    assert details.error_info is not None
    assert dict(details.error_info.metadata) == {"scope": "session", "limit": "2"}
    status = rpc_status.from_call(error)
    assert status is not None
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry) == 1
    info = error_details_pb2.RetryInfo()
    retry[0].Unpack(info)
    assert info.retry_delay.ToSeconds() == 1
    assert len(await peer.list_ids()) == 2


# --- tasks end with their session ------------------------------------------------------------


async def running_task(peer: Peer, gate: Gate) -> peer_pb2.Task:
    task = await peer.delegate("held", return_immediately=True)
    await gate.started.wait()
    return task


async def test_terminate_cancels_the_sessions_running_tasks(stub: Stub, peer: Peer, gate: Gate):
    task = await running_task(peer, gate)

    await peer.call("Terminate", peer_pb2.TerminateRequest())

    again = await open_peer(stub, "peer-a")  # the peer still owns its tasks
    ended = await again.get(task.task_id)
    assert ended.state == peer_pb2.TASK_STATE_CANCELED
    assert ended.error.code == "SESSION_ENDED"


async def test_a_new_handshake_cancels_the_replaced_sessions_tasks(
    stub: Stub, peer: Peer, gate: Gate
):
    task = await running_task(peer, gate)
    again = await open_peer(stub, "peer-a")
    assert (await again.get(task.task_id)).state == peer_pb2.TASK_STATE_CANCELED


async def test_an_expired_sessions_tasks_are_canceled_by_the_sweep(
    stub: Stub, peer: Peer, gate: Gate, server: PeerServer, clock: ManualClock
):
    task = await running_task(peer, gate)
    clock.advance(server.config.idle_timeout + 1)

    await server.sweep()

    again = await open_peer(stub, "peer-a")
    ended = await again.get(task.task_id)
    assert ended.state == peer_pb2.TASK_STATE_CANCELED
    assert ended.error.code == "SESSION_ENDED"


async def test_stopping_the_server_cancels_tasks_that_outlast_the_grace(
    peer: Peer, gate: Gate, server: PeerServer
):
    task = await running_task(peer, gate)

    await server.stop(grace=0.1)

    stopped = await server.tasks.store.get(task.task_id)
    assert stopped is not None
    assert (stopped.state.name, stopped.error_code) == ("CANCELED", "SHUTDOWN")


async def test_a_stopping_server_lets_tasks_finish_within_the_grace(peer: Peer, server: PeerServer):
    task = await peer.delegate("sleep", payload={"seconds": 0.1}, return_immediately=True)

    await server.stop(grace=2)

    finished = await server.tasks.store.get(task.task_id)
    assert finished is not None
    assert finished.state.name == "COMPLETED"
