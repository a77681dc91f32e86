"""The protocol on the wire: a real server on loopback, called with raw stubs.

Each test reads as a rule of the protocol. Rejected calls must leave the session
exactly as it was, which the tests check against the server's own store.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from peer_grpc import ManualClock, PeerServer, Session, SessionState
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from tests.conftest import open_session, session_metadata
from tests.rpc_details import details_of

pytestmark = pytest.mark.asyncio

Stub = peer_pb2_grpc.PeerServiceStub


async def snapshot(server: PeerServer, session_id: str) -> Session:
    session = await server.manager.get_session(session_id)
    assert session is not None
    return session


async def expect_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


# --- Handshake -----------------------------------------------------------------------------


async def test_handshake_opens_a_session_awaiting_its_first_call(stub: Stub, server: PeerServer):
    response = await open_session(stub, "peer-a")

    assert len(response.session_id) == 32
    int(response.session_id, 16)  # 128 random bits, hex
    assert response.protocol_version == "1.0"
    assert response.next_sequence == 1
    assert response.idle_timeout.seconds == 30
    assert response.heartbeat_interval.seconds == 10
    assert response.server_peer_id == server.config.server_peer_id
    session = await snapshot(server, response.session_id)
    assert session.state is SessionState.HANDSHAKE_SENT
    assert session.peer_id == "peer-a"


async def test_session_ids_are_never_reused(stub: Stub):
    ids = {(await open_session(stub, f"peer-{i}")).session_id for i in range(20)}
    assert len(ids) == 20


async def test_handshake_without_a_common_version_names_the_supported_ones(stub: Stub):
    error = await expect_error(
        stub.Handshake(peer_pb2.HandshakeRequest(peer_id="old", protocol_versions=["0.9"]))
    )
    details = details_of(error)
    assert details.code is grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "NO_COMMON_PROTOCOL_VERSION"
    assert "1.0" in details.message
    assert details.error_info is not None
    assert details.error_info.metadata["supported_versions"] == "1.0"


@pytest.mark.parametrize(
    ("request_fields", "bad_field"),
    [
        pytest.param({"protocol_versions": ["1.0"]}, "peer_id", id="peer-id-missing"),
        pytest.param(
            {"peer_id": "has space", "protocol_versions": ["1.0"]}, "peer_id", id="peer-id-chars"
        ),
        pytest.param(
            {"peer_id": "p" * 129, "protocol_versions": ["1.0"]}, "peer_id", id="peer-id-129-chars"
        ),
        pytest.param({"peer_id": "p"}, "protocol_versions", id="no-versions"),
    ],
)
async def test_handshake_with_invalid_fields_is_invalid_argument(
    stub: Stub, request_fields: dict[str, Any], bad_field: str
):
    error = await expect_error(stub.Handshake(peer_pb2.HandshakeRequest(**request_fields)))
    details = details_of(error)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == [bad_field]


async def test_second_handshake_of_a_peer_replaces_its_session(stub: Stub, server: PeerServer):
    first = await open_session(stub, "peer-a")
    second = await open_session(stub, "peer-a")

    assert (await snapshot(server, first.session_id)).state is SessionState.TERMINATED
    error = await expect_error(
        stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(first.session_id, 1))
    )
    assert details_of(error).code is grpc.StatusCode.UNAUTHENTICATED
    assert details_of(error).reason == "SESSION_TERMINATED"
    await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(second.session_id, 1))


# --- Sequencing ----------------------------------------------------------------------------


async def test_sequenced_calls_are_accepted_in_order_and_numbered_by_the_server(
    stub: Stub, server: PeerServer
):
    session_id = (await open_session(stub)).session_id
    for sequence in (1, 2, 3):
        call = stub.Ping(
            peer_pb2.PingRequest(payload=b"x"), metadata=session_metadata(session_id, sequence)
        )
        assert (await call).payload == b"x"
        # A unary call's number rides in its trailers, with the status.
        assert dict(await call.trailing_metadata())[SEQUENCE_KEY] == str(sequence)

    session = await snapshot(server, session_id)
    assert session.expected_sequence == 4
    assert session.sequence_num == 3


async def test_first_sequenced_call_establishes_the_session(stub: Stub, server: PeerServer):
    session_id = (await open_session(stub)).session_id
    await stub.Heartbeat(peer_pb2.HeartbeatRequest(), metadata=session_metadata(session_id, 1))
    assert (await snapshot(server, session_id)).state is SessionState.ESTABLISHED


@pytest.mark.parametrize(
    ("sent", "kind"),
    [
        pytest.param(5, peer_pb2.SEQUENCE_ERROR_KIND_GAP, id="gap-ahead-by-3"),
        pytest.param(3, peer_pb2.SEQUENCE_ERROR_KIND_GAP, id="gap-ahead-by-1"),
        pytest.param(1, peer_pb2.SEQUENCE_ERROR_KIND_REPLAY, id="replay-of-first"),
        pytest.param(0, peer_pb2.SEQUENCE_ERROR_KIND_REPLAY, id="replay-of-zero"),
    ],
)
async def test_out_of_order_call_is_aborted_with_sequence_details_and_changes_nothing(
    stub: Stub, server: PeerServer, sent: int, kind: Any
):
    session_id = (await open_session(stub)).session_id
    await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 1))
    before = await snapshot(server, session_id)  # expects 2

    different = peer_pb2.PingRequest(payload=b"a different message")  # not a resend
    error = await expect_error(stub.Ping(different, metadata=session_metadata(session_id, sent)))

    details = details_of(error)
    assert details.code is grpc.StatusCode.ABORTED
    assert details.error_info is not None
    assert details.error_info.reason == "SEQUENCE_ERROR"
    assert details.error_info.domain == "peer.v1"
    assert dict(details.error_info.metadata) == {
        "expected_sequence": "2",
        "received_sequence": str(sent),
        "kind": peer_pb2.SequenceErrorKind.Name(kind).removeprefix("SEQUENCE_ERROR_KIND_"),
    }
    assert details.sequence_error == peer_pb2.SequenceError(
        session_id=session_id, expected_sequence=2, received_sequence=sent, kind=kind
    )
    assert await snapshot(server, session_id) == before
    assert (await server.manager.get_session_stats()).sequence_errors_total == 1
    await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 2))


async def test_rejected_call_does_not_extend_the_idle_deadline(
    stub: Stub, server: PeerServer, clock: ManualClock
):
    session_id = (await open_session(stub)).session_id
    before = await snapshot(server, session_id)
    clock.advance(20)
    await expect_error(stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 9)))
    assert await snapshot(server, session_id) == before


# --- Session metadata ----------------------------------------------------------------------

VALID_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("metadata", "bad_field"),
    [
        pytest.param(
            ((SESSION_ID_KEY, "{sid}"), (SEQUENCE_KEY, "one")), SEQUENCE_KEY, id="non-numeric"
        ),
        pytest.param(
            ((SESSION_ID_KEY, "{sid}"), (SEQUENCE_KEY, "1.0")), SEQUENCE_KEY, id="decimal-point"
        ),
        pytest.param(
            ((SESSION_ID_KEY, "{sid}"), (SEQUENCE_KEY, "-1")), SEQUENCE_KEY, id="negative"
        ),
        pytest.param(
            ((SESSION_ID_KEY, "{sid}"), (SEQUENCE_KEY, str(2**64))), SEQUENCE_KEY, id="above-2^64-1"
        ),
        pytest.param(
            ((SESSION_ID_KEY, "{sid}"), (SEQUENCE_KEY, "")), SEQUENCE_KEY, id="empty-sequence"
        ),
        pytest.param(
            ((SESSION_ID_KEY, "{sid}"), (SEQUENCE_KEY, "1"), (SEQUENCE_KEY, "1")),
            SEQUENCE_KEY,
            id="repeated-sequence",
        ),
        pytest.param(((SESSION_ID_KEY, "{sid}"),), SEQUENCE_KEY, id="sequence-missing"),
        pytest.param(
            ((SESSION_ID_KEY, ""), (SEQUENCE_KEY, "1")), SESSION_ID_KEY, id="empty-session-id"
        ),
        pytest.param(
            ((SESSION_ID_KEY, "{sid}"), (SESSION_ID_KEY, "{sid}"), (SEQUENCE_KEY, "1")),
            SESSION_ID_KEY,
            id="repeated-session-id",
        ),
        pytest.param(
            ((SESSION_ID_KEY, "not a session id!"), (SEQUENCE_KEY, "1")),
            SESSION_ID_KEY,
            id="bad-session-id",
        ),
    ],
)
async def test_malformed_session_metadata_is_invalid_argument_naming_the_key(
    stub: Stub, server: PeerServer, metadata: tuple[tuple[str, str], ...], bad_field: str
):
    session_id = (await open_session(stub)).session_id
    before = await snapshot(server, session_id)
    sent = tuple((key, value.format(sid=session_id)) for key, value in metadata)

    error = await expect_error(stub.Ping(peer_pb2.PingRequest(), metadata=sent))

    details = details_of(error)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == [bad_field]
    assert bad_field in details.message
    assert await snapshot(server, session_id) == before


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="no-metadata"),
        pytest.param(((SEQUENCE_KEY, "1"),), id="sequence-without-session"),
    ],
)
@pytest.mark.parametrize("method", ["Ping", "Status", "Heartbeat", "DelegateTask", "Terminate"])
async def test_calls_without_a_session_are_unauthenticated(
    channel: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...]
):
    call = channel.unary_unary(f"/peer.v1.PeerService/{method}")
    error = await expect_error(call(b"", metadata=metadata))
    details = details_of(error)
    assert details.code is grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "SESSION_REQUIRED"


async def test_unknown_session_is_unauthenticated(stub: Stub):
    error = await expect_error(
        stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(VALID_ID, 1))
    )
    assert details_of(error).code is grpc.StatusCode.UNAUTHENTICATED
    assert details_of(error).reason == "SESSION_NOT_FOUND"


# --- Session lifecycle ---------------------------------------------------------------------


async def test_idle_session_expires_and_is_refused(
    stub: Stub, server: PeerServer, clock: ManualClock
):
    session_id = (await open_session(stub)).session_id
    await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 1))
    clock.advance(30)

    error = await expect_error(
        stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 2))
    )
    assert details_of(error).code is grpc.StatusCode.UNAUTHENTICATED
    assert details_of(error).reason == "SESSION_EXPIRED"

    assert await server.manager.cleanup_expired_sessions() == 1
    assert (await snapshot(server, session_id)).state is SessionState.EXPIRED
    error = await expect_error(
        stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 2))
    )
    assert details_of(error).reason == "SESSION_EXPIRED"


async def test_heartbeat_extends_the_idle_deadline(
    stub: Stub, server: PeerServer, clock: ManualClock
):
    session_id = (await open_session(stub)).session_id
    for sequence in (1, 2, 3):
        clock.advance(20)
        response = await stub.Heartbeat(
            peer_pb2.HeartbeatRequest(), metadata=session_metadata(session_id, sequence)
        )
        assert response.expires_at.ToNanoseconds() == round((clock.now() + 30) * 1e9)
    assert await server.manager.cleanup_expired_sessions() == 0
    assert (await snapshot(server, session_id)).state is SessionState.ESTABLISHED


async def test_terminate_ends_the_session_and_its_id_is_refused(stub: Stub, server: PeerServer):
    session_id = (await open_session(stub)).session_id
    response = await stub.Terminate(
        peer_pb2.TerminateRequest(reason="done"), metadata=session_metadata(session_id, 1)
    )
    assert response.state == peer_pb2.SESSION_STATE_TERMINATED
    error = await expect_error(
        stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 2))
    )
    assert details_of(error).reason == "SESSION_TERMINATED"
    assert (await server.manager.get_session_stats()).terminated_total == 1


async def test_call_on_a_session_still_in_initial_state_is_failed_precondition(
    stub: Stub, server: PeerServer
):
    session = await server.manager.create_session("raw", "1.0")  # handshake reply never sent
    error = await expect_error(
        stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session.session_id, 1))
    )
    details = details_of(error)
    assert details.code is grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "INVALID_SESSION_STATE"
    assert details.error_info is not None
    assert details.error_info.metadata["state"] == "INITIAL"


# --- Methods -------------------------------------------------------------------------------


async def test_status_reports_server_stats_and_the_callers_session(stub: Stub, server: PeerServer):
    session_id = (await open_session(stub)).session_id
    await open_session(stub, "peer-b")
    response = await stub.Status(peer_pb2.StatusRequest(), metadata=session_metadata(session_id, 1))

    assert response.server_peer_id == server.config.server_peer_id
    assert response.server_version
    assert list(response.supported_protocol_versions) == ["1.0"]
    assert response.session_stats.created_total == 2
    assert response.session_stats.established == 1
    assert response.session_stats.handshaking == 1
    assert response.session.session_id == session_id
    assert response.session.state == peer_pb2.SESSION_STATE_ESTABLISHED
    assert response.session.expected_sequence == 2


async def test_ping_returns_the_payload_and_server_timestamps(stub: Stub, clock: ManualClock):
    session_id = (await open_session(stub)).session_id
    response = await stub.Ping(
        peer_pb2.PingRequest(payload=b"\x00\x01"), metadata=session_metadata(session_id, 1)
    )
    assert response.payload == b"\x00\x01"
    assert response.server_received_at.ToNanoseconds() == round(clock.now() * 1e9)
    assert response.server_sent_at.ToNanoseconds() >= response.server_received_at.ToNanoseconds()


async def test_delegate_echo_returns_its_payload(stub: Stub):
    session_id = (await open_session(stub, "delegator")).session_id
    request = peer_pb2.DelegateTaskRequest(task_type="echo")
    request.payload.update({"n": 1, "s": "x", "list": [1, 2]})
    response = await stub.DelegateTask(request, metadata=session_metadata(session_id, 1))
    assert response.task.state == peer_pb2.TASK_STATE_COMPLETED
    assert response.task.result == request.payload
    assert response.task.owner_peer_id == "delegator"
    assert response.task.task_id


async def test_delegate_unknown_task_type_is_invalid_argument_and_changes_nothing(
    stub: Stub, server: PeerServer
):
    session_id = (await open_session(stub)).session_id
    before = await snapshot(server, session_id)
    error = await expect_error(
        stub.DelegateTask(
            peer_pb2.DelegateTaskRequest(task_type="nope"), metadata=session_metadata(session_id, 1)
        )
    )
    details = details_of(error)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == ["task_type"]
    assert await snapshot(server, session_id) == before


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        pytest.param("Ping", b"\xff\xff\xff\xff", id="ping-truncated-varint"),
        pytest.param("Handshake", b"\x0a\x02\xff\xfe", id="handshake-invalid-utf8"),
        pytest.param("DelegateTask", b"\x12\x05\x0a", id="delegate-truncated-struct"),
    ],
)
async def test_undecodable_request_bytes_are_invalid_argument_and_change_nothing(
    channel: grpc.aio.Channel, stub: Stub, server: PeerServer, method: str, payload: bytes
):
    session_id = (await open_session(stub)).session_id
    before = await snapshot(server, session_id)
    call = channel.unary_unary(f"/peer.v1.PeerService/{method}")

    error = await expect_error(call(payload, metadata=session_metadata(session_id, 1)))

    details = details_of(error)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == ["request"]
    assert await snapshot(server, session_id) == before


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param(float("nan"), "payload.x", id="nan"),
        pytest.param(float("inf"), "payload.x", id="infinity"),
        pytest.param({"deep": [1, float("-inf")]}, "payload.x.deep[1]", id="nested-in-list"),
    ],
)
async def test_delegate_payload_with_a_non_finite_number_is_invalid_argument(
    stub: Stub, server: PeerServer, value: Any, path: str
):
    session_id = (await open_session(stub)).session_id
    before = await snapshot(server, session_id)
    request = peer_pb2.DelegateTaskRequest(task_type="echo")
    request.payload.update({"x": value})

    error = await expect_error(stub.DelegateTask(request, metadata=session_metadata(session_id, 1)))

    details = details_of(error)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == [path]
    assert await snapshot(server, session_id) == before


async def test_concurrent_terminates_answer_with_the_sessions_reason(stub: Stub):
    session_id = (await open_session(stub)).session_id
    results = await asyncio.gather(
        *(
            stub.Terminate(
                peer_pb2.TerminateRequest(reason=str(i)), metadata=session_metadata(session_id, 1)
            )
            for i in range(8)
        ),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(errors) == 7  # one Terminate ran; the others reused its number with other bytes
    for error in errors:
        assert details_of(error).reason in {"SEQUENCE_ERROR", "SESSION_TERMINATED"}
