"""InspectCompletionStream: chunks in, safe text out (see sidecar.streaming for the how).

A reader task moves the client's chunks into a queue, so chunks that arrive while a
window is being inspected are taken together in the next step (a fast model costs
fewer, larger steps). Every batch of chunks gets one StreamVerdict: the text released
by it (possibly none) and how much was received and released. The last verdict is
final and carries the decision and the stream's one audit record.

Memory is bounded by the request limit, whatever the client sends: the reader counts
the bytes of text as it reads them and refuses the stream as soon as they pass
`max_bytes` (dropping what it had queued), and its queue holds at most QUEUE_CHUNKS
chunks, so a sender faster than the inspection waits in gRPC's flow control instead of
in our memory. Open streams are capped in number (`max_streams`) and in the text they
hold together (`max_held_bytes`). Before this, two streams of 200 x 3 MiB chunks sent
while their windows waited for a worker took the front process from 142 to 1,416 MiB.

Bad streams get a status and nothing more: no request on the first chunk, a request on
a later one or a chunk after `end` (INVALID_ARGUMENT), too much text, or too many
streams (RESOURCE_EXHAUSTED), no progress within the idle timeout or a stream open
longer than `max_seconds` (DEADLINE_EXCEEDED). Progress is text or the end: empty
chunks do not keep a stream alive. A client that goes away cancels the handler: the
reader stops, nothing more is inspected, and what was already shown is still audited
(tagged stream=abandoned). gRPC ends the request stream of a cancelled call exactly as
it ends one the client closed, and says nothing of the cancel until the server writes:
so a stream that ends by closing (not end=true) is acknowledged first, and only when
that write goes through is the rest released and the stream `complete` (outside trial
16: every such cancel was recorded `complete`, with a tail the client never got).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.errors import DeadlineExceeded, GuardrailError, InvalidRequest, RequestTooLarge
from sidecar.logs import error_frames
from sidecar.metrics import Metrics
from sidecar.streaming import CompletionStream, Release, StreamLimits
from sidecar.transport import convert
from sidecar.transport.handlers import Malformed
from sidecar.transport.status import code_for
from sidecar.types import Direction, Inspection, Verdict

log = logging.getLogger(__name__)
# None: the client closed its sending side; Malformed: a chunk that did not parse;
# GuardrailError: the reader refused the stream (over a limit, or a Malformed chunk).
Chunk = pb.CompletionChunk | Malformed | GuardrailError | None
Context = grpc.aio.ServicerContext[Any, Any]
CLOSE_GRACE = 5.0  # seconds to wait for the client's half-close after end=true
# Chunks read ahead of the inspection. Their text is bounded by max_bytes anyway; this
# bounds their number (empty chunks have no bytes) and makes a fast sender wait.
QUEUE_CHUNKS = 64


class _Budget:
    """One stream's clock and bytes: when it last made progress, what it holds."""

    def __init__(self, service: StreamService) -> None:
        self.service = service
        self.opened = self.progress = time.monotonic()
        self.moved = False  # whether the last batch made progress
        self.bytes = 0
        # Set by the reader when it refuses the stream: a step waiting for a worker is
        # abandoned at once rather than finished.
        self.refused = asyncio.Event()
        self.refusal: GuardrailError | None = None

    def take(self, chunk: pb.CompletionChunk) -> RequestTooLarge | None:
        """Count `chunk`'s text; the refusal when the stream or all streams hold too much."""
        size = len(chunk.text.encode("utf-8"))  # parsed protobuf strings are valid UTF-8
        if not size:
            return None
        service = self.service
        self.bytes += size
        service.held_bytes += size
        if self.bytes > service.limits.max_bytes:
            return RequestTooLarge(f"text: the streamed completion exceeds the limit of "
                                   f"{service.limits.max_bytes} bytes")
        if service.held_bytes > service.max_held_bytes:
            return RequestTooLarge(f"streams in progress hold more than "
                                   f"{service.max_held_bytes} bytes of text together "
                                   "(GUARDRAIL_STREAMS_MAX_BYTES); retry with backoff")
        return None

    def release(self) -> None:
        self.service.held_bytes -= self.bytes
        self.bytes = 0

    def wait(self) -> float:
        """Seconds the next chunk may take: the idle timeout since the last progress,
        within the stream's total time (raises DeadlineExceeded when either is spent).
        After a batch that made progress the idle clock starts when we are ready for
        more: time spent inspecting is ours, not the client's."""
        service, now = self.service, time.monotonic()
        if self.moved:
            self.progress, self.moved = now, False
        idle = self.progress + service.idle_timeout - now
        total = self.opened + service.max_seconds - now
        if total <= 0:
            raise DeadlineExceeded(f"the stream has been open for {service.max_seconds:g} s, "
                                   "the most a stream may take (GUARDRAIL_STREAM_MAX_SECONDS)")
        if idle <= 0:
            raise DeadlineExceeded(_idle_message(service.idle_timeout))
        return min(idle, total)

    def saw(self, batch: list[Chunk]) -> None:
        """Text, the end or the client's half-close is progress; empty chunks are not."""
        self.moved = any(chunk is None or isinstance(chunk, GuardrailError | Malformed)
                         or chunk.text or chunk.end or chunk.HasField("request")
                         for chunk in batch)


