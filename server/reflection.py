"""Server reflection, grpc.reflection.v1 and v1alpha, that serves the proto files with comments.

The generated *_pb2 modules drop comments, so stock reflection shows grpcurl and other outside
clients an undocumented contract. `make proto` also writes a descriptor set with source info (our
files and the google.rpc error details vendored in protos/); this servicer answers with those
richer file descriptors wherever it has them.

grpcio-reflection implements only v1alpha (grpc/grpc#38576), yet newer clients (grpcurl >= 1.9,
Postman, grpcui, Java and Go) ask grpc.reflection.v1 first. The two protocols differ only in
their package (and file options): the same messages with the same fields, numbers and types. So
one servicer with the v1alpha message classes answers both, and v1's file descriptor is v1alpha's
renamed.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, text_format
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._base import BaseReflectionServicer

if TYPE_CHECKING:  # not subscriptable at run time
    Context = grpc.aio.ServicerContext[Any, Any]

DESCRIPTOR_SET = ("llmfeedback.proto", "feedback_v1.binpb")
V1ALPHA_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
REFLECTION_SERVICES = (V1_SERVICE, V1ALPHA_SERVICE)
V1_FILE = "grpc/reflection/v1/reflection.proto"
"""The name other gRPC implementations give v1's file (grpcio-reflection names its own
grpc_reflection/v1alpha/reflection.proto)."""
METHOD = "ServerReflectionInfo"
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


class DocumentedReflectionServicer(BaseReflectionServicer):  # type: ignore[misc]
    """Reflection of either version over one pool: the documented contract and listed services.

    The pool is private so v1's file, which no Python module defines, never enters the default
    pool, where a later grpcio-reflection that ships v1 would register it a second time. It holds
    what clients of this server can need: the descriptor set (our files, the error details they
    carry, and their imports) and the files of the listed services.
    """

    def __init__(self, service_names: list[str]) -> None:
        package, name = DESCRIPTOR_SET
        documented = descriptor_pb2.FileDescriptorSet.FromString(
            resources.files(package).joinpath(name).read_bytes()
        ).file
        self._documented = {file.name: file.SerializeToString() for file in documented}
        super().__init__(service_names, pool=_pool([*documented, v1_file()], service_names))

    async def ServerReflectionInfo(self, _requests: object, context: Context) -> None:  # noqa: N802
        """Answer each request in order, from a coroutine whose life is the call's.

        No async generator: one abandoned by a cancelled call would be finalized after the call
        ended, and this server must not touch a ServicerContext then.
        """
        while (request := await context.read()) is not EOF:
            await context.write(self._answer(request))

    def _answer(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        match request.WhichOneof("message_request"):
            case "file_by_filename":
                return self._file_by_filename(request, request.file_by_filename)
            case "file_containing_symbol":
                return self._file_containing_symbol(request, request.file_containing_symbol)
            case "file_containing_extension":
                extension = request.file_containing_extension
                return self._file_containing_extension(
                    request, extension.containing_type, extension.extension_number
                )
            case "all_extension_numbers_of_type":
                return self._all_extension_numbers_of_type(
                    request, request.all_extension_numbers_of_type
                )
            case "list_services":
                return self._list_services(request)
        code, message = grpc.StatusCode.INVALID_ARGUMENT.value
        return reflection_pb2.ServerReflectionResponse(
            error_response=reflection_pb2.ErrorResponse(error_code=code, error_message=message),
            original_request=request,
        )

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
        # CopyToProto drops source info, so files the descriptor set has are sent as it has them.
        files = response.file_descriptor_response.file_descriptor_proto
        for index, serialized in enumerate(files):
            name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
            files[index] = self._documented.get(name, serialized)
        return response


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc.reflection.v1's file descriptor, so the listed v1 service can be described too."""
    v1alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1alpha)
    v1alpha.options.ClearField("deprecated")  # v1alpha's file is marked deprecated, v1's is not
    # Package, type references, go_package and java_package all name the version.
    v1 = text_format.Parse(
        text_format.MessageToString(v1alpha).replace("v1alpha", "v1"),
        descriptor_pb2.FileDescriptorProto(),
    )
    v1.name = V1_FILE
    return v1


def _pool(
    files: list[descriptor_pb2.FileDescriptorProto], service_names: list[str]
) -> descriptor_pool.DescriptorPool:
    """`files` (dependencies first), then the files of the listed services defined elsewhere."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: descriptor_pb2.FileDescriptorProto) -> None:
        if file.name not in added:
            pool.AddSerializedFile(file.SerializeToString())
            added.add(file.name)

    for file in files:
        add(file)
    declared = {f"{file.package}.{service.name}" for file in files for service in file.service}
    for name in service_names:
        if name not in declared:
            for file in _with_dependencies(
                descriptor_pool.Default().FindFileContainingSymbol(name)
            ):
                add(file)
    return pool


def _with_dependencies(file: descriptor.FileDescriptor) -> list[descriptor_pb2.FileDescriptorProto]:
    """`file` and everything it imports, each after its own imports."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    for dependency in file.dependencies:
        ordered.extend(_with_dependencies(dependency))
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return [*ordered, proto]


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha for `service_names` (and for reflection) on `server`,
    as generic handlers only (see server.app.GenericHandlersOnly)."""
    servicer = DocumentedReflectionServicer([*service_names, *REFLECTION_SERVICES])
    handlers = {
        METHOD: grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for service in REFLECTION_SERVICES:
        # The same bytes on the wire under either name: one handler serves both versions.
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
