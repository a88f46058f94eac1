"""The Guardrail gRPC service: convert, delegate to the pipeline off the event loop, convert."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import AuditWriter
from sidecar.errors import GuardrailError, NotReady
from sidecar.logs import error_frames
from sidecar.metrics import Metrics
from sidecar.pipeline import MAX_ID_CHARS
from sidecar.policy.reload import PolicyManager
from sidecar.pseudonyms import Pseudonymizer, finish_locally
from sidecar.runner import Runner
from sidecar.stages.content import longest_match
from sidecar.streaming import StreamLimits
from sidecar.transport import convert
from sidecar.transport.status import code_for
from sidecar.transport.streams import StreamService
from sidecar.types import Direction, Inspection, Verdict

log = logging.getLogger(__name__)


class GuardrailServicer(pb_grpc.GuardrailServicer):
    def __init__(self, runner: Runner, policies: PolicyManager | None = None,
                 audit: AuditWriter | None = None,
                 pseudonyms: Pseudonymizer | None = None, *,
                 stream_limits: StreamLimits | None = None,
                 stream_idle_timeout: float = 60.0,
                 metrics: Metrics | None = None) -> None:
        self.runner = runner
        self.policies = policies
        self.audit = audit
        self.pseudonyms = pseudonyms
        self.metrics = metrics
        self.streams = StreamService(self.inspect_window, self.record, stream_limits or
                                     StreamLimits(), stream_idle_timeout,
                                     rule_rank=self._rule_rank, metrics=metrics,
                                     longest_match=self._longest_match)
        self._longest: dict[tuple[str, str], int] = {}
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, grace: float) -> None:
        """Refuse new calls with UNAVAILABLE; wait up to `grace` s for in-flight ones."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except TimeoutError:
            log.warning("grace period over with calls in flight",
                        extra={"in_flight": self.in_flight})

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
        self.in_flight += 1
        self._idle.clear()
        try:
            if self.draining or not self.ready:
                await context.abort(grpc.StatusCode.UNAVAILABLE, (
                    "the sidecar is shutting down; retry" if self.draining else
                    "the sidecar is still loading its models; retry shortly"))
            async for verdict in self.streams.serve(request_iterator, context):
                yield verdict
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def inspect_window(self, inspection: Inspection, deadline: float | None) -> Verdict:
        """One inspection as the unary calls run it, minus the audit (streams: a window)."""
        verdict = await self.runner.run(inspection, deadline)
        if self.metrics is not None:
            self.metrics.staged(verdict)
        return await self._finish_pseudonyms(inspection, verdict)

    async def record(self, inspection: Inspection, verdict: Verdict,
                     extra_tags: dict[str, str] | None = None) -> Verdict:
        """The verdict with the id of its committed audit record (unchanged if audit is off)."""
        if self.audit is None:
            return verdict
        started = time.perf_counter()
        audit_id = await self.audit.record(inspection, verdict, extra_tags)
        if self.metrics is not None:
            self.metrics.audit_write.observe(time.perf_counter() - started)
        return dataclasses.replace(verdict, audit_id=audit_id)

    def _rule_rank(self, policy: str, rule_id: str) -> int:
        """Position of a residency rule in its policy (first match wins)."""
        found = self.pseudonyms.policy_of(policy) if self.pseudonyms is not None else None
        ids = [rule.id for rule in found.residency.rules] if found is not None else []
        return ids.index(rule_id) if rule_id in ids else len(ids)

    def refused_unread(self, method: str, code: grpc.StatusCode) -> None:
        """Count a request refused before it reached a handler (over a size limit)."""
        direction = {"InspectPrompt": Direction.PROMPT,
                     "InspectCompletion": Direction.COMPLETION}.get(method)
        if self.metrics is not None and direction is not None:
            self.metrics.refused(direction.value, code.name)

    def _longest_match(self, policy: str, revision: str) -> int:
        """The longest match a policy's content rules can make, for a stream's hold-back
        (computed once per policy revision)."""
        key = (policy, revision)
        if key not in self._longest:
            found = self.pseudonyms.policy_of(policy) if self.pseudonyms is not None else None
            if len(self._longest) > 64:  # revisions come and go with reloads
                self._longest.clear()
            self._longest[key] = longest_match(found.content) if found is not None else 0
        return self._longest[key]

    async def _finish_pseudonyms(self, inspection: Inspection, verdict: Verdict) -> Verdict:
        if self.pseudonyms is None:
            return finish_locally(inspection, verdict)
        return await self.pseudonyms.finish(inspection, verdict)

    async def _inspect(self, request: pb.InspectRequest,
                       context: grpc.aio.ServicerContext[Any, Any],
                       direction: Direction) -> pb.InspectResponse:
        started = time.perf_counter()
        request_id = request.request_id[:MAX_ID_CHARS]  # an over-long one is refused below
        self.in_flight += 1
        self._idle.clear()
        try:
            if self.draining:
                raise NotReady("the sidecar is shutting down; retry")
            if not self.ready:
                raise NotReady("the sidecar is still loading its models; retry shortly")
            inspection = convert.to_inspection(request, direction)
            request_id = inspection.request_id  # made here when the app sent none
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            verdict = await self.inspect_window(inspection, deadline)
            verdict = await self.record(inspection, verdict)  # committed before answering
            response = convert.to_response(verdict)
        except GuardrailError as err:
            code = code_for(err)
            log.info("inspection refused", extra={"request_id": request_id,
                                                  "status": code.name})
            if self.metrics is not None:
                self.metrics.refused(direction.value, code.name)
            await context.abort(code, str(err))
        except Exception as err:
            # Never echo the exception: its message may quote the inspected text.
            log.error("inspection failed", extra={"request_id": request_id,
                                                  "error_type": type(err).__name__,
                                                  "error_frames": error_frames(err)})
            if self.metrics is not None:
                self.metrics.refused(direction.value, grpc.StatusCode.INTERNAL.name)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error (request_id={request_id!r})")
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.inspected(direction.value, verdict, elapsed, inspection.chars)
        log.info("inspected", extra={
            "request_id": request_id, "direction": direction.value,
            "policy": response.policy, "revision": response.policy_revision[:12],
            "decision": pb.Decision.Name(response.decision),
            "findings": len(response.findings),
            "stage_ms": {stage: round(seconds * 1000, 2)
                         for stage, seconds in verdict.stage_seconds.items()},
            "elapsed_ms": round(elapsed * 1000, 2)})
        return response
