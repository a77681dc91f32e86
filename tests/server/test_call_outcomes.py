"""How an admitted call ended, kept for resends: the core's outcome, the wire's statuses.

A resend of an accepted call gets exactly what the original got: its response, or
its status with every trailer but the ``peer-sequence`` its own answer announces.
Outcomes kept in a shared store are read by replicas of the version before and after.
"""

from __future__ import annotations

import base64
import json

import grpc
import grpc.aio
import pytest
from google.rpc import status_pb2

from peer_grpc import PeerServer, ServerConfig
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.errors import StoreUnavailable, TaskNotFound
from peer_grpc.core.retry import (
    INTERRUPTED,
    NOT_RUN,
    CallEnd,
    CallOutcome,
    answered,
    decode_outcome,
    encode_outcome,
)
from peer_grpc.server.handlers import peer_service_handler
from peer_grpc.server.interceptors import peer_interceptor
from peer_grpc.server.servicer import PeerServicer
from peer_grpc.server.validation import request_validators
from peer_grpc.sessions.manager import SessionManager
from peer_grpc.stores import MemorySessionStore
from peer_grpc.tasks.manager import TaskManager
from peer_grpc.tasks.registry import TaskRegistry
from peer_grpc.wire.rich_status import (
    DETAILS_KEY,
    failed_outcome,
    status_of_outcome,
    to_grpc_status,
)
from tests.conftest import open_session, session_metadata

REFUSED = to_grpc_status(TaskNotFound("no task t-1"))


def test_a_failure_is_repeated_with_its_details_and_other_trailers():
    trailers = (*REFUSED.trailing_metadata, ("x-custom", "v"), ("peer-sequence", "7"))
    outcome = failed_outcome(REFUSED.code, REFUSED.details, trailers, server_sequence=7)

    repeated = status_of_outcome(outcome)

    assert (repeated.code, repeated.details) == (grpc.StatusCode.NOT_FOUND, "no task t-1")
    assert repeated.trailing_metadata == (*REFUSED.trailing_metadata, ("x-custom", "v"))


def test_a_failure_without_details_is_repeated_without_them():
    outcome = failed_outcome(grpc.StatusCode.FAILED_PRECONDITION, "not now", (), 3)

    repeated = status_of_outcome(outcome)

    assert (repeated.code, repeated.details) == (grpc.StatusCode.FAILED_PRECONDITION, "not now")
    assert repeated.trailing_metadata == ()


@pytest.mark.parametrize(
    ("outcome", "code"),
    [(NOT_RUN, grpc.StatusCode.UNAVAILABLE), (INTERRUPTED, grpc.StatusCode.ABORTED)],
)
def test_a_call_that_did_not_finish_is_told_so(outcome: CallOutcome, code: grpc.StatusCode):
    repeated = status_of_outcome(outcome)

    assert (repeated.code, repeated.details) == (code, outcome.message)


@pytest.mark.parametrize(
    "outcome",
    [
        answered(b"\x01\x02", 5),
        failed_outcome(REFUSED.code, REFUSED.details, (*REFUSED.trailing_metadata, ("k", b"v")), 6),
        CallOutcome(CallEnd.INTERRUPTED, server_sequence=9),
    ],
)
def test_outcomes_survive_a_shared_store(outcome: CallOutcome):
    assert decode_outcome(encode_outcome(outcome)) == outcome


def test_a_replica_of_the_version_before_reads_a_failure_as_effect_unknown():
    raw = json.loads(encode_outcome(failed_outcome(REFUSED.code, REFUSED.details, (), 4)))

    # What the version before reads: code, response, message, trailing, server_sequence.
    assert (raw["code"], raw["message"], raw["server_sequence"]) == (10, INTERRUPTED.message, 4)
    assert raw["trailing"] == []
    assert json.loads(encode_outcome(answered(b"ok", 2)))["code"] == 0


def test_outcomes_the_version_before_wrote_are_repeated():
    details = REFUSED.trailing_metadata[0][1]
    assert isinstance(details, bytes)
    rich = {
        "code": 5,
        "response": "",
        "message": "no task t-1",
        "trailing": [[DETAILS_KEY, base64.b64encode(details).decode(), True]],
        "server_sequence": 8,
    }
    plain = {**rich, "code": 9, "trailing": []}
    success = {**rich, "code": 0, "response": "AQI=", "trailing": []}

    assert decode_outcome(json.dumps(rich).encode()) == CallOutcome(CallEnd.FAILED, b"", details, 8)
    assert status_pb2.Status.FromString(details).message == "no task t-1"
    assert decode_outcome(json.dumps(plain).encode()).end is CallEnd.INTERRUPTED
    assert decode_outcome(json.dumps(success).encode()) == answered(b"\x01\x02", 8)


class StoreThatCannotRecord(MemorySessionStore):
    """Admits calls, then fails to record how they ended (Redis went away mid-call)."""

    async def record(self, session_id: str, sequence: int, outcome: CallOutcome) -> None:
        raise StoreUnavailable("the store went away")


async def test_a_failed_call_whose_outcome_cannot_be_recorded_is_unavailable(
    server_config: ServerConfig,
):
    server = PeerServer(server_config, store=StoreThatCannotRecord())
    async with server, grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        session = await open_session(stub)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CancelTask(
                peer_pb2.CancelTaskRequest(task_id="no-such-task"),
                metadata=session_metadata(session.session_id, 1),
            )

    # Retryable, as every store failure is: not the task's NOT_FOUND, which a resend
    # could not be sure to get again, and never UNKNOWN.
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == "the store went away"


async def test_the_interceptor_guards_a_server_assembled_by_hand():
    """PeerServer wraps its methods at start-up; the same interceptor, passed to a grpc
    server of one's own, wraps them at their first call, with the same checks."""
    manager = SessionManager()
    tasks = TaskManager(TaskRegistry())
    servicer = PeerServicer(manager, tasks, server_peer_id="by-hand", heartbeat_interval=10)
    server = grpc.aio.server(interceptors=[peer_interceptor(manager, request_validators(tasks))])
    server.add_generic_rpc_handlers((peer_service_handler(servicer),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = peer_pb2_grpc.PeerServiceStub(channel)
            session = await open_session(stub)
            for sequence in (1, 2):
                call = stub.Ping(
                    peer_pb2.PingRequest(), metadata=session_metadata(session.session_id, sequence)
                )
                await call
                assert await call.code() is grpc.StatusCode.OK
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Ping(
                    peer_pb2.PingRequest(payload=b"other"),
                    metadata=session_metadata(session.session_id, 2),
                )
    finally:
        await server.stop(grace=0)
    assert refused.value.code() is grpc.StatusCode.ABORTED  # a replay, with other bytes
