"""Server reflection under both `grpc.reflection.v1alpha` and `grpc.reflection.v1`.

grpcio-reflection (1.81) ships only v1alpha, which new grpcurl versions no longer try first.
The two protocols are the same messages with the same field numbers under another package, so
v1 is served by the v1alpha servicer behind a second service name, and a copy of the v1alpha
file renamed to v1 goes in the descriptor pool so that v1 describes itself too."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as alpha_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """The v1alpha file as v1 (package, file name and the types fields refer to)."""
    try:
        pool.FindFileByName(_V1_FILE)  # type: ignore[no-untyped-call]
        return  # a second server in the same process (tests)
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)  # type: ignore[no-untyped-call]
    file.name = _V1_FILE
    file.package = _V1_PACKAGE
    file.ClearField("options")
    alpha, v1 = f".{_ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in file.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(alpha, v1)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(alpha, v1)
            method.output_type = method.output_type.replace(alpha, v1)
    pool.Add(file)  # type: ignore[no-untyped-call]


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Reflection of `service_names` (and of both reflection services) under v1alpha and v1."""
    pool = descriptor_pool.Default()  # type: ignore[no-untyped-call]
    _add_v1_descriptor(pool)
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    alpha_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1}),)
    )
