"""Server reflection as grpcurl uses it: v1 first (new versions), v1alpha (older ones)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

# v1's messages are v1alpha's, field for field: one set of classes talks to both.
METHODS = {
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
}


def ask(address: str, version: str, **request: str) -> reflection_pb2.ServerReflectionResponse:
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(
            METHODS[version],
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (answer,) = call(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=5)
        return answer


@pytest.mark.parametrize("version", METHODS)
def test_reflection_lists_the_services_under_each_version(server_address, version):
    answer = ask(server_address, version, list_services="")
    names = {s.name for s in answer.list_services_response.service}
    assert {
        "portfolio.v1.PortfolioManager",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= names


@pytest.mark.parametrize("version", METHODS)
@pytest.mark.parametrize(
    "symbol", ["portfolio.v1.PortfolioManager", "grpc.reflection.v1.ServerReflection"]
)
def test_reflection_describes_a_service_under_each_version(server_address, version, symbol):
    answer = ask(server_address, version, file_containing_symbol=symbol)
    assert not answer.HasField("error_response"), answer.error_response.error_message
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
    package, _, service = symbol.rpartition(".")
    assert any(f.package == package and service in {s.name for s in f.service} for f in files)
