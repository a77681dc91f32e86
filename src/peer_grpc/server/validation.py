"""Request field rules, checked before a call is admitted so a bad request changes nothing."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping

from google.protobuf import duration_pb2, json_format, struct_pb2
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.errors import FieldViolation, InvalidArgument
from peer_grpc.core.task import TaskState
from peer_grpc.tasks.manager import TaskManager, decode_page_token
from peer_grpc.tasks.registry import MAX_JSON_DEPTH

__all__ = ["PEER_ID_PATTERN", "RequestValidator", "request_validators"]

#: What a peer id may be: 1-128 ASCII letters, digits and ``._:/-`` (so that a
#: certificate's URI identity, such as ``spiffe://example.org/billing``, is one).
PEER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_MAX_LIST = 32
_MAX_ITEM = 64
#: What a task id may be: the server hands out 32 hex digits; any id-like text is looked up.
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_NANOS_PER_SECOND = 1_000_000_000
_TASK_STATES = frozenset(int(state) for state in TaskState)

RequestValidator = Callable[[Message], None]


def validate_handshake(request: peer_pb2.HandshakeRequest) -> None:
    """Raise InvalidArgument unless the handshake names a valid peer and versions."""
    violations: list[FieldViolation] = []
    if not request.peer_id:
        violations.append(FieldViolation("peer_id", "is required"))
    elif not PEER_ID_PATTERN.fullmatch(request.peer_id):
        violations.append(
            FieldViolation("peer_id", "must be 1-128 characters of ASCII letters, digits and ._:/-")
        )
    if not request.protocol_versions:
        violations.append(FieldViolation("protocol_versions", "must name at least one version"))
    for name in ("protocol_versions", "capabilities"):
        values = getattr(request, name)
        if len(values) > _MAX_LIST:
            violations.append(FieldViolation(name, f"at most {_MAX_LIST} entries"))
        elif any(not v or len(v) > _MAX_ITEM for v in values):
            violations.append(FieldViolation(name, f"entries must be 1-{_MAX_ITEM} characters"))
    if request.HasField("resume"):
        if not request.resume.session_id:
            violations.append(FieldViolation("resume.session_id", "is required to resume"))
        elif len(request.resume.session_id) > 128:
            violations.append(FieldViolation("resume.session_id", "at most 128 characters"))
        if len(request.resume.session_token) > 256:
            violations.append(FieldViolation("resume.session_token", "at most 256 characters"))
    if violations:
        raise InvalidArgument(violations)


def delegate_task_validator(tasks: TaskManager) -> RequestValidator:
    """A validator of DelegateTask: a registered task type, a JSON payload, a timeout in range."""

    def validate(request: Message) -> None:
        assert isinstance(request, peer_pb2.DelegateTaskRequest)
        registry = tasks.registry
        if not request.task_type:
            raise InvalidArgument.of("task_type", "is required")
        if request.task_type not in registry:
            known = ", ".join(registry.names) or "none"
            raise InvalidArgument.of(
                "task_type", f"unknown task type {request.task_type[:64]!r}; registered: {known}"
            )
        _check_json_object("payload", request.payload)
        if not registry.takes_any_payload(request.task_type):
            # Before any task exists, and before the call is admitted: the sequence is
            # not spent on a payload that could never run.
            registry.check_payload(request.task_type, json_format.MessageToDict(request.payload))
        if request.HasField("timeout"):
            _check_duration("timeout", request.timeout)
            tasks.resolve_timeout(request.timeout.ToNanoseconds() / _NANOS_PER_SECOND)

    return validate


def _check_json_object(field: str, value: struct_pb2.Struct) -> None:
    """Raise InvalidArgument unless ``value`` can be handed to a handler as JSON."""
    for path in _non_finite_numbers(value, field):
        # JSON has no NaN or Infinity, so such a value cannot be handed to a handler.
        raise InvalidArgument.of(path, "must be a finite number (JSON has no NaN or Infinity)")
    if _struct_depth(value) > MAX_JSON_DEPTH:
        # The task echoes it back inside more messages than it came in.
        raise InvalidArgument.of(
            field, f"must not nest objects and arrays deeper than {MAX_JSON_DEPTH} levels"
        )


def _check_duration(field: str, span: duration_pb2.Duration) -> None:
    """Raise InvalidArgument unless ``span`` is a well-formed Duration."""
    nanos_ok = -_NANOS_PER_SECOND < span.nanos < _NANOS_PER_SECOND
    same_sign = span.seconds * span.nanos >= 0
    if not (nanos_ok and same_sign):
        raise InvalidArgument.of(field, "is not a valid Duration (nanos out of range or sign)")


def validate_task_id(request: Message) -> None:
    """Raise InvalidArgument unless the request names a task id that could exist."""
    task_id: str = getattr(request, "task_id")  # noqa: B009 - every task request has one
    if not task_id:
        raise InvalidArgument.of("task_id", "is required")
    if not _TASK_ID.fullmatch(task_id):
        raise InvalidArgument.of(
            "task_id", "must be 1-128 characters of ASCII letters, digits, _ and -"
        )


def validate_provide_input(request: Message) -> None:
    """Raise InvalidArgument unless the request names a task and carries a JSON answer."""
    assert isinstance(request, peer_pb2.ProvideInputRequest)
    validate_task_id(request)
    _check_json_object("input", request.input)


def validate_list_tasks(request: Message) -> None:
    """Raise InvalidArgument unless page size, token and state filter make sense."""
    assert isinstance(request, peer_pb2.ListTasksRequest)
    violations: list[FieldViolation] = []
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    try:
        decode_page_token(request.page_token)
    except InvalidArgument as error:
        violations.extend(error.violations)
    if request.state and request.state not in _TASK_STATES:
        violations.append(FieldViolation("state", f"unknown task state {request.state}"))
    if violations:
        raise InvalidArgument(violations)


def _struct_depth(value: struct_pb2.Struct | struct_pb2.Value) -> int:
    """How deeply objects and arrays nest in a Struct (``{}`` is 1), like ``json_depth``."""
    if isinstance(value, struct_pb2.Struct):
        return 1 + max(map(_struct_depth, value.fields.values()), default=0)
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _struct_depth(value.struct_value)
    if kind == "list_value":
        return 1 + max(map(_struct_depth, value.list_value.values), default=0)
    return 0


def _non_finite_numbers(value: struct_pb2.Struct | struct_pb2.Value, path: str) -> Iterator[str]:
    """The paths of NaN and infinite numbers anywhere inside a Struct or Value."""
    if isinstance(value, struct_pb2.Struct):
        for key, item in value.fields.items():
            yield from _non_finite_numbers(item, f"{path}.{key}")
        return
    kind = value.WhichOneof("kind")
    if kind == "number_value" and not math.isfinite(value.number_value):
        yield path
    elif kind == "struct_value":
        yield from _non_finite_numbers(value.struct_value, path)
    elif kind == "list_value":
        for index, item in enumerate(value.list_value.values):
            yield from _non_finite_numbers(item, f"{path}[{index}]")


def request_validators(tasks: TaskManager) -> Mapping[str, RequestValidator]:
    """Field validators by PeerService method name."""
    return {
        "Handshake": validate_handshake,  # type: ignore[dict-item]
        "DelegateTask": delegate_task_validator(tasks),
        "GetTask": validate_task_id,
        "CancelTask": validate_task_id,
        "WatchTask": validate_task_id,
        "ListTasks": validate_list_tasks,
        "ProvideInput": validate_provide_input,
    }
