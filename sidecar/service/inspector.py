"""One inspection, whatever door it came through: pipeline → pseudonyms → audit → metrics.

The gRPC servicer, the OpenAI-compatible gateway and LiteLLM's guardrail API all call
this object, so no door can skip a step and a fix lands once. It knows nothing of
gRPC or HTTP: it takes domain `Inspection`s, returns domain `Verdict`s and raises the
sidecar's own errors (`sidecar.errors`); each door turns those into its own statuses.

Besides single inspections it keeps what every door shares: readiness and draining,
the calls in flight (so shutdown can wait for them), streamed completions as
`LiveStream`s (the hold-back window of `sidecar.streaming`, audited once per stream),
and the refusal counts, labelled with the same status names whichever door refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from sidecar import errors
from sidecar.auditing import AuditWriter
from sidecar.errors import GuardrailError, NotReady
from sidecar.logs import error_frames
from sidecar.metrics import Metrics
from sidecar.policy.model import Policy
from sidecar.pseudonyms import Pseudonymizer, finish_locally
from sidecar.runner import Runner
from sidecar.stages.content import longest_match
from sidecar.streaming import CompletionStream, Release, StreamLimits
from sidecar.types import Direction, Inspection, Verdict

log = logging.getLogger(__name__)

# Error kinds as status names: the refusal metric's label, the same for every door
# (they are gRPC's names because gRPC was the first door; sidecar.transport.status
# maps the same tree onto grpc.StatusCode).
_STATUS_NAMES: tuple[tuple[type[GuardrailError], str], ...] = (
    (errors.RequestTooLarge, "RESOURCE_EXHAUSTED"),
    (errors.Overloaded, "RESOURCE_EXHAUSTED"),
    (errors.DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (errors.InvalidRequest, "INVALID_ARGUMENT"),
    (errors.PolicyError, "FAILED_PRECONDITION"),
    (errors.ConfigError, "FAILED_PRECONDITION"),
    (errors.NotReady, "UNAVAILABLE"),
    (errors.AuditUnavailable, "UNAVAILABLE"),
)


def status_name(error: BaseException) -> str:
    """The status an error stands for (INTERNAL for anything unexpected)."""
    for kind, name in _STATUS_NAMES:
        if isinstance(error, kind):
            return name
    return "INTERNAL"


@dataclasses.dataclass
class Call:
    """One call through a door, as the inspector accounts for it."""

    direction: Direction
    request_id: str
    started: float = dataclasses.field(default_factory=time.perf_counter)


class Inspector:
    """The transport-free use case (see the module docstring)."""

    def __init__(self, runner: Runner, audit: AuditWriter | None = None,
                 pseudonyms: Pseudonymizer | None = None,
                 metrics: Metrics | None = None, *,
                 stream_limits: StreamLimits | None = None) -> None:
        self.runner = runner
        self.audit = audit
        self.pseudonyms = pseudonyms
        self.metrics = metrics
        self.stream_limits = stream_limits or StreamLimits()
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._longest: dict[tuple[str, str], int] = {}
        # Audit writes of interrupted streams, which outlive the call that started them.
        self._background: set[asyncio.Task[Any]] = set()

    # -- admission and accounting ----------------------------------------------------------

    def admit(self) -> None:
        """Raise NotReady while models load or the sidecar drains."""
        if self.draining:
            raise NotReady("the sidecar is shutting down; retry")
        if not self.ready:
            raise NotReady("the sidecar is still loading its models; retry shortly")

    @contextlib.contextmanager
    def flight(self) -> Any:
        """Count a call in flight for its whole life (drain waits for it)."""
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def call(self, direction: Direction, request_id: str) -> AsyncIterator[Call]:
        """One unary call: admitted, counted in flight; a refusal or failure inside is
        logged and counted (without its message when unexpected: it may quote the
        text) and re-raised for the door to turn into its own status."""
        call = Call(direction, request_id)
        with self.flight():
            try:
                self.admit()
                yield call
            except GuardrailError as err:
                name = status_name(err)
                log.info("inspection refused", extra={"request_id": call.request_id,
                                                      "status": name})
                self.refused(direction, name)
                raise
            except Exception as err:
                log.error("inspection failed", extra={"request_id": call.request_id,
                                                      "error_type": type(err).__name__,
                                                      "error_frames": error_frames(err)})
                self.refused(direction, "INTERNAL")
                raise

    def refused(self, direction: Direction, status: str) -> None:
        if self.metrics is not None:
            self.metrics.refused(direction.value, status)

    async def drain(self, grace: float) -> None:
        """Refuse new calls (NotReady); wait up to `grace` s for in-flight ones."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except TimeoutError:
            log.warning("grace period over with calls in flight",
                        extra={"in_flight": self.in_flight})

    # -- inspections -----------------------------------------------------------------------

    async def inspect(self, inspection: Inspection, deadline: float | None = None,
                      call: Call | None = None, tags: dict[str, str] | None = None) -> Verdict:
        """The whole use case for one request; the audit record is committed before this
        returns (the verdict carries its id). `deadline`: a time.monotonic() instant;
        `tags`: added to the audit record (the gateway's `choice` of an answer)."""
        started = call.started if call is not None else time.perf_counter()
        verdict = await self.inspect_window(inspection, deadline)
        verdict = await self.record(inspection, verdict, tags)
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.inspected(inspection.direction.value, verdict, elapsed,
                                   inspection.chars)
        log.info("inspected", extra={
            "request_id": verdict.request_id or inspection.request_id,
            "direction": inspection.direction.value,
            "policy": verdict.policy, "revision": verdict.policy_revision[:12],
            "decision": verdict.decision.name, "findings": len(verdict.findings),
            "stage_ms": {stage: round(seconds * 1000, 2)
                         for stage, seconds in verdict.stage_seconds.items()},
            "elapsed_ms": round(elapsed * 1000, 2)})
        return verdict

    async def inspect_window(self, inspection: Inspection, deadline: float | None) -> Verdict:
        """The pipeline and the pseudonym vault, without the audit (a stream's window)."""
        verdict = await self.runner.run(inspection, deadline)
        if self.metrics is not None:
            self.metrics.staged(verdict)
        if self.pseudonyms is None:
            return finish_locally(inspection, verdict)
        return await self.pseudonyms.finish(inspection, verdict)

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

    # -- streams ---------------------------------------------------------------------------

    def policy_of(self, name: str) -> Policy | None:
        """The policy a verdict names, as served now (None when a reload removed it)."""
        if self.pseudonyms is not None:
            return self.pseudonyms.policy_of(name)
        pipeline = getattr(self.runner, "pipeline", None)  # both runners keep theirs
        compiled = pipeline.policies.by_name.get(name) if pipeline is not None else None
        return compiled.policy if compiled is not None else None

    def rule_rank(self, policy: str, rule_id: str) -> int:
        """Position of a residency rule in its policy (first match wins)."""
        found = self.pseudonyms.policy_of(policy) if self.pseudonyms is not None else None
        ids = [rule.id for rule in found.residency.rules] if found is not None else []
        return ids.index(rule_id) if rule_id in ids else len(ids)

    def longest_match(self, policy: str, revision: str) -> int:
        """The longest match a policy's content rules can make, for a stream's hold-back
        (computed once per policy revision)."""
        key = (policy, revision)
        if key not in self._longest:
            found = self.pseudonyms.policy_of(policy) if self.pseudonyms is not None else None
            if len(self._longest) > 64:  # revisions come and go with reloads
                self._longest.clear()
            self._longest[key] = longest_match(found.content) if found is not None else 0
        return self._longest[key]

    def open_stream(self, template: Inspection, deadline: float | None = None,
                    tags: dict[str, str] | None = None) -> LiveStream:
        """A streamed completion with `template`'s request fields (its text comes later);
        `tags` go into its audit record (which choice and part of an answer it is)."""
        return LiveStream(self, template, deadline, tags)

    def audit_later(self, inspection: Inspection, verdict: Verdict,
                    tags: dict[str, str]) -> None:
        """Audit an interrupted stream in the background (its caller is gone)."""
        task = asyncio.ensure_future(self.record(inspection, verdict, tags))
        self._background.add(task)
        task.add_done_callback(self._audited)

    def _audited(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("audit of an interrupted stream failed",
                      extra={"error_type": type(task.exception()).__name__})


class LiveStream:
    """A streamed completion through the hold-back window, for doors that drive a stream
    from a model's output themselves (the HTTP gateway); gRPC's InspectCompletionStream
    drives `CompletionStream` through `sidecar.transport.streams` with its own budgets.

    `add` text as it comes, `advance()` for what is safe to show, `finish()` at the end
    (the last release and the stream's one audit record), or `abandon()` when the
    caller gave up (what was already shown is still audited)."""

    def __init__(self, inspector: Inspector, template: Inspection,
                 deadline: float | None, tags: dict[str, str] | None = None) -> None:
        self.inspector = inspector
        self.tags = dict(tags or {})
        self.started = time.perf_counter()

        async def analyze(window: Inspection) -> Verdict:
            return await inspector.inspect_window(window, deadline)

        self.stream = CompletionStream(template, analyze, inspector.stream_limits,
                                       inspector.rule_rank, inspector.longest_match)
        self.verdict: Verdict | None = None  # the audited summary, once finished
        self._closed = False

    def add(self, text: str) -> None:
        self.stream.add(text)

    async def advance(self) -> list[Release]:
        """What the text so far lets through; a blocked release ends the stream (audited)."""
        releases = await self.stream.advance(final=False)
        if releases and releases[-1].blocked:
            await self._close("blocked")
        return releases

    async def finish(self) -> list[Release]:
        """The rest of the text, inspected and released, and the stream's audit record."""
        releases = await self.stream.advance(final=True)
        await self._close("blocked" if releases and releases[-1].blocked else "complete")
        return releases

    def abandon(self) -> None:
        """The caller went away or the stream failed: audit what was shown, later."""
        if self._closed:
            return
        self._closed = True
        if self.stream.windows:
            inspection, verdict = self.stream.summary()
            self.inspector.audit_later(inspection, verdict,
                                       {**self.tags, "stream": "abandoned"})
        if self.inspector.metrics is not None:
            self.inspector.metrics.streams.labels("abandoned").inc()

    async def _close(self, outcome: str) -> None:
        if self._closed:
            return
        self._closed = True
        inspection, verdict = self.stream.summary()
        self.verdict = await self.inspector.record(inspection, verdict,
                                                   {**self.tags, "stream": outcome})
        metrics = self.inspector.metrics
        if metrics is not None:
            metrics.inspected(Direction.COMPLETION.value, self.verdict,
                              time.perf_counter() - self.started, self.stream.received)
            metrics.streams.labels(outcome).inc()
        log.info("stream inspected", extra={
            "request_id": inspection.request_id, "outcome": outcome,
            "policy": verdict.policy, "windows": self.stream.windows,
            "received": self.stream.received, "analysed": self.stream.analysed_chars})
