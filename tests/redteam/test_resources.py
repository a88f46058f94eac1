"""Memory and work are bounded by the request limits, whatever the caller sends.

Attacks through a real `guardrail serve` (one worker, a small `max_text_bytes` so every
bound scales down and the suite stays fast):

- every string field of every request message, found from the proto's descriptor (so a
  field added later is attacked the day it exists), over its documented maximum: a
  clear status naming the field, never the value; at its maximum: no size refusal;
- a stream flooded with big chunks while its window waits for a busy worker, and one
  kept "alive" with empty chunks, or trickling text past its total time: refused, with
  the front process's peak RSS (VmHWM, read from /proc and reset through clear_refs)
  within a bound scaled by the limit;
- the largest allowed prompt and stream: answered, with the worker's peak RSS within
  a bound scaled by the limit (before the bounded NER segments one 1 MiB prompt took a
  worker to 3 GiB; ~2.8 KB per character);
- a worker killed mid-request (what the OOM killer does): only its request fails
  (UNAVAILABLE, retryable), the one queued behind it is answered by its replacement.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from tests import faults

MAX_BYTES = 64 * 1024  # GUARDRAIL_MAX_TEXT_BYTES for this module's sidecar
MIB = 1024 * 1024
IDLE = 1.0  # GUARDRAIL_STREAM_IDLE_TIMEOUT
MAX_SECONDS = 10.0  # GUARDRAIL_STREAM_MAX_SECONDS (room for the largest stream on a busy machine)
MAX_STREAMS = 8
# The documented maxima (guardrail.proto, README): content is bounded by MAX_BYTES in
# total; every other string field by its own small maximum, 128 unless listed.
CONTENT = {"guardrail.v1.InspectRequest.text", "guardrail.v1.Message.content",
           "guardrail.v1.CompletionChunk.text"}
MAX_CHARS = {"guardrail.v1.Message.role": 64,
             "guardrail.v1.InspectRequest.AttributesEntry.value": 1024}
DEFAULT_MAX_CHARS = 128
PROSE = ("Jane Doe wrote to jane.doe@example.com from Paris about invoice 4411 on Monday; "
         "call +1 212 555 0187 or ask Wei Zhang at Acme Corp. ")


# -- the sidecar -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.Sidecar]:
    running = faults.Sidecar(tmp_path_factory.mktemp("resources") / "data", env={
        "GUARDRAIL_MAX_TEXT_BYTES": str(MAX_BYTES),
        "GUARDRAIL_STREAM_IDLE_TIMEOUT": str(IDLE),
        "GUARDRAIL_STREAM_MAX_SECONDS": str(MAX_SECONDS),
        "GUARDRAIL_MAX_STREAMS": str(MAX_STREAMS),
        "GUARDRAIL_MAX_QUEUED_BYTES": str(4 * MAX_BYTES),
        "GUARDRAIL_AUDIT": "false"}).serving()
    try:
        yield running
    finally:
        running.stop()
        faults.kill_leftovers()


def stub(sidecar: faults.Sidecar) -> Any:
    assert sidecar.stub is not None
    return sidecar.stub


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> int:
    """Reset a process's VmHWM to its current RSS (Linux 4.0+); return that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status(pid)["VmRSS"]


