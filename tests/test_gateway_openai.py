"""The OpenAI-compatible gateway, driven by the official `openai` SDK against a real
recording upstream: attacked as an app and as a model would attack it.

Invariants: no original value of a PII item the client sent reaches the upstream (body,
URL or any header); the client gets its own values back where the policy pseudonymizes;
a value the model writes across SSE events, cut at every position, is still caught; a
blocked prompt never reaches the upstream and a blocked answer never reaches the
client; every stream the SDK reads is valid and a raw one ends in [DONE]; upstream
failures come back as failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import string
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TEST_POLICIES, raw_bytes
from tests.gateway import (
    GatewaySidecar,
    RecordingUpstream,
    chat_chunks,
    chat_completion,
    gateway_sidecar,
    response_events,
    response_object,
    sse,
)

SECRET_KEY = "sk-test-never-log-this-0123456789"
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    yield recording
    recording.stop()


@pytest.fixture(scope="module")
def eu_upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    yield recording
    recording.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream,
            eu_upstream: RecordingUpstream) -> Iterator[GatewaySidecar]:
    with gateway_sidecar(tmp_path_factory.mktemp("gateway"), upstream,
                         upstream_regions={"eu-west-1": eu_upstream.url,
                                           "us-east-1": upstream.url}) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(upstream: RecordingUpstream, eu_upstream: RecordingUpstream) -> None:
    upstream.reset()
    eu_upstream.reset()


def client(gateway: GatewaySidecar, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=SECRET_KEY, max_retries=0,
                         timeout=30, default_headers=headers or None)


def ask(gateway: GatewaySidecar, text: str, **headers: str) -> Any:
    return client(gateway, **headers).chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}])


emails = st.builds("{}.{}@{}".format,
                   st.text(string.ascii_lowercase, min_size=3, max_size=8),
                   st.text(string.ascii_lowercase, min_size=3, max_size=8),
                   st.sampled_from(["acme.com", "mail.org", "corp.net"]))


# -- prompts: nothing sent reaches the upstream; pseudonyms come back ------------------------

@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(email=emails, other=emails)
def test_no_sent_value_reaches_the_upstream_and_the_client_gets_it_back(
        gateway: GatewaySidecar, upstream: RecordingUpstream, email: str, other: str) -> None:
    upstream.reset()
    answer = client(gateway, **{"x-guardrail-tenant": "pseudo",
                                "x-guardrail-subject-id": other}).chat.completions.create(
        model="m", user=other, messages=[
            {"role": "system", "content": f"Escalations go to {other}."},
            {"role": "user", "content": [{"type": "text", "text": f"Mail me at {email}"}]}])
    [seen] = upstream.received
    for value in (email, other):
        assert value not in seen.everything()  # the `user` field goes as a keyed hash
    assert seen.json["user"].startswith("gr-")
    assert "<EMAIL_ADDRESS_" in seen.body.decode()
    # The model echoed the placeholder: the client reads its own value again.
    assert answer.choices[0].message.content == f"You said: Mail me at {email}"


def test_tool_calls_and_tool_results_are_inspected_too(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    client(gateway, **{"x-guardrail-tenant": "pseudo"}).chat.completions.create(
        model="m", messages=[
            {"role": "user", "content": "Look up my order"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function", "function": {
                    "name": "lookup", "arguments": '{"email": "jane.roe@acme.com"}'}}]},
            {"role": "tool", "tool_call_id": "call_1",
             "content": "Order 7 belongs to kim.lee@mail.org"}])
    body = upstream.received[0].body.decode()
    assert "jane.roe@acme.com" not in body
    assert "kim.lee@mail.org" not in body
    sent = upstream.received[0].json
    assert json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {
        "email": "<EMAIL_ADDRESS_1>"}
    assert sent["model"] == "m"  # other fields pass through untouched


def test_answer_tool_call_arguments_get_values_restored(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    def model(request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        return chat_completion(None, tool_calls=[{  # type: ignore[arg-type]
            "id": "call_9", "type": "function", "function": {
                "name": "send", "arguments": '{"to": "<EMAIL_ADDRESS_1>"}'}}])

    upstream.reset(model)
    answer = client(gateway, **{"x-guardrail-tenant": "pseudo"}).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Write to ada@acme.com"}])
    call = answer.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"to": "ada@acme.com"}


def test_authorization_is_forwarded_and_never_logged_or_audited(
        gateway: GatewaySidecar, upstream: RecordingUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        ask(gateway, "hello there", **{"OpenAI-Organization": "org-7"})
    headers = {k.lower(): v for k, v in upstream.received[0].headers.items()}
    assert headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert headers["openai-organization"] == "org-7"
    assert not any(k.startswith("x-guardrail-") for k in headers)
    assert SECRET_KEY not in caplog.text
    files = [f for f in (gateway.audit_dir / "audit").rglob("*") if f.is_file()]
    assert files
    for path in files:
        assert SECRET_KEY.encode() not in raw_bytes(path)


# -- blocks ---------------------------------------------------------------------------------

def test_a_blocked_prompt_never_reaches_the_upstream(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway, "Tell me how to build a weapon", **{"x-guardrail-tenant": "content"})
    assert upstream.received == []
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "guardrail_blocked"
    assert error["rule_ids"] == ["weapons"]
    assert error["audit_id"]
    assert error["direction"] == "prompt"


def test_a_blocked_completion_never_reaches_the_client(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    upstream.reset(lambda request, payload: chat_completion(f"Your card is {CARD}."))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway, "what is my card?")
    assert CARD not in str(caught.value) and "1111" not in json.dumps(caught.value.body)
    assert caught.value.body["type"] == "guardrail_blocked"  # type: ignore[index]
    assert caught.value.body["entity_types"] == ["CREDIT_CARD"]  # type: ignore[index]


# -- streams --------------------------------------------------------------------------------

def _stream_text(gateway: GatewaySidecar, **headers: str) -> tuple[str, list[Any]]:
    chunks = list(client(gateway, **headers).chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "go"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_an_email_split_across_events_at_every_position_is_caught(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    email = "maria.garcia@corp.net"
    said = f"Contact {email} for details."
    start = said.index(email)
    for cut in range(start + 1, start + len(email)):
        upstream.reset(lambda r, p, cut=cut: chat_chunks(said, [cut]))
        text, chunks = _stream_text(gateway)
        assert email not in text, cut
        assert "maria" not in text and "garcia" not in text, cut
        assert text == "Contact <EMAIL_ADDRESS> for details.", cut
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_card_split_across_events_at_every_position_blocks_the_stream(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    said = f"Sure, the number is {CARD} as requested."
    start = said.index(CARD)
    for cut in range(start + 1, start + len(CARD)):
        upstream.reset(lambda r, p, cut=cut: chat_chunks(said, [cut]))
        shown: list[str] = []

        def read(into: list[str] = shown) -> None:
            for chunk in client(gateway).chat.completions.create(
                    model="m", stream=True, messages=[{"role": "user", "content": "go"}]):
                into += [c.delta.content or "" for c in chunk.choices]

        with pytest.raises(openai.APIError) as caught:
            read()
        assert caught.value.body["type"] == "guardrail_blocked", cut  # type: ignore[index]
        assert "1111" not in "".join(shown), cut


def test_streams_restore_pseudonyms_and_end_with_done(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    upstream.reset(splits=[13, 14, 20, 21, 22])
    request = urllib.request.Request(
        f"{gateway.base_url}/chat/completions", method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET_KEY}",
                 "x-guardrail-tenant": "pseudo"},
        data=json.dumps({"model": "m", "stream": True, "messages": [
            {"role": "user", "content": "Write to lena.berg@acme.com"}]}).encode())
    with urllib.request.urlopen(request, timeout=30) as page:
        assert page.headers["Content-Type"].startswith("text/event-stream")
        raw = page.read().decode()
    assert "lena.berg@acme.com" not in upstream.received[0].body.decode()
    events = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "You said: Write to lena.berg@acme.com"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_usage_and_finish_come_after_the_released_text(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    def model(request: web.Request, payload: dict[str, Any]) -> list[Any]:
        chunks = chat_chunks("Hello world, a short answer.")
        return [*chunks, {**chunks[0], "choices": [], "usage": {
            "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}]

    upstream.reset(model)
    text, chunks = _stream_text(gateway)
    assert text == "Hello world, a short answer."
    assert chunks[-1].usage.total_tokens == 8
    assert chunks[-2].choices[0].finish_reason == "stop"


# -- upstream failures pass back as failures --------------------------------------------------

@pytest.mark.parametrize(("status", "kind"), [
    (401, openai.AuthenticationError), (429, openai.RateLimitError),
    (400, openai.BadRequestError), (500, openai.InternalServerError),
    (503, openai.InternalServerError)])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_are_passed_through(
        gateway: GatewaySidecar, upstream: RecordingUpstream, status: int,
        kind: type[Exception], stream: bool) -> None:
    upstream.reset(lambda r, p: web.json_response(
        {"error": {"message": f"upstream says {status}", "type": "x", "code": "y"}},
        status=status))
    with pytest.raises(kind) as caught:
        client(gateway).chat.completions.create(
            model="m", stream=stream, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    assert f"upstream says {status}" in str(caught.value)


def test_upstream_timeout_is_a_504_not_a_success(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    async def slow(request: web.Request, payload: Any) -> dict[str, Any]:
        await asyncio.sleep(5)  # the gateway waits 3 s
        return chat_completion("too late")

    upstream.reset(slow)
    with pytest.raises(openai.InternalServerError) as caught:
        ask(gateway, "hi")
    assert caught.value.status_code == 504
    assert caught.value.body["type"] == "upstream_timeout"  # type: ignore[index]


def test_a_stream_that_stalls_ends_in_an_error_event(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    async def stall(request: web.Request, payload: Any) -> web.StreamResponse:
        return await sse(request, [*chat_chunks("Partial answer")[:2], 5.0], done=False)

    upstream.reset(stall)
    with pytest.raises(openai.APIError) as caught:
        _stream_text(gateway)
    assert caught.value.body["type"] == "upstream_timeout"  # type: ignore[index]


def test_an_unreachable_upstream_is_a_502(gateway: GatewaySidecar) -> None:
    import sidecar.gateway.upstream as up

    app = gateway.server.running.gateway.runner.app
    routes = [r for r in app.router.routes() if r.resource.canonical == "/v1/chat/completions"]
    handler = routes[0].handler.__self__  # the OpenAIGateway
    saved = handler.upstreams
    handler.upstreams = up.Upstreams("http://127.0.0.1:9/v1", {})
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            ask(gateway, "hi")
    finally:
        handler.upstreams = saved
    assert caught.value.status_code == 502


def test_bad_requests_get_clear_errors(gateway: GatewaySidecar) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        client(gateway).chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.BadRequestError, match="cannot be inspected"):
        client(gateway).chat.completions.create(model="m", messages=[{
            "role": "user", "content": [{"type": "image_url",
                                         "image_url": {"url": "data:image/png;base64,AA"}}]}])
    request = urllib.request.Request(f"{gateway.base_url}/chat/completions", method="POST",
                                     data=b"{not json", headers={"Content-Type": "x"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"]["message"] == "body: not valid JSON"


@pytest.mark.parametrize("identity", [{"user": "\ud800"}, {"metadata": {"app": "a\udfff"}},
                                      {"metadata": {"conversation_id": "\ud83d"}},
                                      {"messages": [{"role": "user\udc00", "content": "hi"}]}])
def test_an_identity_that_is_not_unicode_is_refused_at_the_door(
        gateway: GatewaySidecar, upstream: RecordingUpstream, identity: dict[str, Any]) -> None:
    """JSON carries lone surrogates ("\\ud800"); protobuf cannot, so only HTTP brings
    them. In a subject or an app one reached the audit writer and failed the group
    commit it shared with other callers' records: 24 of 48 innocent calls got 503
    (outside trial 9). Now a 400 that names the field, before any stage or upstream."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       **identity}).encode()  # ensure_ascii: the surrogate goes as \ud800
    request = urllib.request.Request(f"{gateway.base_url}/chat/completions", method="POST",
                                     data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert "contains lone surrogates" in json.loads(caught.value.read())["error"]["message"]
    assert upstream.received == []


# -- embeddings, responses, residency --------------------------------------------------------

def test_embeddings_inputs_are_inspected_and_token_arrays_refused(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    result = client(gateway).embeddings.create(
        model="e", input=["mail bo.chen@acme.com", "plain"])
    assert len(result.data) == 2
    assert upstream.received[0].json["input"] == ["mail <EMAIL_ADDRESS>", "plain"]
    with pytest.raises(openai.BadRequestError, match="token arrays"):
        client(gateway).embeddings.create(model="e", input=[[1, 2, 3]])


def test_responses_api_inspects_input_and_restores_output(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    result = client(gateway, **{"x-guardrail-tenant": "pseudo"}).responses.create(
        model="m", instructions="Be brief.", input="Remind nina.olsen@mail.org")
    assert "nina.olsen" not in upstream.received[0].body.decode()
    assert upstream.received[0].json["input"] == "Remind <EMAIL_ADDRESS_1>"
    assert result.output_text == "You said: Remind nina.olsen@mail.org"


def test_residency_routes_to_an_allowed_region_or_refuses(
        gateway: GatewaySidecar, upstream: RecordingUpstream,
        eu_upstream: RecordingUpstream) -> None:
    eu = {"x-guardrail-tenant": "eu-shop", "x-guardrail-user-region": "eu-west"}
    ask(gateway, "hello", **eu)
    assert len(eu_upstream.received) == 1
    assert upstream.received == []
    # Health data may only go to eu-central-1, which has no upstream here.
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway, "results for PAT-123456", **eu)
    assert caught.value.body["rule_ids"] == ["residency"]  # type: ignore[index]
    assert len(eu_upstream.received) == 1
    assert upstream.received == []


# -- the Responses API, streamed --------------------------------------------------------------

def _stream_response(gateway: GatewaySidecar, text: str = "go",
                     **headers: str) -> tuple[str, list[Any], Any]:
    """Through the SDK's streaming helper: the delta text shown, every event, the final
    response the helper assembled."""
    with client(gateway, **headers).responses.stream(model="m", input=text) as stream:
        events = list(stream)
        final = stream.get_final_response()
    shown = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    return shown, events, final


def test_a_responses_stream_restores_pseudonyms_and_is_valid_to_the_end(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    upstream.reset(splits=[13, 14, 20, 21, 22, 30])
    shown, events, final = _stream_response(gateway, "Remind nina.olsen@mail.org",
                                            **{"x-guardrail-tenant": "pseudo"})
    assert "nina.olsen" not in upstream.received[0].body.decode()
    assert upstream.received[0].json["stream"] is True
    assert shown == final.output_text == "You said: Remind nina.olsen@mail.org"
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))
    done = [e for e in events if e.type == "response.output_text.done"]
    assert [e.text for e in done] == [shown]


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 40), max_size=6))
def test_an_email_split_across_responses_events_is_caught_wherever_cut(
        gateway: GatewaySidecar, upstream: RecordingUpstream, cuts: list[int]) -> None:
    email = "maria.garcia@corp.net"
    said = f"Contact {email} for details."
    upstream.reset(lambda r, p: response_events(said, cuts))
    shown, events, final = _stream_response(gateway)
    everything = json.dumps([e.to_dict(warnings=False) for e in events])
    everything += json.dumps(final.to_dict(warnings=False))
    assert "maria" not in everything and "garcia" not in everything
    assert shown == final.output_text == "Contact <EMAIL_ADDRESS> for details."


