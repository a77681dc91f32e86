"""The PeerService's method handlers, built from the contract's descriptors.

Requests are decoded here rather than by grpc itself: grpc.aio answers a request
whose bytes do not decode with UNKNOWN, while this service owes the caller
INVALID_ARGUMENT. Every request reaches the interceptors as a
:class:`ReceivedRequest`: the decoded message (or why it does not decode) and a
digest of its bytes, which tells a resend from a different message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from peer_grpc.core.errors import InvalidArgument
from peer_grpc.core.retry import request_digest
from peer_grpc.wire.contract import SERVICE_DESCRIPTOR, SERVICE_NAME

__all__ = [
    "SERVICER_METHOD",
    "ReceivedRequest",
    "peer_method_handlers",
    "peer_service_handler",
    "servicer_method_of",
]

#: The attribute of each handler behavior here that holds the servicer method it unwraps for.
SERVICER_METHOD = "servicer_method"


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """A request as it travels through the interceptors: decoded, or why not, and its digest."""

    #: The decoded message; None when the bytes do not decode.
    message: Message | None
    #: :func:`peer_grpc.core.retry.request_digest` of the bytes as received.
    digest: bytes
    #: The request's message type, e.g. ``peer.v1.PingRequest``.
    type_name: str
    #: Why the bytes do not decode; empty when they do.
    decode_error: str = ""

    def decoded(self) -> Message:
        """The decoded message.

        Raises:
            InvalidArgument: the bytes do not decode as the method's request type.
        """
        if self.message is None:
            raise InvalidArgument.of(
                "request", f"bytes do not decode as {self.type_name}: {self.decode_error}"
            )
        return self.message


def _receiving_deserializer(message_type: type[Message]) -> Callable[[bytes], ReceivedRequest]:
    type_name = message_type.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> ReceivedRequest:
        digest = request_digest(data)
        try:
            return ReceivedRequest(message_type.FromString(data), digest, type_name)
        except (DecodeError, ValueError, RuntimeError) as error:
            return ReceivedRequest(None, digest, type_name, str(error) or type(error).__name__)

    return deserialize


def _unwrapping(method: Callable[[Message, Any], Awaitable[Message]]) -> Callable[..., Any]:
    """Hand the servicer method the decoded message out of its envelope.

    The interceptor, which decodes and validates the request itself, calls the
    servicer method directly (:data:`SERVICER_METHOD`); this covers a handler
    served without it.
    """

    async def call(request: ReceivedRequest, context: Any) -> Message:
        return await method(request.decoded(), context)

    setattr(call, SERVICER_METHOD, method)
    return call


def _unwrapping_stream(
    method: Callable[[Message, Any], AsyncIterator[Message]],
) -> Callable[..., AsyncIterator[Message]]:
    """Hand a server-streaming servicer method the decoded message out of its envelope."""

    async def stream(request: ReceivedRequest, context: Any) -> AsyncIterator[Message]:
        async for response in method(request.decoded(), context):
            yield response

    setattr(stream, SERVICER_METHOD, method)
    return stream


def servicer_method_of(behavior: Callable[..., Any]) -> Callable[[Message, Any], Any]:
    """The servicer method behind a behavior of :func:`peer_service_handler`, which takes
    the decoded message.

    Raises:
        TypeError: ``behavior`` was not made here.
    """
    method = getattr(behavior, SERVICER_METHOD, None)
    if method is None:
        raise TypeError("PeerService handlers must come from peer_service_handler")
    return method  # type: ignore[no-any-return]


def peer_method_handlers(servicer: object) -> dict[str, grpc.RpcMethodHandler]:
    """The handler of each of ``servicer``'s PeerService methods, by method name.

    Serve them guarded by :class:`peer_grpc.server.interceptors.PeerInterceptor`, which
    rejects undecodable requests and admits sessions before these methods run.
    """
    handlers = {}
    for method in SERVICE_DESCRIPTOR.methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        implementation = getattr(servicer, method.name)
        if method.client_streaming:
            raise TypeError(f"{method.full_name}: client streaming is not served")
        make_handler, behavior = (
            (grpc.unary_stream_rpc_method_handler, _unwrapping_stream(implementation))
            if method.server_streaming
            else (grpc.unary_unary_rpc_method_handler, _unwrapping(implementation))
        )
        handlers[method.name] = make_handler(
            behavior,
            request_deserializer=_receiving_deserializer(request_type),
            response_serializer=response_type.SerializeToString,
        )
    return handlers


def peer_service_handler(servicer: object) -> grpc.GenericRpcHandler:
    """The generic handler that serves ``servicer``'s PeerService methods (see
    :func:`peer_method_handlers`)."""
    return grpc.method_handlers_generic_handler(SERVICE_NAME, peer_method_handlers(servicer))
