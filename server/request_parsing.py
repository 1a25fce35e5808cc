"""Registers FeedbackService with request parsing the server controls, for precise errors.

grpc-python parses requests itself and answers bytes that do not decode with UNKNOWN (unary and
server-streaming calls), or raises the DecodeError inside the handler's request stream, where it
becomes INTERNAL. The contract promises INVALID_ARGUMENT, so the handlers registered here take
the raw bytes and parse them first. Handlers come from the service descriptor and the servicer:
a method the servicer does not override is left unregistered and answers UNIMPLEMENTED, and one
it implements later is served without touching this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message

from llmfeedback.proto.feedback.v1 import feedback_service_pb2, feedback_service_pb2_grpc
from server.status import abort_with_status, malformed_request_status

SERVICE = feedback_service_pb2.DESCRIPTOR.services_by_name["FeedbackService"]

if TYPE_CHECKING:  # not subscriptable at run time
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
Parse = Callable[[bytes], Message]

_CLEARER_REASONS = {
    "Exceeded upb_DecodeOptions_MaxDepth": "messages nested deeper than the protobuf limit (100)",
    "String field had bad UTF-8": "a string field is not valid UTF-8",
    "Wire format was corrupt": "the protobuf wire format is corrupt",
}
"""upb's DecodeError texts, said in the words of the contract."""


def add_feedback_service(
    servicer: feedback_service_pb2_grpc.FeedbackServiceServicer, server: grpc.aio.Server
) -> None:
    """Serve `servicer`'s FeedbackService methods on `server`, parsing requests here.

    Generic handlers only, never registered methods: see server.app.GenericHandlersOnly.
    """
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )


def method_handlers(servicer: object) -> dict[str, Handler]:
    """A raw-bytes handler for every service method `servicer` implements, by method name."""
    handlers: dict[str, Handler] = {}
    for method in SERVICE.methods:
        if implements(type(servicer), method.name):
            handlers[method.name] = _handler(method, getattr(servicer, method.name))
    return handlers


def implements(servicer_type: type, name: str) -> bool:
    """Whether the servicer class has its own `name`, not the generated UNIMPLEMENTED stub."""
    own = getattr(servicer_type, name, None)
    return own is not None and own is not getattr(
        feedback_service_pb2_grpc.FeedbackServiceServicer, name, None
    )


def _handler(method: descriptor.MethodDescriptor, behavior: Any) -> Handler:
    request_type = method.input_type.full_name
    parse: Parse = message_factory.GetMessageClass(method.input_type).FromString
    serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
    if method.client_streaming:
        if method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _stream_stream(request_type, parse, behavior), response_serializer=serialize
            )
        return grpc.stream_unary_rpc_method_handler(
            _stream_unary(request_type, parse, behavior), response_serializer=serialize
        )
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _unary_stream(request_type, parse, behavior),
            response_serializer=_bytes_or(serialize),
        )
    return grpc.unary_unary_rpc_method_handler(
        _unary_unary(request_type, parse, behavior), response_serializer=serialize
    )


def _bytes_or(serialize: Callable[[Message], bytes]) -> Callable[[Message | bytes], bytes]:
    """A serializer that also takes responses already serialized (watches build theirs from
    records serialized once for all their watchers: server.mapping.WatchedRecords)."""

    def serialized(response: Message | bytes) -> bytes:
        return response if type(response) is bytes else serialize(response)  # type: ignore[arg-type]

    return serialized


def _unary_unary(request_type: str, parse: Parse, behavior: Any) -> Any:
    async def handle(data: bytes, context: Context) -> Any:
        try:
            request = parse(data)
        except DecodeError as error:
            await abort_with_status(context, malformed_request_status(request_type, _why(error)))
        return await behavior(request, context)

    return handle


def _unary_stream(request_type: str, parse: Parse, behavior: Any) -> Any:
    async def handle(data: bytes, context: Context) -> AsyncIterator[Any]:
        try:
            request = parse(data)
        except DecodeError as error:
            await abort_with_status(context, malformed_request_status(request_type, _why(error)))
        # Closed at once when the call ends, so a cancelled export stops reading right away.
        async with aclosing(behavior(request, context)) as responses:
            async for response in responses:
                yield response

    return handle


def _stream_unary(request_type: str, parse: Parse, behavior: Any) -> Any:
    async def handle(data: AsyncIterator[bytes], context: Context) -> Any:
        requests = _ParsedStream(data, parse)
        response = await behavior(requests, context)
        if requests.error is not None:
            await requests.abort(context, request_type, response)
        return response

    return handle


def _stream_stream(request_type: str, parse: Parse, behavior: Any) -> Any:
    async def handle(data: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
        requests = _ParsedStream(data, parse)
        async with aclosing(behavior(requests, context)) as responses:
            async for response in responses:
                yield response
        if requests.error is not None:
            await requests.abort(context, request_type, None)

    return handle


class _ParsedStream:
    """A client stream's messages, parsed; it ends early at the first one that does not decode.

    Ending the stream, rather than failing inside the handler, lets the handler finish what the
    earlier messages started (Ingest commits them and counts them), so the error can then say
    exactly what was stored before the bad message.
    """

    def __init__(self, data: AsyncIterator[bytes], parse: Parse) -> None:
        self._data = data
        self._parse = parse
        self.received = 0
        self.error: DecodeError | None = None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        async for data in self._data:
            try:
                request = self._parse(data)
            except DecodeError as error:
                self.error = error
                return
            self.received += 1
            yield request

    async def abort(self, context: Context, request_type: str, response: Message | None) -> None:
        """Fail the call for the bad message, with what the handler did with the ones before."""
        assert self.error is not None
        done = _counts(response)
        summary = ", ".join(f"{name} {value}" for name, value in done.items())
        reason = (
            f"{_why(self.error)} in message {self.received} of the stream (counting from 0); "
            f"the {self.received} messages before it were processed"
            + (f" ({summary})" if summary else "")
        )
        metadata = {"stream_index": str(self.received), **{k: str(v) for k, v in done.items()}}
        await abort_with_status(context, malformed_request_status(request_type, reason, metadata))


def _counts(response: Message | None) -> dict[str, int]:
    """The integer fields of a response (Ingest's totals), by name."""
    if response is None:
        return {}
    return {
        field.name: getattr(response, field.name)
        for field in response.DESCRIPTOR.fields
        if field.type in _INTEGER_TYPES and not field.is_repeated
    }


_INTEGER_TYPES = frozenset(
    {
        descriptor.FieldDescriptor.TYPE_INT32,
        descriptor.FieldDescriptor.TYPE_INT64,
        descriptor.FieldDescriptor.TYPE_UINT32,
        descriptor.FieldDescriptor.TYPE_UINT64,
    }
)


def _why(error: DecodeError) -> str:
    """What was wrong with the bytes, without protobuf's "Error parsing message" preamble."""
    text = str(error).rpartition("': ")[2] or "not a valid protobuf encoding"
    return _CLEARER_REASONS.get(text, text)
