"""Registering our services with lenient request parsing.

The generated `add_*Servicer_to_server` parse requests with `FromString`; a malformed
message (corrupt wire format, a string field that is not UTF-8) then fails inside grpc,
which answers UNKNOWN "Unexpected <class 'DecodeError'>...". Here a request that does
not parse becomes a `Malformed` value, and the call is answered INVALID_ARGUMENT with
what was wrong, like any other bad request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf import message_factory

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb


class Malformed:
    """A request message that did not parse; `reason` is protobuf's, never the bytes."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason

    def __str__(self) -> str:
        return f"request: not a valid {self.kind} ({self.reason})"


def add_service(server: grpc.aio.Server, servicer: Any, service: str) -> None:
    """Register every method of `service` (a name in guardrail.proto) on `server`."""
    descriptor = pb.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        parse = _lenient(message_factory.GetMessageClass(method.input_type))
        write = message_factory.GetMessageClass(method.output_type).SerializeToString
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            # A stream refuses a Malformed chunk itself, where it reads its chunks.
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=parse, response_serializer=write)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _unary_streaming(behaviour), request_deserializer=parse,
                response_serializer=write)
        elif not method.client_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(behaviour), request_deserializer=parse, response_serializer=write)
        else:  # pragma: no cover - the proto has no client-streaming-only method
            raise NotImplementedError(method.full_name)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        descriptor.full_name, handlers),))
    server.add_registered_method_handlers(  # type: ignore[attr-defined]  # not in grpc-stubs
        descriptor.full_name, handlers)


def _lenient(kind: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return kind.FromString(data)
        except protobuf_message.DecodeError as err:
            reason = str(err).rpartition(": ")[2] or "it does not parse"
            return Malformed(kind.DESCRIPTOR.full_name, reason)
    return parse


def _unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        return await behaviour(request, context)
    return handle


def _unary_streaming(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(request: Any,
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        async for reply in behaviour(request, context):
            yield reply
    return handle

