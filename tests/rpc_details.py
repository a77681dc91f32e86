"""Reading rich error details off a failed call, straight from the wire format."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from peer_grpc._proto.peer.v1 import peer_pb2


@dataclass
class Details:
    """The rich details a failed call carried in ``grpc-status-details-bin``."""

    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None = None
    bad_request: error_details_pb2.BadRequest | None = None
    sequence_error: peer_pb2.SequenceError | None = None

    @property
    def reason(self) -> str | None:
        return self.error_info.reason if self.error_info else None

    @property
    def bad_fields(self) -> list[str]:
        return [v.field for v in self.bad_request.field_violations] if self.bad_request else []


def details_of(error: grpc.RpcError) -> Details:
    """Decode ``error``'s status with grpcio-status, independently of the client library."""
    found = Details(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} carried no rich status: {error.details()}"
    for detail in status.details:
        for attr, message_type in (
            ("error_info", error_details_pb2.ErrorInfo),
            ("bad_request", error_details_pb2.BadRequest),
            ("sequence_error", peer_pb2.SequenceError),
        ):
            if detail.Is(message_type.DESCRIPTOR):
                value = message_type()
                detail.Unpack(value)
                setattr(found, attr, value)
    return found


def reason_of(error: grpc.RpcError) -> str:
    """The ``ErrorInfo.reason`` of ``error``'s rich status ('' without one)."""
    info = details_of(error).error_info
    return info.reason if info is not None else ""
