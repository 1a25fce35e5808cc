"""The descriptors reflection serves: our documented files and the vendored google.rpc ones."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2

import llmfeedback.proto
from server.reflection import DESCRIPTOR_SET

PROTOS = Path(__file__).parents[2] / "protos"
INSTALLED_GOOGLE_RPC = Path(error_details_pb2.__file__).parent
VENDORED = sorted(path.relative_to(PROTOS).as_posix() for path in PROTOS.glob("google/**/*.proto"))


def descriptor_set() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The committed descriptor set reflection reads, by file name."""
    package, name = DESCRIPTOR_SET
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files(package).joinpath(name).read_bytes()
    ).file
    return {file.name: file for file in files}


@pytest.mark.parametrize("vendored", VENDORED)
def test_vendored_google_files_are_googleapis_own(vendored: str) -> None:
    # Clients of other languages decode our errors from protos/ alone; a copy that drifted from
    # googleapis-common-protos would describe details other than the ones the server sends.
    installed = INSTALLED_GOOGLE_RPC.parent.parent / vendored

    assert (PROTOS / vendored).read_bytes() == installed.read_bytes()


def test_error_details_are_vendored() -> None:
    assert "google/rpc/error_details.proto" in VENDORED


def bare(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """`file` without comments and json_name, which protoc adds to descriptor sets only."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(file)
    copy.ClearField("source_code_info")
    messages = list(copy.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            field.ClearField("json_name")
    return copy


def test_descriptor_set_carries_the_error_details_with_their_comments() -> None:
    files = descriptor_set()
    error_details = files["google/rpc/error_details.proto"]
    pb2 = descriptor_pb2.FileDescriptorProto.FromString(error_details_pb2.DESCRIPTOR.serialized_pb)

    assert bare(error_details) == bare(pb2)
    assert {"BadRequest", "ResourceInfo", "ErrorInfo", "RetryInfo", "QuotaFailure"} <= {
        message.name for message in error_details.message_type
    }
    assert "google/protobuf/duration.proto" in files
    comments = [location.leading_comments for location in error_details.source_code_info.location]
    assert any("Describes violations in a client request." in text for text in comments)


def test_no_python_is_generated_for_the_vendored_files() -> None:
    # googleapis-common-protos registers google/rpc/*.proto in the default descriptor pool; a
    # second copy under llmfeedback.proto would collide with it on import.
    generated = Path(llmfeedback.proto.__file__).parent

    assert not (generated / "google").exists()
    assert not list(generated.rglob("*error_details*"))
