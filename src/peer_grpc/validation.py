"""Request field rules, checked before a call is admitted so a bad request changes nothing."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.errors import FieldViolation, InvalidArgument
from peer_grpc.tasks import TaskRegistry

__all__ = ["PEER_ID_PATTERN", "RequestValidator", "request_validators"]

#: What a peer id may be: 1-128 ASCII letters, digits and ``._:-``.
PEER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_LIST = 32
_MAX_ITEM = 64

RequestValidator = Callable[[Message], None]


def validate_handshake(request: peer_pb2.HandshakeRequest) -> None:
    """Raise InvalidArgument unless the handshake names a valid peer and versions."""
    violations: list[FieldViolation] = []
    if not request.peer_id:
        violations.append(FieldViolation("peer_id", "is required"))
    elif not PEER_ID_PATTERN.fullmatch(request.peer_id):
        violations.append(
            FieldViolation("peer_id", "must be 1-128 characters of ASCII letters, digits and ._:-")
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


def delegate_task_validator(tasks: TaskRegistry) -> RequestValidator:
    """A validator that accepts only task types registered in ``tasks`` (looked up per call)."""

    def validate(request: Message) -> None:
        assert isinstance(request, peer_pb2.DelegateTaskRequest)
        if not request.task_type:
            raise InvalidArgument.of("task_type", "is required")
        if request.task_type not in tasks:
            known = ", ".join(tasks.names) or "none"
            raise InvalidArgument.of(
                "task_type", f"unknown task type {request.task_type[:64]!r}; registered: {known}"
            )
        for path in _non_finite_numbers(request.payload, "payload"):
            # JSON has no NaN or Infinity, so such a payload cannot be handed to a handler.
            raise InvalidArgument.of(path, "must be a finite number (JSON has no NaN or Infinity)")

    return validate


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


def request_validators(tasks: TaskRegistry) -> Mapping[str, RequestValidator]:
    """Field validators by PeerService method name."""
    return {
        "Handshake": validate_handshake,  # type: ignore[dict-item]
        "DelegateTask": delegate_task_validator(tasks),
    }
