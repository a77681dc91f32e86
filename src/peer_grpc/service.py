"""The PeerService's method handlers, built from the contract's descriptors.

Requests are decoded here rather than by grpc itself: grpc.aio answers a request
whose bytes do not decode with UNKNOWN, while this service owes the caller
INVALID_ARGUMENT. A request that does not decode reaches the interceptors as an
:class:`UndecodableRequest`, which the validation interceptor rejects before the
call is admitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from peer_grpc._proto.peer.v1 import peer_pb2

__all__ = ["SERVICE_DESCRIPTOR", "SERVICE_NAME", "UndecodableRequest", "peer_service_handler"]

SERVICE_DESCRIPTOR = peer_pb2.DESCRIPTOR.services_by_name["PeerService"]
#: The fully qualified service name, ``peer.v1.PeerService``.
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """Stands in for a request whose bytes are not a valid message of its type."""

    type_name: str
    reason: str


def _lenient_deserializer(message_type: type[Message]) -> Callable[[bytes], Any]:
    type_name = message_type.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Message | UndecodableRequest:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as error:
            return UndecodableRequest(type_name, str(error) or type(error).__name__)

    return deserialize


def peer_service_handler(servicer: object) -> grpc.GenericRpcHandler:
    """The generic handler that serves ``servicer``'s PeerService methods.

    Serve it behind :func:`peer_grpc.interceptors.peer_interceptors`, which reject
    undecodable requests and admit sessions before these methods run.
    """
    handlers = {}
    for method in SERVICE_DESCRIPTOR.methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient_deserializer(request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
