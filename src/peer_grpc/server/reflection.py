"""Server reflection in both its versions: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection serves v1alpha only, while grpcurl and buf curl ask for v1
first. The two versions are the same protocol: v1 is v1alpha's proto under
another package, with every message and field number unchanged. So one
servicer answers both, and v1's descriptors are v1alpha's renamed, which lets
reflection describe the v1 service too.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

__all__ = ["REFLECTION_SERVICES", "enable_reflection"]

_V1ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"
#: Both reflection services, as clients name them.
REFLECTION_SERVICES = (f"{_V1}.ServerReflection", reflection.SERVICE_NAME)


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection (v1 and v1alpha) for ``service_names`` and for itself."""
    _add_v1_descriptors()
    servicer = reflection.aio.ReflectionServicer((*service_names, *REFLECTION_SERVICES))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                REFLECTION_SERVICES[0], {"ServerReflectionInfo": v1}
            ),
        )
    )


def _add_v1_descriptors() -> None:
    """Put v1's file in the default pool (once): v1alpha's, with the package renamed."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1
    proto.options.deprecated = False  # v1alpha is; v1 is its successor
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    old, new = f".{_V1ALPHA}.", f".{_V1}."
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # scalars have none; setting one, even "", breaks them
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(proto)