def _idle_message(seconds: float) -> str:
    return (f"no CompletionChunk for {seconds:g} s (empty ones do not count; "
            "GUARDRAIL_STREAM_IDLE_TIMEOUT); send end=true or close the stream when done")


class StreamService:
    def __init__(self, inspect: Callable[[Inspection, float | None], Awaitable[Verdict]],
                 record: Callable[[Inspection, Verdict, dict[str, str]], Awaitable[Verdict]],
                 limits: StreamLimits, idle_timeout: float, *,
                 rule_rank: Callable[[str, str], int], metrics: Metrics | None = None,
                 longest_match: Callable[[str, str], int] = lambda policy, revision: 0,
                 max_seconds: float = 3600.0, max_streams: int = 256,
                 max_held_bytes: int | None = None) -> None:
        self.inspect = inspect
        self.record = record
        self.metrics = metrics
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.max_seconds = max_seconds
        self.max_streams = max_streams
        self.max_held_bytes = max_held_bytes if max_held_bytes is not None else \
            32 * limits.max_bytes
        self.held_bytes = 0  # text read by every open stream, queued or in its window
        self.rule_rank = rule_rank
        self.longest_match = longest_match
        self.open_streams = 0
        # Audit writes of interrupted streams, which outlive their cancelled handler.
        self._background: set[asyncio.Task[Any]] = set()

    async def serve(self, request_iterator: AsyncIterator[pb.CompletionChunk],
                    context: Context) -> AsyncIterator[pb.StreamVerdict]:
        started = time.perf_counter()
        self.open_streams += 1
        budget = _Budget(self)
        chunks: asyncio.Queue[Chunk] = asyncio.Queue(QUEUE_CHUNKS)
        reader: asyncio.Future[None] | None = None
        stream: CompletionStream | None = None
        outcome = "failed"
        final: list[str] = []  # the final record's outcome, once it is queued
        # Characters of released text handed to gRPC so far. A release is counted as it
        # is yielded, before its write completes: a client gone while it was in flight
        # may have seen it, so the record keeps it (it over-claims by one message at
        # most, never under-claims); steps released after the last yield were not.
        handed = [0]
        try:
            if self.open_streams > self.max_streams:
                raise RequestTooLarge(f"{self.max_streams} streams already open "
                                      "(GUARDRAIL_MAX_STREAMS); retry with backoff")
            reader = asyncio.ensure_future(_read_into(request_iterator, chunks, budget))
            batch = await self._next_chunks(chunks, budget)
            stream = self._open(batch[0], context)
            async for verdict in self._run(stream, batch, chunks, budget, started,
                                           final=final, handed=handed):
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
            # ... after its final record was queued: that record stands, and is the one.
            outcome = final[0] if final else "abandoned"
            raise
        except Exception as err:
            log.error("stream failed", extra={"error_type": type(err).__name__,
                                              "error_frames": error_frames(err)})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the stream")
        finally:
            if reader is not None:
                reader.cancel()
            budget.release()
            self.open_streams -= 1
            if stream is not None:
                self._close(stream, outcome, started, handed[0])

    def _open(self, first: Chunk, context: Context) -> CompletionStream:
        if first is None:
            raise InvalidRequest("the stream ended before its first CompletionChunk")
        if isinstance(first, GuardrailError):
            raise first
        if isinstance(first, Malformed):
            raise first.error
        if not first.HasField("request"):
            raise InvalidRequest("request: the first CompletionChunk must carry the request's "
                                 "fields (tenant, app, conversation_id, ...)")

        async def analyze(window: Inspection) -> Verdict:
            remaining = context.time_remaining()
            return await self.inspect(
                window, None if remaining is None else time.monotonic() + remaining)

        return CompletionStream(convert.to_stream_template(first.request), analyze,
                                self.limits, self.rule_rank, self.longest_match)

    async def _run(self, stream: CompletionStream, batch: list[Chunk],
                   chunks: asyncio.Queue[Chunk], budget: _Budget,
                   started: float, *, final: list[str], handed: list[int]
                   ) -> AsyncIterator[pb.StreamVerdict]:
        first = batch[0]
        ended = False
        while True:
            for chunk in batch:
                if chunk is None:  # the client closed its side: that is the end too,
                    if not ended:  # unless it went away: only a write tells (below)
                        yield _acknowledgement(stream)
                    ended = True
                    continue
                if isinstance(chunk, GuardrailError):
                    raise chunk
                if isinstance(chunk, Malformed):
                    raise chunk.error
                if ended:
                    raise InvalidRequest("a CompletionChunk arrived after the last one "
                                         "(end=true)")
                if chunk is not first and chunk.HasField("request"):
                    raise InvalidRequest("request: only the first CompletionChunk may carry it")
                stream.add(chunk.text)
                ended = chunk.end
            releases = await _unless_refused(budget, stream.advance(final=ended))
            for release in releases:
                if release.blocked or (ended and release is releases[-1]):
                    inspection, verdict = stream.summary()
                    outcome = "blocked" if release.blocked else "complete"
                    # The record is queued before its commit is awaited: a cancel from
                    # here on must not write a second one (`abandoned`) in `serve`.
                    final.append(outcome)
                    verdict = await self._audit(inspection, verdict, outcome)
                    if self.metrics is not None:
                        self.metrics.inspected(Direction.COMPLETION.value, verdict,
                                               time.perf_counter() - started, stream.received)
                    yield convert.to_final_stream_verdict(release, verdict)
                    if not release.blocked and batch[-1] is not None:
                        await self._expect_close(chunks)
                    return
                handed[0] += len(release.text)
                yield convert.to_stream_verdict(release)
            if not releases:
                yield _acknowledgement(stream)
            batch = await self._next_chunks(chunks, budget)

    async def _expect_close(self, chunks: asyncio.Queue[Chunk]) -> None:
        """After end=true only the client's half-close may come; a chunk is an error
        (the final verdict has gone out: the status tells the client it sent too much)."""
        try:
            rest = await asyncio.wait_for(chunks.get(), min(self.idle_timeout, CLOSE_GRACE))
        except TimeoutError:
            return  # a client that never closes its side: the call is complete anyway
        if rest is not None:
            raise InvalidRequest("a CompletionChunk arrived after the last one (end=true)")

    async def _next_chunks(self, chunks: asyncio.Queue[Chunk], budget: _Budget) -> list[Chunk]:
        """The next chunk and all queued behind it, waiting at most until the stream has
        gone `idle_timeout` without progress (or is out of time)."""
        try:
            batch = [await asyncio.wait_for(chunks.get(), budget.wait())]
        except TimeoutError:
            budget.wait()  # raises the reason: no progress, or no time left
            raise DeadlineExceeded(_idle_message(self.idle_timeout)) from None
        while not chunks.empty() and batch[-1] is not None:
            batch.append(chunks.get_nowait())
        budget.saw(batch)
        return batch

    async def _audit(self, inspection: Inspection, verdict: Verdict, outcome: str) -> Verdict:
        return await self.record(inspection, verdict, {"stream": outcome})

    def _close(self, stream: CompletionStream, outcome: str, started: float,
               handed: int) -> None:
        if outcome not in ("complete", "blocked") and stream.windows:
            # Some text may have been shown: the stream still gets its audit record,
            # with what was handed to gRPC as shown.
            inspection, verdict = stream.summary(shown_chars=handed)
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


