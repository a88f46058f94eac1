"""InspectCompletionStream: chunks in, safe text out (see sidecar.streaming for the how).

A reader task moves the client's chunks into a queue, so chunks that arrive while a
window is being inspected are taken together in the next step (a fast model costs
fewer, larger steps). Every batch of chunks gets one StreamVerdict: the text released
by it (possibly none) and how much was received and released. The last verdict is
final and carries the decision and the stream's one audit record.

Bad streams get a status and nothing more: no request on the first chunk, a request on
a later one or a chunk after `end` (INVALID_ARGUMENT), too much text
(RESOURCE_EXHAUSTED), no chunk within the idle timeout (DEADLINE_EXCEEDED). A client
that goes away cancels the handler: the reader stops, nothing more is inspected, and
what was already shown is still audited (tagged stream=abandoned).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.errors import DeadlineExceeded, GuardrailError, InvalidRequest
from sidecar.logs import error_frames
from sidecar.metrics import Metrics
from sidecar.streaming import CompletionStream, StreamLimits
from sidecar.transport import convert
from sidecar.transport.handlers import Malformed
from sidecar.transport.status import code_for
from sidecar.types import Direction, Inspection, Verdict

log = logging.getLogger(__name__)
# None: the client closed its sending side; Malformed: a chunk that did not parse.
Chunk = pb.CompletionChunk | Malformed | None
Context = grpc.aio.ServicerContext[Any, Any]
CLOSE_GRACE = 5.0  # seconds to wait for the client's half-close after end=true


class StreamService:
    def __init__(self, inspect: Callable[[Inspection, float | None], Awaitable[Verdict]],
                 record: Callable[[Inspection, Verdict, dict[str, str]], Awaitable[Verdict]],
                 limits: StreamLimits, idle_timeout: float, *,
                 rule_rank: Callable[[str, str], int], metrics: Metrics | None = None) -> None:
        self.inspect = inspect
        self.record = record
        self.metrics = metrics
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.rule_rank = rule_rank
        self.open_streams = 0
        # Audit writes of interrupted streams, which outlive their cancelled handler.
        self._background: set[asyncio.Task[Any]] = set()

    async def serve(self, request_iterator: AsyncIterator[pb.CompletionChunk],
                    context: Context) -> AsyncIterator[pb.StreamVerdict]:
        started = time.perf_counter()
        self.open_streams += 1
        chunks: asyncio.Queue[Chunk] = asyncio.Queue()
        reader = asyncio.ensure_future(_read_into(request_iterator, chunks))
        stream: CompletionStream | None = None
        outcome = "failed"
        try:
            batch = await self._next_chunks(chunks)
            stream = self._open(batch[0], context)
            async for verdict in self._run(stream, batch, chunks, started):
                if verdict.final:
                    outcome = "blocked" if verdict.decision == pb.BLOCK else "complete"
                yield verdict
        except GuardrailError as err:
            code = code_for(err)
            log.info("stream refused", extra={"status": code.name})
            if self.metrics is not None:
                self.metrics.refused(Direction.COMPLETION.value, code.name)
            await context.abort(code, str(err))
        except (asyncio.CancelledError, GeneratorExit):  # the client went away
            outcome = "abandoned"
            raise
        except Exception as err:
            log.error("stream failed", extra={"error_type": type(err).__name__,
                                              "error_frames": error_frames(err)})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the stream")
        finally:
            reader.cancel()
            self.open_streams -= 1
            if stream is not None:
                self._close(stream, outcome, started)

    def _open(self, first: Chunk, context: Context) -> CompletionStream:
        if first is None:
            raise InvalidRequest("the stream ended before its first CompletionChunk")
        if isinstance(first, Malformed):
            raise InvalidRequest(str(first))
        if not first.HasField("request"):
            raise InvalidRequest("request: the first CompletionChunk must carry the request's "
                                 "fields (tenant, app, conversation_id, ...)")

        async def analyze(window: Inspection) -> Verdict:
            remaining = context.time_remaining()
            return await self.inspect(
                window, None if remaining is None else time.monotonic() + remaining)

        return CompletionStream(convert.to_stream_template(first.request), analyze,
                                self.limits, self.rule_rank)

    async def _run(self, stream: CompletionStream, batch: list[Chunk],
                   chunks: asyncio.Queue[Chunk],
                   started: float) -> AsyncIterator[pb.StreamVerdict]:
        first = batch[0]
        ended = False
        while True:
            for chunk in batch:
                if chunk is None:  # the client closed its side: that is the end too
                    ended = True
                    continue
                if isinstance(chunk, Malformed):
                    raise InvalidRequest(str(chunk))
                if ended:
                    raise InvalidRequest("a CompletionChunk arrived after the last one "
                                         "(end=true)")
                if chunk is not first and chunk.HasField("request"):
                    raise InvalidRequest("request: only the first CompletionChunk may carry it")
                stream.add(chunk.text)
                ended = chunk.end
            releases = await stream.advance(final=ended)
            for release in releases:
                if release.blocked or (ended and release is releases[-1]):
                    inspection, verdict = stream.summary()
                    outcome = "blocked" if release.blocked else "complete"
                    verdict = await self._audit(inspection, verdict, outcome)
                    if self.metrics is not None:
                        self.metrics.inspected(Direction.COMPLETION.value, verdict,
                                               time.perf_counter() - started, stream.received)
                    yield convert.to_final_stream_verdict(release, verdict)
                    if not release.blocked and batch[-1] is not None:
                        await self._expect_close(chunks)
                    return
                yield convert.to_stream_verdict(release)
            if not releases:  # an acknowledgement: received, nothing more released yet
                yield pb.StreamVerdict(received_chars=stream.received,
                                       released_chars=stream.released)
            batch = await self._next_chunks(chunks)

    async def _expect_close(self, chunks: asyncio.Queue[Chunk]) -> None:
        """After end=true only the client's half-close may come; a chunk is an error
        (the final verdict has gone out: the status tells the client it sent too much)."""
        try:
            rest = await asyncio.wait_for(chunks.get(), min(self.idle_timeout, CLOSE_GRACE))
        except TimeoutError:
            return  # a client that never closes its side: the call is complete anyway
        if rest is not None:
            raise InvalidRequest("a CompletionChunk arrived after the last one (end=true)")

    async def _next_chunks(self, chunks: asyncio.Queue[Chunk]) -> list[Chunk]:
        """The next chunk (waiting at most the idle timeout) and all queued behind it."""
        try:
            batch = [await asyncio.wait_for(chunks.get(), self.idle_timeout)]
        except TimeoutError:
            raise DeadlineExceeded(f"no CompletionChunk for {self.idle_timeout:g} s; send "
                                   "end=true or close the stream when done") from None
        while not chunks.empty() and batch[-1] is not None:
            batch.append(chunks.get_nowait())
        return batch

    async def _audit(self, inspection: Inspection, verdict: Verdict, outcome: str) -> Verdict:
        return await self.record(inspection, verdict, {"stream": outcome})

    def _close(self, stream: CompletionStream, outcome: str, started: float) -> None:
        if outcome not in ("complete", "blocked") and stream.windows:
            # Some text may have been shown: the stream still gets its audit record.
            inspection, verdict = stream.summary()
            task = asyncio.ensure_future(self._audit(inspection, verdict, outcome))
            self._background.add(task)
            task.add_done_callback(self._audited)
        if self.metrics is not None:
            self.metrics.streams.labels(outcome).inc()
        log.info("stream inspected", extra={
            "request_id": stream.template.request_id, "outcome": outcome,
            "policy": stream.totals.policy, "windows": stream.windows,
            "received": stream.received, "analysed": stream.analysed_chars,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)})

    def _audited(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("audit record of an interrupted stream not written",
                      extra={"error_type": type(task.exception()).__name__})


async def _read_into(iterator: AsyncIterator[pb.CompletionChunk],
                     chunks: asyncio.Queue[Chunk]) -> None:
    """Move a stream's chunks into a queue; None marks the client's half-close."""
    async for chunk in iterator:
        chunks.put_nowait(chunk)
    chunks.put_nowait(None)
