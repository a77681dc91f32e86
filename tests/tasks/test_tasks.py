"""Task handlers (registration and running) and the Handshake request's field rules."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from peer_grpc import InvalidArgument, TaskRegistry, default_registry
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.server.validation import validate_handshake
from peer_grpc.tasks import TaskOutcome

# --- registration ----------------------------------------------------------------------------


def test_decorator_registers_and_returns_the_handler() -> None:
    registry = TaskRegistry()

    async def resize(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    assert registry.task("resize")(resize) is resize
    assert "resize" in registry
    assert "other" not in registry


def test_names_are_sorted() -> None:
    registry = TaskRegistry()
    for name in ("zip", "alpha", "mid"):
        registry.register(name, lambda payload: payload)
    assert registry.names == ("alpha", "mid", "zip")


def test_a_name_is_registered_once() -> None:
    registry = TaskRegistry()

    @registry.task("resize")
    def first(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    def second(payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="already registered"):
        registry.task("resize")(second)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("resize", second)
    assert registry.names == ("resize",)


def test_a_task_type_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        TaskRegistry().register("", lambda payload: payload)


# --- running ---------------------------------------------------------------------------------


async def test_async_handler_result_is_returned() -> None:
    registry = TaskRegistry()

    @registry.task("double")
    async def double(payload: dict[str, Any]) -> dict[str, Any]:
        return {"value": payload["value"] * 2}

    outcome = await registry.run("double", {"value": 21})

    assert outcome == TaskOutcome(result={"value": 42})
    assert outcome.ok


async def test_async_handler_runs_on_the_event_loop() -> None:
    registry = TaskRegistry()
    seen: list[int] = []

    @registry.task("where")
    async def where(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(threading.get_ident())
        return {}

    await registry.run("where", {})
    assert seen == [threading.get_ident()]


async def test_an_object_with_an_async_call_runs_on_the_event_loop() -> None:
    seen: list[int] = []

    class Handler:
        async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
            seen.append(threading.get_ident())
            return {"ok": True}

    registry = TaskRegistry()
    registry.register("callable", Handler())
    assert await registry.run("callable", {}) == TaskOutcome(result={"ok": True})
    assert seen == [threading.get_ident()]


async def test_plain_handler_runs_in_a_worker_thread() -> None:
    """A blocking (non-async) handler must never run on the event loop's thread."""
    registry = TaskRegistry()
    seen: list[int] = []

    @registry.task("blocking")
    def blocking(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(threading.get_ident())
        return {"got": payload}

    loop_thread = threading.get_ident()
    outcome = await registry.run("blocking", {"x": 1})

    assert outcome == TaskOutcome(result={"got": {"x": 1}})
    assert len(seen) == 1
    assert seen[0] != loop_thread


async def _raise_value_error(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("bad size 0")


def _raise_value_error_sync(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("bad size 0")


async def _raise_bare(payload: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        pytest.param(_raise_value_error, "ValueError: bad size 0", id="async-handler"),
        pytest.param(_raise_value_error_sync, "ValueError: bad size 0", id="plain-handler"),
        pytest.param(_raise_bare, "RuntimeError", id="exception-without-message"),
    ],
)
async def test_handler_exception_becomes_a_failed_outcome(
    handler: Any, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = TaskRegistry()
    registry.register("fails", handler)

    with caplog.at_level(logging.ERROR, logger="peer_grpc.tasks"):
        outcome = await registry.run("fails", {})

    assert outcome == TaskOutcome(error_code="HANDLER_ERROR", error_message=message)
    assert not outcome.ok
    assert "Traceback" not in outcome.error_message
    assert __file__ not in outcome.error_message
    # The traceback goes to the server's log instead.
    assert [record.exc_info is not None for record in caplog.records] == [True]


@pytest.mark.parametrize(
    ("result", "type_name"),
    [
        pytest.param(["a", "list"], "list", id="list"),
        pytest.param("text", "str", id="str"),
        pytest.param(None, "NoneType", id="none"),
        pytest.param(42, "int", id="int"),
    ],
)
async def test_non_mapping_result_is_an_invalid_result(result: object, type_name: str) -> None:
    registry = TaskRegistry()

    @registry.task("odd")
    async def odd(payload: dict[str, Any]) -> Any:
        return result

    outcome = await registry.run("odd", {})

    assert outcome.error_code == "INVALID_RESULT"
    assert outcome.result is None
    assert type_name in outcome.error_message
    assert "JSON object" in outcome.error_message


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("result", "message"),
    [
        pytest.param({"n": 10**400}, "does not fit a double", id="integer-beyond-a-double"),
        pytest.param({"n": float("nan")}, "not JSON", id="nan"),
        pytest.param({"n": object()}, "not JSON", id="not-json-type"),
        pytest.param(_nested(33), "nested deeper than 32", id="nested-33-deep"),
    ],
)
async def test_a_result_the_contract_cannot_carry_is_an_invalid_result(
    result: dict[str, Any], message: str
) -> None:
    registry = TaskRegistry()
    registry.register("odd", lambda payload: result)
    outcome = await registry.run("odd", {})
    assert outcome.error_code == "INVALID_RESULT"
    assert message in outcome.error_message


async def test_a_result_32_deep_is_fine_and_numbers_become_doubles() -> None:
    registry = TaskRegistry()
    registry.register("deep", lambda payload: {"n": 1, "deep": _nested(31)})
    outcome = await registry.run("deep", {})
    assert outcome.ok
    assert outcome.result == {"n": 1.0, "deep": _nested(31)}
    assert isinstance((outcome.result or {})["n"], float)


async def test_any_mapping_is_a_valid_result() -> None:
    class Frozen(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            return {"k": 1}[key]

        def __iter__(self) -> Any:
            return iter(["k"])

        def __len__(self) -> int:
            return 1

    registry = TaskRegistry()
    registry.register("frozen", lambda payload: Frozen())
    outcome = await registry.run("frozen", {})
    assert outcome.ok
    assert dict(outcome.result or {}) == {"k": 1}


async def test_default_registry_echoes() -> None:
    registry = default_registry()

    assert "echo" in registry
    assert registry.names == ("echo", "sleep")
    payload = {"a": [1, 2], "b": {"c": None}}
    assert await registry.run("echo", payload) == TaskOutcome(result=payload)


def test_default_registry_is_fresh_each_time() -> None:
    first = default_registry()
    first.register("extra", lambda payload: payload)
    assert "extra" not in default_registry()


# --- handshake validation --------------------------------------------------------------------


def _handshake(**fields: Any) -> peer_pb2.HandshakeRequest:
    request: dict[str, Any] = {"peer_id": "peer-a", "protocol_versions": ["1.0"]}
    request.update(fields)
    return peer_pb2.HandshakeRequest(**request)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(_handshake(), id="minimal"),
        pytest.param(_handshake(peer_id="svc.a:8080_x-1"), id="peer-id-with-._:-"),
        pytest.param(
            _handshake(peer_id="spiffe://example.org/billing"), id="peer-id-a-certificate-uri"
        ),
        pytest.param(_handshake(peer_id="p" * 128), id="peer-id-of-128-chars"),
        pytest.param(_handshake(capabilities=["tasks"]), id="with-capabilities"),
        pytest.param(_handshake(protocol_versions=["v"] * 32), id="32-versions"),
        pytest.param(_handshake(protocol_versions=["v" * 64]), id="version-of-64-chars"),
    ],
)
def test_valid_handshake_passes(request_: peer_pb2.HandshakeRequest) -> None:
    validate_handshake(request_)


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(_handshake(peer_id=""), ["peer_id"], id="missing-peer-id"),
        pytest.param(_handshake(peer_id="peer a"), ["peer_id"], id="peer-id-with-space"),
        pytest.param(_handshake(peer_id="peer?a"), ["peer_id"], id="peer-id-with-question-mark"),
        pytest.param(_handshake(peer_id="p\u00e9er"), ["peer_id"], id="peer-id-non-ascii"),
        pytest.param(_handshake(peer_id="p" * 129), ["peer_id"], id="peer-id-of-129-chars"),
        pytest.param(_handshake(protocol_versions=[]), ["protocol_versions"], id="no-versions"),
        pytest.param(
            _handshake(protocol_versions=["1.0", ""]), ["protocol_versions"], id="empty-version"
        ),
        pytest.param(
            _handshake(protocol_versions=["v" * 65]),
            ["protocol_versions"],
            id="version-of-65-chars",
        ),
        pytest.param(
            _handshake(protocol_versions=["v"] * 33), ["protocol_versions"], id="33-versions"
        ),
        pytest.param(_handshake(capabilities=[""]), ["capabilities"], id="empty-capability"),
        pytest.param(_handshake(capabilities=["c"] * 33), ["capabilities"], id="33-capabilities"),
        pytest.param(
            peer_pb2.HandshakeRequest(),
            ["peer_id", "protocol_versions"],
            id="empty-request-names-both",
        ),
    ],
)
def test_invalid_handshake_names_the_field(
    request_: peer_pb2.HandshakeRequest, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_handshake(request_)
    assert [v.field for v in caught.value.violations] == fields
    assert all(v.description for v in caught.value.violations)
