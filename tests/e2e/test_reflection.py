"""Reflection v1 and v1alpha on a real server, asked as a reflection client of either version.

grpcurl 1.8.6 speaks only v1alpha, so this client is grpc's generic stream call. It encodes with
grpcio-reflection's v1alpha message classes on both paths: the two protocols differ only in their
package name, so those bytes are exactly what a v1 client sends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TypeAlias

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from server.config import Settings
from server.reflection import REFLECTION_SERVICES
from tests.databases import sqlite_url
from tests.server_harness import ServerThread

# grpcio-reflection's messages have no stubs mypy sees, so these stand for Any.
Request: TypeAlias = reflection_pb2.ServerReflectionRequest
Response: TypeAlias = reflection_pb2.ServerReflectionResponse
LISTED = {
    "feedback.v1.FeedbackService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
SERVICE_COMMENT = "FeedbackService records LLM chat interactions"


@pytest.fixture(scope="module")
def reflected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the module: reflection reads no database and no call changes it."""
    database = tmp_path_factory.mktemp("reflection") / "feedback.sqlite3"
    settings = Settings(database_url=sqlite_url(database), storage_threads=1, log_level="WARNING")
    with ServerThread(settings) as running:
        yield running


@pytest.fixture(params=REFLECTION_SERVICES)
def reflect(
    request: pytest.FixtureRequest, reflected: ServerThread
) -> Iterator[grpc.StreamStreamMultiCallable[Request, Response]]:
    """ServerReflectionInfo of one reflection version on the running server."""
    with grpc.insecure_channel(reflected.address) as channel:
        yield channel.stream_stream(
            f"/{request.param}/ServerReflectionInfo",
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )


def ask(
    reflect: grpc.StreamStreamMultiCallable[Request, Response], *requests: Request
) -> list[Response]:
    """The responses to `requests`, sent on one stream."""
    return list(reflect(iter(requests), timeout=10))


def files(response: Response) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The file descriptors in `response`, by name, in the order they came."""
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    parsed = map(
        descriptor_pb2.FileDescriptorProto.FromString,
        response.file_descriptor_response.file_descriptor_proto,
    )
    return {file.name: file for file in parsed}


def comments(file: descriptor_pb2.FileDescriptorProto) -> str:
    """Every leading comment in `file`, joined."""
    return "\n".join(location.leading_comments for location in file.source_code_info.location)


def test_lists_every_service_in_both_versions(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    (response,) = ask(reflect, Request(list_services=""))

    assert {service.name for service in response.list_services_response.service} == LISTED


def test_the_file_of_the_service_comes_with_its_comments_and_imports(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    (response,) = ask(reflect, Request(file_containing_symbol="feedback.v1.FeedbackService"))

    received = files(response)
    assert next(iter(received)) == "feedback/v1/feedback_service.proto"
    assert SERVICE_COMMENT in comments(received["feedback/v1/feedback_service.proto"])
    assert {"google/rpc/status.proto", "google/protobuf/timestamp.proto"} <= set(received)


def test_a_file_by_name_and_a_method_symbol_give_the_same_documented_file(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    by_name, by_method = ask(
        reflect,
        Request(file_by_filename="feedback/v1/feedback_service.proto"),
        Request(file_containing_symbol="feedback.v1.FeedbackService.SubmitFeedback"),
    )

    assert files(by_name) == files(by_method)
    assert SERVICE_COMMENT in comments(files(by_name)["feedback/v1/feedback_service.proto"])


def test_error_detail_types_resolve_with_their_comments(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    # grpcurl and other clients print a status's details only if they can resolve these types.
    for detail in ("BadRequest", "ResourceInfo", "ErrorInfo", "RetryInfo", "QuotaFailure"):
        (response,) = ask(reflect, Request(file_containing_symbol=f"google.rpc.{detail}"))

        received = files(response)
        assert list(received) == [
            "google/rpc/error_details.proto",
            "google/protobuf/duration.proto",
        ]
        assert "Describes violations in a client request." in comments(
            received["google/rpc/error_details.proto"]
        )


def test_every_listed_service_can_be_described(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    responses = ask(reflect, *(Request(file_containing_symbol=name) for name in sorted(LISTED)))

    for name, response in zip(sorted(LISTED), responses, strict=True):
        file = next(iter(files(response).values()))
        assert name.rpartition(".")[2] in {service.name for service in file.service}
        assert file.package == name.rpartition(".")[0]


def test_v1s_own_file_declares_v1_messages(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    (response,) = ask(reflect, Request(file_by_filename="grpc/reflection/v1/reflection.proto"))

    (file,) = files(response).values()
    (method,) = file.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    assert method.client_streaming
    assert method.server_streaming
    assert not file.options.deprecated


def test_unknown_and_empty_requests_get_error_responses_and_the_stream_goes_on(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    unknown, empty, listed = ask(
        reflect,
        Request(file_containing_symbol="no.such.Symbol"),
        Request(),
        Request(list_services=""),
    )

    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert unknown.original_request.file_containing_symbol == "no.such.Symbol"
    assert empty.error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(listed.list_services_response.service) == len(LISTED)


def test_a_call_cancelled_mid_stream_leaves_reflection_serving(
    reflect: grpc.StreamStreamMultiCallable[Request, Response],
) -> None:
    # The handler is waiting for the client's next request when the call ends under it.
    cancelled = threading.Event()

    def requests() -> Iterator[Request]:
        yield Request(list_services="")
        cancelled.wait(timeout=10)

    call = reflect(requests(), timeout=10)
    responses = iter(call)
    try:
        next(responses)
        call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
    finally:
        cancelled.set()

    with pytest.raises(grpc.RpcError) as ended:
        next(responses)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    (response,) = ask(reflect, Request(list_services=""))
    assert len(response.list_services_response.service) == len(LISTED)