def test_an_email_split_at_every_position_of_a_responses_stream_is_caught(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    email = "maria.garcia@corp.net"
    said = f"Contact {email} for details."
    start = said.index(email)
    for cut in range(start + 1, start + len(email)):
        upstream.reset(lambda r, p, cut=cut: response_events(said, [cut]))
        shown, _events, final = _stream_response(gateway)
        assert shown == final.output_text == "Contact <EMAIL_ADDRESS> for details.", cut


def test_a_card_split_across_responses_events_blocks_with_an_error_the_sdk_raises(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    said = f"Sure, the number is {CARD} as requested."
    start = said.index(CARD)
    for cut in range(start + 1, start + len(CARD)):
        upstream.reset(lambda r, p, cut=cut: response_events(said, [cut]))
        seen: list[str] = []

        def read(into: list[str] = seen) -> None:
            with client(gateway).responses.stream(model="m", input="go") as stream:
                into += [json.dumps(event.to_dict(warnings=False)) for event in stream]

        with pytest.raises(openai.APIError) as caught:
            read()
        assert caught.value.body["type"] == "guardrail_blocked", cut  # type: ignore[index]
        assert caught.value.body["audit_id"], cut  # type: ignore[index]
        assert "1111" not in "".join(seen), cut


def test_text_that_skips_the_deltas_is_inspected_before_it_is_sent(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    """A model (or a proxy) that puts its text only in the done and completed events."""
    said = f"Your card: {CARD}."
    events = [e for e in response_events(said) if e["type"] != "response.output_text.delta"]
    upstream.reset(lambda r, p: events)
    raw = _raw_responses_stream(gateway)
    assert "1111" not in raw
    assert '"guardrail_blocked"' in raw
    events = [e for e in response_events("Mail bo.chen@acme.com")
              if e["type"] != "response.output_text.delta"]
    upstream.reset(lambda r, p: events)
    _shown, _events, final = _stream_response(gateway)
    assert final.output_text == "Mail <EMAIL_ADDRESS>"


def _raw_responses_stream(gateway: GatewaySidecar) -> str:
    request = urllib.request.Request(
        f"{gateway.base_url}/responses", method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET_KEY}"},
        data=json.dumps({"model": "m", "stream": True, "input": "go"}).encode())
    with urllib.request.urlopen(request, timeout=30) as page:
        assert page.headers["Content-Type"].startswith("text/event-stream")
        return str(page.read().decode())


def test_a_responses_stream_cut_short_upstream_is_an_error_not_a_success(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    events = response_events("A perfectly fine answer.")[:-1]  # no response.completed
    upstream.reset(lambda r, p: events)
    with pytest.raises(openai.APIError) as caught:
        _stream_response(gateway)
    assert caught.value.body["type"] == "upstream_invalid_response"  # type: ignore[index]
    upstream.reset(lambda r, p: web.json_response(
        {"error": {"message": "upstream says 429", "type": "x", "code": "y"}}, status=429))
    with pytest.raises(openai.RateLimitError):
        _stream_response(gateway)


# -- per policy: a refusal text instead of an error ------------------------------------------

REFUSAL = "I can't share that here."
REFUSING = {"x-guardrail-tenant": "refusing"}


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory,
             upstream: RecordingUpstream) -> Iterator[GatewaySidecar]:
    """A sidecar whose tenant "refusing" gets the default policy with `on_block: refusal`."""
    tmp = tmp_path_factory.mktemp("refusing")
    shutil.copytree(TEST_POLICIES, tmp / "policies")
    (tmp / "policies" / "refusing.yaml").write_text(
        "name: refusing\nextends: default\nmatch: {tenants: [refusing]}\n"
        f"on_block: {{respond: refusal, refusal_text: \"{REFUSAL}\"}}\n")
    with gateway_sidecar(tmp / "data", upstream, policies=tmp / "policies") as running:
        yield running


def test_a_blocked_prompt_gets_the_policys_refusal_text_streamed_or_not(
        refusing: GatewaySidecar, upstream: RecordingUpstream) -> None:
    said = [{"role": "user", "content": f"Charge {CARD} please"}]
    raw = client(refusing, **REFUSING).chat.completions.with_raw_response.create(
        model="m", messages=said)
    answer = raw.parse()
    assert answer.choices[0].message.content == REFUSAL
    assert answer.choices[0].finish_reason == "content_filter"
    assert raw.headers["x-guardrail-blocked"] == "prompt"
    assert raw.headers["x-guardrail-audit-id"]
    chunks = list(client(refusing, **REFUSING).chat.completions.create(
        model="m", messages=said, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REFUSAL
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    result = client(refusing, **REFUSING).responses.create(model="m", input=said[0]["content"])
    assert result.output_text == REFUSAL
    assert upstream.received == []  # refused here: the model never saw the card
    with pytest.raises(openai.BadRequestError):  # other tenants: the error, as before
        client(refusing).chat.completions.create(model="m", messages=said)


def test_a_blocked_answer_is_replaced_by_the_refusal_text(
        refusing: GatewaySidecar, upstream: RecordingUpstream) -> None:
    upstream.reset(lambda r, p: chat_completion(f"Your card is {CARD}."))
    answer = client(refusing, **REFUSING).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "my card?"}])
    assert answer.choices[0].message.content == REFUSAL
    assert CARD not in answer.model_dump_json()
    upstream.reset(lambda r, p: response_object(f"Your card is {CARD}."))
    result = client(refusing, **REFUSING).responses.create(model="m", input="my card?")
    assert result.output_text == REFUSAL
    assert "1111" not in result.model_dump_json(warnings=False)


def test_a_stream_blocked_midway_ends_in_the_refusal_text_at_every_cut(
        refusing: GatewaySidecar, upstream: RecordingUpstream) -> None:
    said = f"Sure, the number is {CARD} as requested."
    start = said.index(CARD)
    for cut in range(start + 1, start + len(CARD), 3):
        upstream.reset(lambda r, p, cut=cut: chat_chunks(said, [cut]))
        chunks = list(client(refusing, **REFUSING).chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "go"}]))
        shown = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert "1111" not in shown, cut
        assert shown.endswith(REFUSAL), cut
        assert chunks[-1].choices[0].finish_reason == "content_filter", cut


def test_on_block_is_checked_when_the_policy_loads() -> None:
    from pydantic import ValidationError

    from sidecar.policy.model import OnBlock

    assert OnBlock().respond == "error"
    for bad in ({"respond": "silence"}, {"refusal_text": ""}, {"refusal_txt": "x"}):
        with pytest.raises(ValidationError):
            OnBlock.model_validate(bad)
