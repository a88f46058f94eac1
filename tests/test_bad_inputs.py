"""The catalogue of bad inputs a user will send, each through gRPC with its expected answer.

One sidecar on the shipped defaults (1 MiB of text, 1,000 messages, 64 attributes) with
one worker process, so every request crosses the same pipe as in production. Each row
says what comes back: a decision, or a status and the words its message must contain.
None of them may take the sidecar down: every test ends by checking that it still
answers a plain request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import AuditWriter, open_store
from sidecar.pipeline import Pipeline
from sidecar.runner import make_runner
from tests.conftest import _ServerThread, make_settings

MIB = 1024 * 1024


@dataclass
class Server:
    address: str
    stub: pb_grpc.GuardrailStub
    channel: grpc.Channel
    thread: _ServerThread

    def still_answers(self) -> None:
        reply = self.stub.InspectPrompt(pb.InspectRequest(text="mail a@example.com"),
                                        timeout=30)
        assert reply.text == "mail <EMAIL_ADDRESS>"
        card = self.stub.InspectPrompt(pb.InspectRequest(text="card 4111 1111 1111 1111"),
                                       timeout=30)
        assert card.decision == pb.BLOCK  # and the policy is as strict as before
        assert self.thread.running.servicer.in_flight == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = make_settings(tmp_path_factory.mktemp("bad"), workers=1,
                             stream_idle_timeout=1.0)
    pipeline = Pipeline.from_settings(settings)
    audit = AuditWriter(open_store(settings), lambda name: (
        pipeline.policies.by_name[name].policy if name in pipeline.policies.by_name else None))
    thread = _ServerThread(settings, make_runner(settings, pipeline), audit)
    channel = grpc.insecure_channel(thread.running.address, options=[
        ("grpc.max_send_message_length", 64 * MIB)])
    try:
        yield Server(thread.running.address, pb_grpc.GuardrailStub(channel), channel, thread)
    finally:
        channel.close()
        thread.stop()


def text(value: str, **fields: object) -> pb.InspectRequest:
    return pb.InspectRequest(text=value, **fields)


def chat(count: int, content: str = "hi") -> pb.InspectRequest:
    return pb.InspectRequest(messages=pb.Messages(
        messages=[pb.Message(role="user", content=content)] * count))


@dataclass(frozen=True)
class Case:
    request: Callable[[], pb.InspectRequest]
    decision: int | None = None  # the expected decision, or
    status: grpc.StatusCode | None = None  # the expected status,
    words: str = ""  # and words its message must contain
    completion: bool = False


CATALOGUE = {
    "empty text": Case(lambda: text(""), decision=pb.ALLOW),
    "whitespace only": Case(lambda: text(" \t\n\r\u00a0\u3000 "), decision=pb.ALLOW),
    "no content at all": Case(lambda: pb.InspectRequest(tenant="acme"),
                              status=grpc.StatusCode.INVALID_ARGUMENT,
                              words="content: set either 'text' or 'messages'"),
    "empty message list": Case(lambda: pb.InspectRequest(messages=pb.Messages()),
                               status=grpc.StatusCode.INVALID_ARGUMENT,
                               words="at least one message"),
    "exactly 1 MiB (emoji)": Case(lambda: text("\U0001F600" * (MIB // 4)),
                                  decision=pb.ALLOW),
    "1 MiB + 1 byte": Case(lambda: text("a" * (MIB + 1)),
                           status=grpc.StatusCode.RESOURCE_EXHAUSTED,
                           words="1048577 bytes of text exceed the limit of 1048576 bytes"),
    "1 MiB + 1 byte over messages": Case(lambda: chat(2, "a" * (MIB // 2) + "b"),
                                         status=grpc.StatusCode.RESOURCE_EXHAUSTED,
                                         words="exceed the limit of 1048576 bytes"),
    "beyond gRPC's own cap": Case(lambda: text("a" * (3 * MIB + 1)),
                                  status=grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  words="larger than max"),
    "100k emoji": Case(lambda: text("\U0001F600" * 100_000), decision=pb.ALLOW),
    "100k emoji with spaces": Case(lambda: text("\U0001F600 " * 100_000), decision=pb.ALLOW),
    "combining-mark flood": Case(lambda: text("e" + "\u0301" * 200_000), decision=pb.ALLOW),
    "zero-width flood": Case(lambda: text("\u200b\u200d\ufeff" * 100_000), decision=pb.ALLOW),
    "RTL override around an email": Case(
        lambda: text("\u202ejane@example.com\u202c and \u2067x\u2069"), decision=pb.MODIFY),
    "a megabyte of punctuation": Case(lambda: text("!?" * (MIB // 2 - 1)), decision=pb.ALLOW),
    "a 1 MiB token": Case(lambda: text("x" * (MIB - 100) + " mail a@example.com"),
                          decision=pb.MODIFY),
    "control characters and NULs": Case(
        lambda: text("".join(chr(c) for c in range(32)) * 100 + "\x00a@example.com\x00"),
        decision=pb.MODIFY),
    "every plane, no surrogates": Case(
        lambda: text("".join(chr(c) for c in range(0, 0x110000, 97)
                             if not 0xD800 <= c <= 0xDFFF)), decision=None),
    "1,000 messages (the limit)": Case(lambda: chat(1000), decision=pb.ALLOW),
    "5,000 messages": Case(lambda: chat(5000), status=grpc.StatusCode.RESOURCE_EXHAUSTED,
                           words="5000 messages exceed the limit of 1000"),
    "100,000 attributes": Case(
        lambda: text("hi", attributes={f"k{i}": "v" for i in range(100_000)}),
        status=grpc.StatusCode.INVALID_ARGUMENT,
        words="100000 entries exceed the limit of 64"),
    "a 1 MB attribute value": Case(lambda: text("hi", attributes={"plan": "p" * MIB}),
                                   status=grpc.StatusCode.INVALID_ARGUMENT,
                                   words="value longer than 1024 characters"),
    "an empty attribute key": Case(lambda: text("hi", attributes={"": "v"}),
                                   status=grpc.StatusCode.INVALID_ARGUMENT,
                                   words="keys must be 1 to 128 characters"),
    "a 1 MB request id": Case(lambda: text("hi", request_id="r" * MIB),
                              status=grpc.StatusCode.INVALID_ARGUMENT,
                              words="request_id: longer than 128 characters"),
    "unknown tenant and app": Case(lambda: text("hi", tenant="no-such-tenant", app="?"),
                                   decision=pb.ALLOW),
    "unknown schema id": Case(lambda: text("{}", tenant="schema", output_schema="nope"),
                              status=grpc.StatusCode.INVALID_ARGUMENT,
                              words="defines no schema 'nope'", completion=True),
    "a schema on a prompt": Case(lambda: text("{}", tenant="schema", output_schema="ticket"),
                                 status=grpc.StatusCode.INVALID_ARGUMENT,
                                 words="applies to InspectCompletion only"),
    "JSON nested 100,000 deep": Case(
        lambda: text("[" * 100_000 + "]" * 100_000, tenant="schema", output_schema="ticket"),
        decision=pb.BLOCK, completion=True),
    "JSON objects nested 50,000 deep": Case(
        lambda: text('{"a":' * 50_000 + "1" + "}" * 50_000, tenant="schema",
                     output_schema="ticket"), decision=pb.BLOCK, completion=True),
    "broken JSON": Case(lambda: text('{"id": "TCK-1", ', tenant="schema",
                                     output_schema="ticket"),
                        decision=pb.BLOCK, completion=True),
}


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_each_bad_input_gets_its_answer(server: Server, name: str) -> None:
    case = CATALOGUE[name]
    call = server.stub.InspectCompletion if case.completion else server.stub.InspectPrompt
    request = case.request()
    if case.status is not None:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=60)
        assert caught.value.code() == case.status, caught.value.details()
        assert case.words in (caught.value.details() or "")
        assert "Traceback" not in (caught.value.details() or "")
    else:
        reply = call(request, timeout=60)  # a hang would be DEADLINE_EXCEEDED here
        if case.decision is not None:
            assert reply.decision == case.decision
        source = request.text if request.HasField("text") else None
        for finding in reply.findings:  # offsets stay inside the text the app sent
            if source is not None:
                assert 0 <= finding.start < finding.end <= len(source)
    server.still_answers()


def test_rtl_override_offsets_point_at_the_email(server: Server) -> None:
    source = "\u202ejane@example.com\u202c and \u2067x\u2069"
    reply = server.stub.InspectPrompt(text(source), timeout=30)
    [finding] = [f for f in reply.findings if f.entity_type == "EMAIL_ADDRESS"]
    assert source[finding.start:finding.end] == "jane@example.com"
    assert reply.text == "\u202e<EMAIL_ADDRESS>\u202c and \u2067x\u2069"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\x32\x03\xed\xa0\x80", "String field had bad UTF-8"),  # a lone surrogate, encoded
    (b"\x32\x02\xc3\x28", "String field had bad UTF-8"),
    (b"\xff\xff\xff\xff", "Wire format was corrupt"),
    (bytes(range(256)), "Wire format was corrupt"),
    (b"\x32\x05ab", "Wire format was corrupt"),  # a string longer than the message
])
def test_bytes_that_are_not_a_request_are_invalid_argument(server: Server, payload: bytes,
                                                            reason: str) -> None:
    for method in ("InspectPrompt", "InspectCompletion", "PolicyStatus"):
        raw = server.channel.unary_unary(f"/guardrail.v1.Guardrail/{method}",
                                         request_serializer=lambda b: b,
                                         response_deserializer=lambda b: b)
        if method == "PolicyStatus" and b"\x32" in payload[:1]:
            continue  # an unknown field 6 is legal there
        with pytest.raises(grpc.RpcError) as caught:
            raw(payload, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason in (caught.value.details() or "")
    server.still_answers()


def test_a_malformed_chunk_ends_the_stream_with_invalid_argument(server: Server) -> None:
    raw = server.channel.stream_stream("/guardrail.v1.Guardrail/InspectCompletionStream",
                                       request_serializer=lambda b: b,
                                       response_deserializer=pb.StreamVerdict.FromString)
    first = pb.CompletionChunk(request=pb.InspectRequest()).SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        list(raw(iter([first, b"\x12\x02\xc3\x28"]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid guardrail.v1.CompletionChunk" in (caught.value.details() or "")
    server.still_answers()


def test_duplicate_request_ids_get_their_own_answers_and_records(server: Server) -> None:
    first = server.stub.InspectPrompt(text("mail a@example.com", request_id="same"), timeout=30)
    second = server.stub.InspectPrompt(text("card 4111 1111 1111 1111", request_id="same"),
                                       timeout=30)
    assert (first.decision, second.decision) == (pb.MODIFY, pb.BLOCK)
    assert first.request_id == second.request_id == "same"
    assert first.audit_id and second.audit_id and first.audit_id != second.audit_id


def test_a_stream_that_never_ends_times_out(server: Server) -> None:
    started = threading.Event()

    def chunks() -> Iterator[pb.CompletionChunk]:
        yield pb.CompletionChunk(request=pb.InspectRequest(), text="hello and then nothing")
        started.set()
        time.sleep(30)  # the client holds the stream open and sends nothing more

    with pytest.raises(grpc.RpcError) as caught:
        list(server.stub.InspectCompletionStream(chunks(), timeout=20))
    assert started.is_set()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no CompletionChunk for 1 s" in (caught.value.details() or "")
    server.still_answers()


def test_clients_that_go_away_mid_call_leave_nothing_behind(server: Server) -> None:
    # Unary calls cancelled while in a worker's queue or on it.
    futures = [server.stub.InspectPrompt.future(text("The quick brown fox. " * 2_000),
                                                timeout=60) for _ in range(6)]
    time.sleep(0.05)
    for future in futures:
        future.cancel()
    # A call whose deadline passes while it waits.
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.InspectPrompt(text("hello"), timeout=0.0001)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # A stream the client drops after its first verdict.
    stream = server.stub.InspectCompletionStream(iter([
        pb.CompletionChunk(request=pb.InspectRequest(), text="x " * 2000)] + [
        pb.CompletionChunk(text="y ")] * 10_000), timeout=30)
    next(stream)
    stream.cancel()
    deadline = time.monotonic() + 30
    while server.thread.running.servicer.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    server.still_answers()

