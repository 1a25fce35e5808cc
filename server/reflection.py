"""Server reflection that serves the proto files with their comments.

The generated *_pb2 modules drop comments, so stock reflection shows grpcurl and other outside
clients an undocumented contract. `make proto` also writes a descriptor set with source info; this
servicer answers with those richer file descriptors wherever it has them.
"""

from __future__ import annotations

from importlib import resources

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

DESCRIPTOR_SET = ("llmfeedback._proto", "feedback_v1.binpb")


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """grpc.reflection.v1alpha with documented descriptors for our own .proto files."""

    def __init__(self, service_names: list[str]) -> None:
        super().__init__(service_names)
        package, name = DESCRIPTOR_SET
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(
            resources.files(package).joinpath(name).read_bytes()
        )
        self._documented = {file.name: file.SerializeToString() for file in descriptor_set.file}

    def _file_by_filename(
        self, request: reflection_pb2.ServerReflectionRequest, filename: str
    ) -> reflection_pb2.ServerReflectionResponse:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response") and self._is_method(fully_qualified_name):
            # The descriptor pool does not index methods; `grpcurl describe Service.Method` asks.
            service = fully_qualified_name.rpartition(".")[0]
            response = super()._file_containing_symbol(request, service)
        return self._with_comments(response)

    def _is_method(self, fully_qualified_name: str) -> bool:
        service, _, method = fully_qualified_name.rpartition(".")
        try:
            return method in self._pool.FindServiceByName(service).methods_by_name
        except KeyError:
            return False

    def _with_comments(
        self, response: reflection_pb2.ServerReflectionResponse
    ) -> reflection_pb2.ServerReflectionResponse:
        files = response.file_descriptor_response.file_descriptor_proto
        for index, serialized in enumerate(files):
            name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
            files[index] = self._documented.get(name, serialized)
        return response


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection for `service_names` (and for reflection itself) on `server`."""
    names = [*service_names, reflection.SERVICE_NAME]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        DocumentedReflectionServicer(names), server
    )
