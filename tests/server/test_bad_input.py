"""Whatever a client sends, the answer is a clear status and a rejected call changes nothing."""

from __future__ import annotations

import contextlib

import grpc
import grpc.aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer_grpc import PeerServer
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.metadata import SEQUENCE_KEY, SESSION_ID_KEY
from peer_grpc.wire.contract import SERVICE_DESCRIPTOR
from tests.conftest import open_session

METHODS = [method.name for method in SERVICE_DESCRIPTOR.methods]
STREAMING = {method.name for method in SERVICE_DESCRIPTOR.methods if method.server_streaming}
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# Metadata values a gRPC client can send for non-binary keys: printable ASCII.
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
sequence_values = st.one_of(st.integers(min_value=-5, max_value=2**64 + 5).map(str), ascii_text)


@st.composite
def metadata(draw: st.DrawFn, session_id: str, expected: int) -> list[tuple[str, str]]:
    """Session metadata, often right, often subtly or wildly wrong."""
    sequences = st.one_of(st.just(str(expected)), sequence_values)
    entries = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just(SESSION_ID_KEY), st.one_of(st.just(session_id), ascii_text)),
                st.tuples(st.just(SEQUENCE_KEY), sequences),
                st.tuples(st.sampled_from(["x-custom", "peer-other"]), ascii_text),
            ),
            max_size=4,
        )
    )
    return entries


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def request_bodies(draw: st.DrawFn, method: str) -> bytes:
    """Random bytes, or a well-formed request with random (possibly hostile) contents."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=48))
    if method == "DelegateTask":
        request = peer_pb2.DelegateTaskRequest(
            task_type=draw(st.sampled_from(["echo", "nope", ""])),
            return_immediately=draw(st.booleans()),
        )
        request.payload.update(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)))
        if draw(st.booleans()):
            request.timeout.seconds = draw(st.integers(-(2**40), 2**40))
            request.timeout.nanos = draw(st.integers(-(2**31), 2**31 - 1))
        return request.SerializeToString()
    if method in ("GetTask", "CancelTask", "WatchTask"):
        task_ids = st.one_of(st.text(max_size=140), st.just("a" * 32))
        request_type = getattr(peer_pb2, f"{method}Request")
        return request_type(task_id=draw(task_ids)).SerializeToString()  # type: ignore[no-any-return]
    if method == "ListTasks":
        return peer_pb2.ListTasksRequest(
            page_size=draw(st.integers(-(2**31), 2**31 - 1)),
            page_token=draw(st.one_of(st.text(max_size=70), st.just("YWZ0ZXI6MQ"))),
            state=draw(st.integers(-3, 9)),  # type: ignore[arg-type]
        ).SerializeToString()
    if method == "Handshake":
        return peer_pb2.HandshakeRequest(
            peer_id=draw(st.text(max_size=20)),
            protocol_versions=draw(st.lists(st.text(max_size=5), max_size=3)),
        ).SerializeToString()
    return b""


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_no_input_gets_unknown_or_internal_and_rejections_change_nothing(
    channel: grpc.aio.Channel, server: PeerServer, stub, data: st.DataObject
):
    # A fresh session per example, so that one example's Terminate does not end the rest.
    session_id = (await open_session(stub, "fuzzed")).session_id
    method = data.draw(st.sampled_from(METHODS), label="method")
    body = data.draw(request_bodies(method), label="body")
    before = await server.manager.get_session(session_id)
    assert before is not None
    sent = data.draw(metadata(session_id, before.expected_sequence), label="metadata")

    path = f"/peer.v1.PeerService/{method}"
    call: grpc.aio.Call
    if method in STREAMING:
        call = channel.unary_stream(path)(body, metadata=sent)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in call:
                pass
    else:
        call = channel.unary_unary(path)(body, metadata=sent)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call
    code = await call.code()
    assert code not in FORBIDDEN, await call.details()
    after = await server.manager.get_session(session_id)
    announced = [*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())]
    if SEQUENCE_KEY in dict(announced):
        # Admitted: the message took its number, whatever the method then answered
        # (GetTask of an unknown task is NOT_FOUND, say).
        assert after is not None
        assert after.expected_sequence == before.expected_sequence + 1
    elif code is grpc.StatusCode.OK:
        assert method == "Handshake"  # the one method that carries no session
    else:
        assert after == before  # refused before admission: nothing changed
