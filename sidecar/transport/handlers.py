"""Registering our services with lenient request parsing.

The generated `add_*Servicer_to_server` parse requests with `FromString`; a malformed
message (corrupt wire format, a string field that is not UTF-8) then fails inside grpc,
which answers UNKNOWN "Unexpected <class 'DecodeError'>...". Here a request that does
not parse becomes a `Malformed` value, and the call is answered INVALID_ARGUMENT with
what was wrong, like any other bad request.

With `max_bytes`, every parsed message's strings are checked against their limits
(`sidecar.transport.fields`) right here, before any handler sees it: a message over a
limit becomes a `Malformed` value carrying the refusal (INVALID_ARGUMENT for a field
over its maximum, RESOURCE_EXHAUSTED for too much text in total).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf import message_factory

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.errors import GuardrailError, InvalidRequest
from sidecar.transport import fields
from sidecar.transport.status import code_for


class Malformed:
    """A request message that did not parse (`reason` is protobuf's, never the bytes),
    or one over a size limit (`error` says which field and which limit)."""

    def __init__(self, kind: str, reason: str, error: GuardrailError | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.error = error if error is not None else InvalidRequest(
            f"request: not a valid {kind} ({reason})")

    def __str__(self) -> str:
        return str(self.error)


def add_service(server: grpc.aio.Server, servicer: Any, service: str,
                max_bytes: int | None = None,
                refused: Callable[[str, grpc.StatusCode], None] | None = None) -> None:
    """Register every method of `service` (a name in guardrail.proto) on `server`;
    with `max_bytes`, requests over a size limit are refused before any handler runs,
    and `refused(method name, status)` hears of each (for the refusal metrics)."""
    descriptor = pb.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        parse = _lenient(message_factory.GetMessageClass(method.input_type), max_bytes)
        write = message_factory.GetMessageClass(method.output_type).SerializeToString
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            # A stream refuses a Malformed chunk itself, where it reads its chunks.
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=parse, response_serializer=write)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _unary_streaming(behaviour, method.name, refused), request_deserializer=parse,
                response_serializer=write)
        elif not method.client_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(behaviour, method.name, refused), request_deserializer=parse,
                response_serializer=write)
        else:  # pragma: no cover - the proto has no client-streaming-only method
            raise NotImplementedError(method.full_name)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        descriptor.full_name, handlers),))
    server.add_registered_method_handlers(  # type: ignore[attr-defined]  # not in grpc-stubs
        descriptor.full_name, handlers)


def _lenient(kind: Any, max_bytes: int | None) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            message = kind.FromString(data)
        except protobuf_message.DecodeError as err:
            reason = str(err).rpartition(": ")[2] or "it does not parse"
            return Malformed(kind.DESCRIPTOR.full_name, reason)
        if max_bytes is not None:
            try:
                fields.check(message, max_bytes)
            except GuardrailError as err:
                return Malformed(kind.DESCRIPTOR.full_name, "over a size limit", err)
        return message
    return parse


Refused = Callable[[str, grpc.StatusCode], None] | None


async def _abort(request: Malformed, name: str, refused: Refused,
                 context: grpc.aio.ServicerContext[Any, Any]) -> None:
    code = code_for(request.error)
    if refused is not None:
        refused(name, code)
    await context.abort(code, str(request))


def _unary(behaviour: Callable[..., Any], name: str, refused: Refused) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Malformed):
            await _abort(request, name, refused, context)
        return await behaviour(request, context)
    return handle


def _unary_streaming(behaviour: Callable[..., Any], name: str,
                     refused: Refused) -> Callable[..., Any]:
    async def handle(request: Any,
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await _abort(request, name, refused, context)
        async for reply in behaviour(request, context):
            yield reply
    return handle

