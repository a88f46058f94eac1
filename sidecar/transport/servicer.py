"""The Guardrail gRPC service: convert, delegate to the inspector, convert.

Everything an inspection does (pipeline off the event loop, pseudonyms, audit, metrics,
readiness and draining) lives in `sidecar.service.inspector.Inspector`, which the HTTP
doors call too; this class only turns protobuf into domain types and errors into
gRPC statuses.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import AuditWriter
from sidecar.errors import GuardrailError
from sidecar.metrics import Metrics
from sidecar.pipeline import MAX_ID_CHARS
from sidecar.policy.reload import PolicyManager
from sidecar.pseudonyms import Pseudonymizer
from sidecar.runner import Runner
from sidecar.service.inspector import Inspector
from sidecar.streaming import StreamLimits
from sidecar.transport import convert
from sidecar.transport.status import code_for, trailers_for
from sidecar.transport.streams import StreamService
from sidecar.types import Direction


class GuardrailServicer(pb_grpc.GuardrailServicer):
    def __init__(self, runner: Runner, policies: PolicyManager | None = None,
                 audit: AuditWriter | None = None,
                 pseudonyms: Pseudonymizer | None = None, *,
                 stream_limits: StreamLimits | None = None,
                 stream_idle_timeout: float = 60.0,
                 metrics: Metrics | None = None,
                 inspector: Inspector | None = None) -> None:
        self.inspector = inspector or Inspector(runner, audit, pseudonyms, metrics,
                                                stream_limits=stream_limits)
        self.policies = policies
        self.metrics = metrics
        self.streams = StreamService(self.inspector.inspect_window, self.inspector.record,
                                     stream_limits or StreamLimits(), stream_idle_timeout,
                                     rule_rank=self.inspector.rule_rank, metrics=metrics,
                                     longest_match=self.inspector.longest_match)

    # Readiness and load belong to the inspector (every door shares them).
    @property
    def ready(self) -> bool:
        return self.inspector.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.inspector.ready = value

    @property
    def draining(self) -> bool:
        return self.inspector.draining

    @property
    def in_flight(self) -> int:
        return self.inspector.in_flight

    async def drain(self, grace: float) -> None:
        """Refuse new calls with UNAVAILABLE; wait up to `grace` s for in-flight ones."""
        await self.inspector.drain(grace)

    async def InspectPrompt(self, request: pb.InspectRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> pb.InspectResponse:
        return await self._inspect(request, context, Direction.PROMPT)

    async def InspectCompletion(self, request: pb.InspectRequest,
                                context: grpc.aio.ServicerContext[Any, Any]) -> pb.InspectResponse:
        return await self._inspect(request, context, Direction.COMPLETION)

    async def PolicyStatus(self, request: pb.PolicyStatusRequest,
                           context: grpc.aio.ServicerContext[Any, Any]
                           ) -> pb.PolicyStatusResponse:
        if self.policies is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "this server was started without policy management")
            raise AssertionError  # abort raises
        return convert.to_status(self.policies.status())

    async def InspectCompletionStream(
            self, request_iterator: AsyncIterator[pb.CompletionChunk],
            context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.StreamVerdict]:
        with self.inspector.flight():
            try:
                self.inspector.admit()
            except GuardrailError as err:
                await context.abort(code_for(err), str(err))
            async for verdict in self.streams.serve(request_iterator, context):
                yield verdict

    def refused_unread(self, method: str, code: grpc.StatusCode) -> None:
        """Count a request refused before it reached a handler (over a size limit)."""
        direction = {"InspectPrompt": Direction.PROMPT,
                     "InspectCompletion": Direction.COMPLETION}.get(method)
        if direction is not None:
            self.inspector.refused(direction, code.name)

    async def _inspect(self, request: pb.InspectRequest,
                       context: grpc.aio.ServicerContext[Any, Any],
                       direction: Direction) -> pb.InspectResponse:
        # An over-long request id is refused by the conversion; the logs keep a prefix.
        call = None
        try:
            async with self.inspector.call(direction,
                                           request.request_id[:MAX_ID_CHARS]) as call:
                inspection = convert.to_inspection(request, direction)
                call.request_id = inspection.request_id  # made there when the app sent none
                remaining = context.time_remaining()
                deadline = None if remaining is None else time.monotonic() + remaining
                verdict = await self.inspector.inspect(inspection, deadline, call)
        except GuardrailError as err:
            await context.abort(code_for(err), str(err), trailing_metadata=trailers_for(err))
            raise AssertionError from err  # abort raises
        except Exception:
            # Never echo the exception: its message may quote the inspected text.
            request_id = call.request_id if call is not None else ""
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error (request_id={request_id!r})")
            raise AssertionError from None
        return convert.to_response(verdict)