def worker_pid(sidecar: faults.Sidecar) -> int:
    """The pid of the sidecar's one inspection worker (not multiprocessing's helper)."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = next(line for line in (entry / "status").read_text().splitlines()
                          if line.startswith("PPid:"))
            command = (entry / "cmdline").read_bytes()
        except (OSError, StopIteration):
            continue
        if parent.split()[1] == str(sidecar.process.pid) and b"resource_tracker" \
                not in command:
            return int(entry.name)
    raise AssertionError("no worker process")


# -- every string field, from the descriptor ---------------------------------------------

def string_fields(descriptor: Any, path: str = "",
                  seen: tuple[str, ...] = ()) -> list[tuple[str, FieldDescriptor]]:
    """(path, field) of every string field reachable from a message type; a repeated
    message is entered at [0], a map as `name.key` / `name.value`."""
    found: list[tuple[str, FieldDescriptor]] = []
    for field in descriptor.fields:
        name = f"{path}.{field.name}" if path else field.name
        inner = field.message_type
        if inner is not None and inner.GetOptions().map_entry:
            found += [(f"{name}.{part}", inner.fields_by_name[part]) for part in ("key", "value")]
        elif inner is not None and inner.full_name not in seen:
            found += string_fields(inner, f"{name}[0]" if field.is_repeated else name,
                                   (*seen, descriptor.full_name))
        elif field.type == FieldDescriptor.TYPE_STRING:
            found.append((name, field))
    return found


def put(message: Any, path: str, value: str) -> None:
    """Set the string at `path` (as string_fields names it) inside `message`."""
    head, _, rest = path.partition(".")
    name = head.removesuffix("[0]")
    field = message.DESCRIPTOR.fields_by_name[name]
    inner = field.message_type
    if inner is not None and inner.GetOptions().map_entry:
        if rest == "key":
            getattr(message, name)[value] = "v"
        else:
            getattr(message, name)["k"] = value
    elif inner is not None:
        child = getattr(message, name).add() if field.is_repeated else getattr(message, name)
        put(child, rest, value)
        if not field.is_repeated:
            getattr(message, name).CopyFrom(child)  # an empty sub-message is still "set"
    else:
        setattr(message, name, value)


def limit_of(field: FieldDescriptor) -> int | None:
    if field.full_name in CONTENT:
        return None
    return MAX_CHARS.get(field.full_name, DEFAULT_MAX_CHARS)


UNARY = [(path, field) for path, field in string_fields(pb.InspectRequest.DESCRIPTOR)]
STREAM = [(path, field) for path, field in string_fields(pb.CompletionChunk.DESCRIPTOR)
          if not path.startswith(("request.text", "request.messages"))]  # refused anyway


def test_the_descriptor_walk_finds_every_kind_of_field() -> None:
    paths = {path for path, _ in UNARY}
    assert {"request_id", "tenant", "app", "subject_id", "conversation_id", "text",
            "messages.messages[0].role", "messages.messages[0].content", "user_region",
            "target_region", "output_schema", "attributes.key", "attributes.value"} <= paths
    assert {"text", "request.tenant", "request.attributes.value"} <= {p for p, _ in STREAM}


def _unary_request(path: str, value: str) -> pb.InspectRequest:
    request = pb.InspectRequest()
    put(request, path, value)
    if request.WhichOneof("content") is None:
        request.text = ""
    return request


def _refusal(call: Any, *args: Any) -> grpc.RpcError | None:
    try:
        result = call(*args, timeout=60)
        if not isinstance(result, pb.InspectResponse):
            list(result)  # a stream: read it to its end
    except grpc.RpcError as err:
        return err
    return None


def _check_over(err: grpc.RpcError | None, path: str, field: FieldDescriptor) -> None:
    assert err is not None, f"{path}: an oversized value was accepted"
    details = err.details() or ""
    assert "ZZZZZZZZ" not in details, details  # the value is never echoed
    if limit_of(field) is None:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (path, details)
        assert f"limit of {MAX_BYTES} bytes" in details, details
    else:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, details)
        last = path.rsplit(".", maxsplit=1)[-1].removesuffix("[0]")
        if last in ("key", "value"):  # a map entry: the map is named
            last = path.rsplit(".", maxsplit=2)[-2].removesuffix("[0]")
        assert last in details and f"longer than {limit_of(field)}" in details, details


def _over(field: FieldDescriptor) -> str:
    limit = limit_of(field)
    return "Z" * (MAX_BYTES + 1 if limit is None else limit + 1)


@pytest.mark.parametrize(("path", "field"), UNARY, ids=[p for p, _ in UNARY])
def test_every_oversized_request_field_gets_a_clear_status(
        sidecar: faults.Sidecar, path: str, field: FieldDescriptor) -> None:
    for value in (_over(field), "Z" * (4 * MAX_BYTES)):  # just over, and far over
        _check_over(_refusal(stub(sidecar).InspectCompletion, _unary_request(path, value)),
                    path, field)
    limit = limit_of(field)
    at_limit = _refusal(stub(sidecar).InspectCompletion,
                        _unary_request(path, "a" * (MAX_BYTES if limit is None else limit)))
    if at_limit is not None:  # refused for another reason (no such schema), not its size
        assert "longer than" not in (at_limit.details() or "")
        assert at_limit.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, at_limit.details()


@pytest.mark.parametrize(("path", "field"), STREAM, ids=[p for p, _ in STREAM])
def test_every_oversized_stream_field_gets_a_clear_status(
        sidecar: faults.Sidecar, path: str, field: FieldDescriptor) -> None:
    chunk = pb.CompletionChunk(request=pb.InspectRequest())
    put(chunk, path, _over(field))
    err = _refusal(stub(sidecar).InspectCompletionStream,
                   iter([chunk, pb.CompletionChunk(end=True)]))
    _check_over(err, path, field)


def test_other_fields_count_against_the_limit(sidecar: faults.Sidecar) -> None:
    """Fields within their own maxima still count: the text may not take it all."""
    request = pb.InspectRequest(text="a" * (MAX_BYTES - 10), tenant="t" * 64)
    err = _refusal(stub(sidecar).InspectPrompt, request)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{MAX_BYTES - 10 + 64} bytes of text exceed the limit" in (err.details() or "")
    chat = pb.InspectRequest(messages=pb.Messages(messages=[
        pb.Message(role="r" * 64, content="a" * (MAX_BYTES // 40)) for _ in range(40)]))
    err = _refusal(stub(sidecar).InspectPrompt, chat)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- streams -----------------------------------------------------------------------------

def _busy(sidecar: faults.Sidecar, count: int) -> list[Any]:
    """Keep the worker busy with the largest prompts (a window then waits for it)."""
    text = (PROSE * (MAX_BYTES // len(PROSE) + 1))[:MAX_BYTES]
    return [stub(sidecar).InspectPrompt.future(pb.InspectRequest(text=text), timeout=120)
            for _ in range(count)]


def test_a_flood_of_big_chunks_is_refused_in_bounded_memory(sidecar: faults.Sidecar) -> None:
    """Two streams each send a window, then 60 chunks of ~1 MiB (under gRPC's own cap)
    while the worker is busy: refused at once, and the front's peak RSS grows by less
    than what 8 requests' worth of text would take (it grew by 1.2 GiB at 1 MiB)."""
    front = sidecar.process.pid
    before = reset_peak(front)
    busy = _busy(sidecar, 3)
    big = "a " * (MIB // 2 - 64)
    sent = [0, 0]

    def flood(index: int) -> Iterator[pb.CompletionChunk]:
        yield pb.CompletionChunk(request=pb.InspectRequest(tenant="flood"))
        yield pb.CompletionChunk(text="word " * 200)
        for _ in range(60):
            sent[index] += 1
            yield pb.CompletionChunk(text=big)

    errors: list[grpc.RpcError | None] = [None, None]

    def run(index: int) -> None:
        errors[index] = _refusal(stub(sidecar).InspectCompletionStream, flood(index))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for err in errors:
        assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"the limit of {MAX_BYTES} bytes" in (err.details() or "")
    grown = status(front)["VmHWM"] - before
    assert grown < 8 * MAX_BYTES + 48 * MIB, (grown, sent)
    for call in busy:
        assert call.result().decision in (pb.ALLOW, pb.MODIFY)


def test_empty_chunks_do_not_keep_a_stream_alive(sidecar: faults.Sidecar) -> None:
    sent = 0

    def keepalive() -> Iterator[pb.CompletionChunk]:
        nonlocal sent
        yield pb.CompletionChunk(request=pb.InspectRequest(), text="hello ")
        for _ in range(200):  # 20 s of empty chunks, one every 0.1 s
            time.sleep(0.1)
            sent += 1
            yield pb.CompletionChunk(text="")
        yield pb.CompletionChunk(end=True)

    err = _refusal(stub(sidecar).InspectCompletionStream, keepalive())
    assert err is not None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert "empty ones do not count" in (err.details() or "")
    assert sent < 200  # refused while the keepalives were still coming


def test_a_trickling_stream_ends_at_its_total_time(sidecar: faults.Sidecar) -> None:
    sent = 0

    def trickle() -> Iterator[pb.CompletionChunk]:
        nonlocal sent
        yield pb.CompletionChunk(request=pb.InspectRequest())
        for _ in range(100):  # a word every 0.2 s: progress, for 20 s
            time.sleep(0.2)
            sent += 1
            yield pb.CompletionChunk(text="word ")

    err = _refusal(stub(sidecar).InspectCompletionStream, trickle())
    assert err is not None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert f"open for {MAX_SECONDS:g} s" in (err.details() or "")
    assert sent < 100


def test_open_streams_are_capped(sidecar: faults.Sidecar) -> None:
    feeds: list[queue.Queue[pb.CompletionChunk | None]] = []
    calls = []

    def fed(feed: queue.Queue[pb.CompletionChunk | None]) -> Iterator[pb.CompletionChunk]:
        while (chunk := feed.get()) is not None:
            yield chunk

    try:
        for _ in range(MAX_STREAMS):
            feed: queue.Queue[pb.CompletionChunk | None] = queue.Queue()
            feed.put(pb.CompletionChunk(request=pb.InspectRequest(), text="held "))
            feeds.append(feed)
            calls.append(stub(sidecar).InspectCompletionStream(fed(feed), timeout=30))
        for call in calls:
            next(call)  # every stream is open (acknowledged)
        err = _refusal(stub(sidecar).InspectCompletionStream,
                       iter([pb.CompletionChunk(request=pb.InspectRequest(), end=True)]))
        assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert f"{MAX_STREAMS} streams already open" in (err.details() or "")
    finally:
        for feed in feeds:
            feed.put(pb.CompletionChunk(end=True))
            feed.put(None)
        for call in calls:
            with contextlib.suppress(grpc.RpcError):
                list(call)


# -- the largest allowed requests --------------------------------------------------------

# A worker's peak above its resting RSS for the largest request: NER alone took ~2.8 KB
# a character of one pass before it read texts in bounded segments (180 MB at 64 KiB).
WORKER_BOUND = 600 * MAX_BYTES + 24 * MIB


def test_the_largest_prompt_is_answered_within_a_worker_memory_bound(
        sidecar: faults.Sidecar) -> None:
    worker = worker_pid(sidecar)
    text = (PROSE * (MAX_BYTES // len(PROSE) + 1))[:MAX_BYTES]
    stub(sidecar).InspectPrompt(pb.InspectRequest(text="warm " + text[:4000]), timeout=60)
    before = reset_peak(worker)
    reply = stub(sidecar).InspectPrompt(pb.InspectRequest(text=text), timeout=120)
    assert reply.decision == pb.MODIFY and len(reply.findings) > 100
    grown = status(worker)["VmHWM"] - before
    assert grown < WORKER_BOUND, (grown, WORKER_BOUND)


def test_the_largest_stream_is_answered_within_memory_bounds(sidecar: faults.Sidecar) -> None:
    worker, front = worker_pid(sidecar), sidecar.process.pid
    text = (PROSE * (MAX_BYTES // len(PROSE) + 1))[:MAX_BYTES]
    rest_worker, rest_front = reset_peak(worker), reset_peak(front)
    chunks = [pb.CompletionChunk(request=pb.InspectRequest())]
    chunks += [pb.CompletionChunk(text=text[i:i + 1000]) for i in range(0, len(text), 1000)]
    verdicts = list(stub(sidecar).InspectCompletionStream(
        iter([*chunks, pb.CompletionChunk(end=True)]), timeout=120))
    assert verdicts[-1].final and verdicts[-1].received_chars == len(text)
    assert status(worker)["VmHWM"] - rest_worker < WORKER_BOUND
    assert status(front)["VmHWM"] - rest_front < 8 * MAX_BYTES + 48 * MIB


def test_a_killed_worker_fails_only_its_own_request(sidecar: faults.Sidecar) -> None:
    """What the OOM killer does to a worker: SIGKILL mid-request. The request it held
    fails (UNAVAILABLE, retry); one waiting in the queue is answered by its replacement."""
    import os
    import signal

    worker = worker_pid(sidecar)
    text = (PROSE * (MAX_BYTES // len(PROSE) + 1))[:MAX_BYTES]
    held = stub(sidecar).InspectPrompt.future(pb.InspectRequest(text=text), timeout=120)
    time.sleep(0.3)  # on the worker now
    waiting = stub(sidecar).InspectPrompt.future(
        pb.InspectRequest(text="mail jane@example.com"), timeout=120)
    time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as caught:
        held.result()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert waiting.result().text == "mail <EMAIL_ADDRESS>"
    assert worker_pid(sidecar) != worker


def test_text_waiting_for_a_worker_is_bounded(sidecar: faults.Sidecar) -> None:
    """More prompts than GUARDRAIL_MAX_QUEUED_BYTES (here 4 x max_text_bytes) queued
    behind a busy worker: the excess is refused with RESOURCE_EXHAUSTED (retryable), not
    held in the front's memory; the rest is answered.

    The first prompt goes through NER and keeps the worker busy while the others
    arrive; those go to the patterns-only policy (tenant fast-*), so the worker answers
    the admitted ones without running NER over a quarter of a megabyte: the bound counts
    text in the front process whatever the policy. (gRPC may deliver them in any order:
    whichever arrives first is admitted, an empty queue always takes one.)"""
    text = (PROSE * (MAX_BYTES // len(PROSE) + 1))[:MAX_BYTES // 2]
    calls = [stub(sidecar).InspectPrompt.future(
        pb.InspectRequest(text=text, tenant="fast-queue" if n else ""), timeout=300)
        for n in range(15)]
    refused = [call.exception() for call in calls if call.exception() is not None]
    assert all(err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
               and "characters of text already waiting" in (err.details() or "")
               for err in refused), [err.details() for err in refused]
    assert 0 < len(refused) < len(calls)
    assert all(call.result().decision == pb.MODIFY for call in calls
               if call.exception() is None)