def _acknowledgement(stream: CompletionStream) -> pb.StreamVerdict:
    """Received, nothing more released yet."""
    return pb.StreamVerdict(received_chars=stream.received, released_chars=stream.released)


async def _unless_refused(budget: _Budget, work: Awaitable[list[Release]]) -> list[Release]:
    """`work`'s result, unless the reader refuses the stream first: then `work` is
    cancelled (its window may be waiting for a worker) and the refusal raised."""
    if budget.refusal is not None:
        raise budget.refusal
    task = asyncio.ensure_future(work)
    refused = asyncio.ensure_future(budget.refused.wait())
    try:
        await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refused.cancel()
        if not task.done():  # refused, or this handler was cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled() and budget.refusal is not None:
        raise budget.refusal
    return task.result()


async def _read_into(iterator: AsyncIterator[pb.CompletionChunk | Malformed],
                     chunks: asyncio.Queue[Chunk], budget: _Budget) -> None:
    """Move a stream's chunks into a bounded queue; None marks the client's half-close.

    Text is counted as it is read: once the stream (or all streams) hold too much, or a
    chunk is malformed or over a size limit, what was queued is dropped, the refusal
    takes its place (and cuts short a step waiting for a worker), and nothing more is
    read.
    """
    async for chunk in iterator:
        refusal = budget.take(chunk) if isinstance(chunk, pb.CompletionChunk) else \
            chunk.error if isinstance(chunk, Malformed) else None
        if refusal is not None:
            while not chunks.empty():
                chunks.get_nowait()
            chunks.put_nowait(refusal)
            budget.refusal = refusal
            budget.refused.set()
            return
        await chunks.put(chunk)  # a full queue: wait, and gRPC stops the sender
    await chunks.put(None)
