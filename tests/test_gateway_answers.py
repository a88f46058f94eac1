"""The gateway's answers beyond one plain text, through the official `openai` SDK against
a real recording upstream: several choices (`n > 1`), a streamed Responses call the
policy answers with a refusal, and server-side tool items in the Responses API.

Invariants, as an attacker (the app, or a hostile model upstream) would test them:
each choice is inspected as a completion of its own (a value the model splits across
chunks of choice 1 is caught while choice 0 flows) with its own audit record naming
it; pseudonyms come back per choice; a streamed Responses block in refusal mode
reads as a normal answer in the SDK and never shows the blocked value; every text a
tool item carries, at any depth, is inspected, and an item the gateway cannot read is
refused unless the policy passes it; a broken upstream (a choice index out of range,
too many choices, malformed events) is an error, never a success.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import TEST_POLICIES
from tests.gateway import (
    GatewaySidecar,
    RecordingUpstream,
    audit_rows,
    gateway_sidecar,
    ids_masked,
    response_events,
    response_object,
)

KEY = "sk-test-0123456789"
CARD = "4111 1111 1111 1111"
REFUSAL = "I can't share that here."
REFUSING = {"x-guardrail-tenant": "refusing"}
PSEUDO = {"x-guardrail-tenant": "pseudo"}
PASSING = {"x-guardrail-tenant": "passing"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    yield recording
    recording.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            upstream: RecordingUpstream) -> Iterator[GatewaySidecar]:
    """The test policies, plus tenant "refusing" (on_block: refusal) and tenant
    "passing" (generated images and input images pass uninspected)."""
    tmp = tmp_path_factory.mktemp("answers")
    shutil.copytree(TEST_POLICIES, tmp / "policies")
    (tmp / "policies" / "refusing.yaml").write_text(
        "name: refusing\nextends: default\nmatch: {tenants: [refusing]}\n"
        f"on_block: {{respond: refusal, refusal_text: \"{REFUSAL}\"}}\n")
    (tmp / "policies" / "passing.yaml").write_text(
        "name: passing\nextends: default\nmatch: {tenants: [passing]}\n"
        "gateway: {pass_items: [image_generation_call, input_image, vendor_widget]}\n")
    with gateway_sidecar(tmp / "data", upstream, policies=tmp / "policies") as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(upstream: RecordingUpstream) -> None:
    upstream.reset()


def client(gateway: GatewaySidecar, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0, timeout=30,
                         default_headers=headers or None)


BASE = {"id": "chatcmpl-n", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def choice_chunks(said: list[str], cuts: list[list[int]]) -> list[dict[str, Any]]:
    """A model streaming several choices at once: each choice's text cut at its own
    offsets, the pieces interleaved (choice 0's first piece, choice 1's first, ...)."""
    pieces = []
    for text, where in zip(said, cuts, strict=True):
        marks = sorted({c for c in where if 0 < c < len(text)})
        pieces.append([text[a:b] for a, b in zip([0, *marks], [*marks, len(text)],
                                                  strict=True)])
    chunks = [{**BASE, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None} for i in range(len(said))]}]
    for step in range(max(len(p) for p in pieces)):
        for index, mine in enumerate(pieces):
            if step < len(mine):
                chunks.append({**BASE, "choices": [{"index": index, "delta": {
                    "content": mine[step]}, "finish_reason": None}]})
    chunks += [{**BASE, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]}
               for i in range(len(said))]
    return chunks


def read_choices(gateway: GatewaySidecar, n: int, **headers: str) -> tuple[dict[int, str],
                                                                            dict[int, str]]:
    """Stream a chat completion with `n` choices through the SDK: text and finish per choice."""
    shown: dict[int, str] = {}
    finish: dict[int, str] = {}
    for chunk in client(gateway, **headers).chat.completions.create(
            model="m", n=n, stream=True, messages=[{"role": "user", "content": "go"}]):
        for choice in chunk.choices:
            shown[choice.index] = shown.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    return shown, finish


def two_choices(first: str, second: str) -> dict[str, Any]:
    return {"id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": i, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text}}
                        for i, text in enumerate([first, second])],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


# -- several choices ---------------------------------------------------------------------------

def test_each_choice_is_inspected_and_restored_on_its_own_with_an_audit_record_each(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    upstream.reset(lambda r, p: two_choices("Mail <EMAIL_ADDRESS_1> today.",
                                            "Write to <EMAIL_ADDRESS_1>, not bo@corp.net."))
    raw = client(gateway, **PSEUDO, **{"x-guardrail-request-id": "n-unary"}).chat \
        .completions.with_raw_response.create(
            model="m", n=2, messages=[{"role": "user", "content": "Mail ada@acme.com"}])
    answer = raw.parse()
    assert "ada@acme.com" not in upstream.received[0].body.decode()
    assert [c.message.content for c in answer.choices] == [
        "Mail ada@acme.com today.", "Write to ada@acme.com, not <EMAIL_ADDRESS_2>."]
    rows = audit_rows(gateway.audit_dir, "n-unary")
    completions = [tags for _decision, tags in rows if "choice" in tags]
    assert sorted(tags["choice"] for tags in completions) == ["0", "1"]


def test_a_blocked_choice_blocks_the_answer_or_alone_gets_the_refusal(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    upstream.reset(lambda r, p: two_choices("All fine here.", f"Your card is {CARD}."))
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(
            model="m", n=2, messages=[{"role": "user", "content": "card?"}])
    assert caught.value.body["choice"] == 1  # type: ignore[index]
    assert "1111" not in ids_masked(json.dumps(caught.value.body))
    answer = client(gateway, **REFUSING).chat.completions.create(
        model="m", n=2, messages=[{"role": "user", "content": "card?"}])
    assert [c.message.content for c in answer.choices] == ["All fine here.", REFUSAL]
    assert [c.finish_reason for c in answer.choices] == ["stop", "content_filter"]


def test_a_card_split_in_choice_1_is_caught_while_choice_0_flows(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    calm = "Here is a calm answer that goes on for a while without any secrets."
    said = f"Sure, the number is {CARD} as requested."
    start = said.index(CARD)
    for cut in range(start + 1, start + len(CARD), 2):
        upstream.reset(lambda r, p, cut=cut: choice_chunks(
            [calm, said], [list(range(5, len(calm), 5)), [cut - 3, cut]]))
        shown, finish = read_choices(gateway, 2, **REFUSING)
        assert shown[0] == calm and finish[0] == "stop", cut
        assert "1111" not in shown[1] and shown[1].endswith(REFUSAL), cut
        assert finish[1] == "content_filter", cut
        with pytest.raises(openai.APIError) as caught:  # on_block: error
            read_choices(gateway, 2)
        assert caught.value.body["type"] == "guardrail_blocked", cut  # type: ignore[index]


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.lists(st.integers(1, 45), max_size=5), min_size=3, max_size=3))
def test_emails_split_across_three_interleaved_choices_come_back_per_choice(
        gateway: GatewaySidecar, upstream: RecordingUpstream, cuts: list[list[int]]) -> None:
    said = ["First: <EMAIL_ADDRESS_1> it is.", "Second: mail <EMAIL_ADDRESS_2> now.",
            "Third, nobody: jo.kim@corp.net."]
    upstream.reset(lambda r, p: choice_chunks(said, cuts))
    shown: dict[int, str] = {}
    for chunk in client(gateway, **PSEUDO).chat.completions.create(
            model="m", n=3, stream=True, messages=[{"role": "user", "content":
                                                    "ada@acme.com and bo.li@mail.org"}]):
        for choice in chunk.choices:
            shown[choice.index] = shown.get(choice.index, "") + (choice.delta.content or "")
    assert shown == {0: "First: ada@acme.com it is.", 1: "Second: mail bo.li@mail.org now.",
                     2: "Third, nobody: <EMAIL_ADDRESS_3>."}


def test_streamed_choices_are_audited_one_record_per_choice(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    upstream.reset(lambda r, p: choice_chunks(["One answer.", "Another answer."], [[4], [6]]))
    read_choices(gateway, 2, **{"x-guardrail-request-id": "n-stream"})
    rows = audit_rows(gateway.audit_dir, "n-stream")
    streams = sorted((tags["choice"], tags["field"], tags["stream"]) for _d, tags in rows
                     if "stream" in tags)
    assert streams == [("0", "content", "complete"), ("1", "content", "complete")]


def test_a_hostile_upstream_cannot_open_choices_nobody_asked_for(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    for index in (2, 7, 10**9, -1):
        upstream.reset(lambda r, p, index=index: [{**BASE, "choices": [{
            "index": index, "delta": {"content": "hello"}, "finish_reason": None}]}])
        with pytest.raises(openai.APIError) as caught:
            read_choices(gateway, 2)
        assert caught.value.body["type"] == "upstream_invalid_response", index  # type: ignore[index]
    upstream.reset(lambda r, p: two_choices("one", "two"))  # two answers to n=1
    with pytest.raises(openai.InternalServerError) as unary:
        client(gateway).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])
    assert unary.value.status_code == 502


@pytest.mark.parametrize("n", [0, 129, 10**6, -3, 2.5, True, "2"])
def test_a_huge_or_odd_n_is_refused_before_the_upstream(
        gateway: GatewaySidecar, upstream: RecordingUpstream, n: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="n: expected an integer"):
        client(gateway).chat.completions.create(
            model="m", n=n, messages=[{"role": "user", "content": "hi"}])
    assert upstream.received == []


# -- a streamed Responses call answered with the policy's refusal ------------------------------

def _stream_response(gateway: GatewaySidecar, text: str = "go",
                     **headers: str) -> tuple[str, list[Any], Any]:
    with client(gateway, **headers).responses.stream(model="m", input=text) as stream:
        events = list(stream)
        final = stream.get_final_response()
    shown = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    return shown, events, final


def _everything(events: list[Any], final: Any) -> str:
    """Every byte the client got, but its random ids (tests.gateway.ids_masked: a test
    that cuts a stream at every point makes dozens of refusal ids, and one held `1111`)."""
    return ids_masked(json.dumps([e.to_dict(warnings=False) for e in events])
                      + final.model_dump_json(warnings=False))


def test_a_blocked_prompt_streamed_through_responses_gets_the_refusal_as_an_answer(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    shown, events, final = _stream_response(gateway, f"Charge {CARD} please", **REFUSING)
    assert shown == final.output_text == REFUSAL
    assert events[-1].type == "response.completed" and final.status == "completed"
    assert upstream.received == []


def test_a_responses_stream_blocked_midway_ends_in_the_refusal_at_every_cut(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    said = f"Sure, the number is {CARD} as requested."
    start = said.index(CARD)
    for cut in range(start + 1, start + len(CARD), 2):
        upstream.reset(lambda r, p, cut=cut: response_events(said, [cut]))
        shown, events, final = _stream_response(gateway, **REFUSING)
        assert "1111" not in _everything(events, final), cut
        assert shown.endswith(REFUSAL), cut
        assert said.startswith(shown.removesuffix(REFUSAL)), cut  # what was released
        assert final.output_text == shown, cut
        assert [item.status for item in final.output] == ["incomplete", "completed"], cut
        numbers = [e.sequence_number for e in events]
        assert numbers == sorted(set(numbers)), cut


def test_a_function_call_blocked_midway_is_cut_and_followed_by_the_refusal(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    args = json.dumps({"card": CARD, "note": "charge it"})
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "charge",
            "arguments": "", "status": "in_progress"}
    head = {**response_object(""), "status": "in_progress", "output": []}
    where = {"item_id": "fc_1", "output_index": 0}
    events = [{"type": "response.created", "response": head},
              {"type": "response.output_item.added", "output_index": 0, "item": item},
              *({"type": "response.function_call_arguments.delta", **where,
                 "delta": args[i:i + 4]} for i in range(0, len(args), 4)),
              {"type": "response.function_call_arguments.done", **where, "arguments": args},
              {"type": "response.output_item.done", "output_index": 0,
               "item": {**item, "arguments": args, "status": "completed"}},
              {"type": "response.completed", "response": {
                  **head, "status": "completed",
                  "output": [{**item, "arguments": args, "status": "completed"}]}}]
    upstream.reset(lambda r, p: events)
    shown, seen, final = _stream_response(gateway, **REFUSING)
    assert "1111" not in _everything(seen, final)
    assert final.output[0].type == "function_call" and final.output[0].status == "incomplete"
    assert final.output_text == shown == REFUSAL


# -- server-side tool items in the Responses API ------------------------------------------------

TOOL_INPUT: list[dict[str, Any]] = [
    {"type": "code_interpreter_call", "id": "ci_1", "container_id": "c1", "status": "completed",
     "code": "send('ada@acme.com')", "outputs": [{"type": "logs", "logs": "sent to ada@acme.com"}]},
    {"type": "mcp_call", "id": "mcp_1", "server_label": "crm", "name": "lookup",
     "arguments": '{"email": "bo.li@mail.org"}', "output": "bo.li@mail.org is a customer"},
    {"type": "file_search_call", "id": "fs_1", "status": "completed",
     "queries": ["invoices of cy.wu@corp.net"],
     "results": [{"file_id": "f1", "filename": "a.txt", "score": 0.5,
                  "text": "Invoice for cy.wu@corp.net",
                  "attributes": {"owner": "cy.wu@corp.net"}}]},
    {"type": "web_search_call", "id": "ws_1", "status": "completed",
     "action": {"type": "search", "query": "who is di.ng@mail.org",
                "sources": [{"type": "url", "url": "https://x.test/?q=di.ng@mail.org"}]}},
    {"type": "function_call", "call_id": "call_1", "name": "f",
     "arguments": '{"to": "ed.ma@acme.com"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "mailed ed.ma@acme.com"},
    {"type": "function_call_output", "call_id": "call_2",
     "output": [{"type": "input_text", "text": "part for fa.lu@corp.net"}]},
    {"type": "mcp_approval_response", "approval_request_id": "a1", "approve": False,
     "reason": "not for gi.ho@mail.org"},
    {"type": "local_shell_call", "id": "sh_1", "call_id": "call_3", "status": "completed",
     "action": {"type": "exec", "command": ["mail", "hu.ji@acme.com"],
                "env": {"TO": "hu.ji@acme.com"}}},
    {"role": "user", "content": "and that is all"},
]
TOOL_EMAILS = ["ada@acme.com", "bo.li@mail.org", "cy.wu@corp.net", "di.ng@mail.org",
               "ed.ma@acme.com", "fa.lu@corp.net", "gi.ho@mail.org", "hu.ji@acme.com"]


def test_every_text_in_tool_items_sent_as_input_is_inspected(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    client(gateway).responses.create(model="m", input=TOOL_INPUT)  # type: ignore[arg-type]
    sent = upstream.received[0]
    for email in TOOL_EMAILS:
        assert email not in sent.everything(), email
    items = sent.json["input"]
    assert items[0]["outputs"][0]["logs"] == "sent to <EMAIL_ADDRESS>"
    assert items[1]["name"] == "lookup" and items[1]["server_label"] == "crm"  # names kept
    assert items[2]["results"][0]["file_id"] == "f1"


def _nest(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["mcp_call", "code_interpreter_call", "file_search_call",
                             "web_search_call", "custom_tool_call", "shell_call"]),
       field=st.sampled_from(["output", "extra", "notes", "action", "results"]),
       depth=st.integers(0, 12))
def test_nested_text_in_a_tool_item_is_inspected_wherever_it_hides(
        gateway: GatewaySidecar, upstream: RecordingUpstream, kind: str, field: str,
        depth: int) -> None:
    upstream.reset()
    item = {"type": kind, "id": "x_1", field: _nest(depth, "owner jo.kim@corp.net")}
    client(gateway).responses.create(model="m", input=[  # type: ignore[arg-type]
        item, {"role": "user", "content": "next"}])
    assert "jo.kim@corp.net" not in upstream.received[0].everything()


def test_an_item_the_gateway_cannot_read_is_refused_unless_the_policy_passes_it(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    image = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
             "result": "iVBORw0KGgo=", "revised_prompt": "a cat for kim.lee@mail.org"}
    unknown = {"type": "vendor_widget", "id": "w1", "payload": {"note": "lena.berg@acme.com"}}
    for item, kind in ((image, "image_generation_call"), (unknown, "vendor_widget")):
        with pytest.raises(openai.BadRequestError) as caught:
            client(gateway).responses.create(model="m", input=[  # type: ignore[list-item]
                item, {"role": "user", "content": "go on"}])
        assert caught.value.body["code"] == "uninspectable_item"  # type: ignore[index]
        assert f"input[0]: a '{kind}' item" in str(caught.value)
        assert upstream.received == []
    client(gateway, **PASSING).responses.create(model="m", input=[  # type: ignore[list-item]
        image, unknown, {"role": "user", "content": "go on"}])
    sent = upstream.received[0]
    assert sent.json["input"][0]["result"] == "iVBORw0KGgo="  # the blob passes
    for email in ("kim.lee@mail.org", "lena.berg@acme.com"):  # its text does not
        assert email not in sent.everything()


def test_tool_items_in_an_answer_are_inspected_and_unknown_ones_refused(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    answer = {**response_object("done"), "output": [
        {"type": "code_interpreter_call", "id": "ci_1", "container_id": "c", "code": "x=1",
         "status": "completed", "outputs": [{"type": "logs", "logs": f"card {CARD}"}]},
        *response_object("done")["output"]]}
    upstream.reset(lambda r, p: answer)
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).responses.create(model="m", input="go")
    assert caught.value.body["type"] == "guardrail_blocked"  # type: ignore[index]
    upstream.reset(lambda r, p: {**response_object("ok"), "output": [
        {"type": "mcp_call", "id": "m1", "server_label": "crm", "name": "find",
         "arguments": "{}", "output": "found mo.ra@corp.net"}]})
    result = client(gateway).responses.create(model="m", input="go")
    assert result.output[0].output == "found <EMAIL_ADDRESS>"  # type: ignore[union-attr]
    upstream.reset(lambda r, p: {**response_object("ok"), "output": [
        {"type": "vendor_widget", "id": "w", "text": "anything"}]})
    with pytest.raises(openai.InternalServerError) as broken:
        client(gateway).responses.create(model="m", input="go")
    assert broken.value.status_code == 502
    assert broken.value.body["code"] == "uninspectable_item"  # type: ignore[index]


def _tool_stream(item: dict[str, Any], deltas: list[tuple[str, str, str]]) -> list[Any]:
    """Events streaming one tool item: added (texts empty), deltas, done, completed."""
    head = {**response_object(""), "status": "in_progress", "output": []}
    empty = {**item, **{field: "" for _type, field, _text in deltas}, "status": "in_progress"}
    where = {"item_id": item["id"], "output_index": 0}
    events: list[Any] = [{"type": "response.created", "response": head},
                         {"type": "response.output_item.added", "output_index": 0,
                          "item": empty},
                         {"type": "response.mcp_call.in_progress", **where,
                          "extra": "lena.berg@acme.com"}]
    for kind, _field, text in deltas:
        events += [{"type": f"{kind}.delta", **where, "delta": text[i:i + 5]}
                   for i in range(0, len(text), 5)]
    events += [{"type": f"{kind}.done", **where, field: text} for kind, field, text in deltas]
    events += [{"type": "response.output_item.done", "output_index": 0, "item": item},
               {"type": "response.completed", "response": {
                   **head, "status": "completed", "output": [item]}}]
    return events


def test_streamed_tool_items_are_inspected_as_they_come_and_when_done(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    code = "print('mail jo.kim@corp.net now')"
    item = {"type": "code_interpreter_call", "id": "ci_1", "container_id": "c",
            "status": "completed", "code": code,
            "outputs": [{"type": "logs", "logs": "mailed lena.berg@acme.com"}]}
    upstream.reset(lambda r, p: _tool_stream(
        item, [("response.code_interpreter_call_code", "code", code)]))
    _shown, events, final = _stream_response(gateway)
    everything = _everything(events, final)
    assert "jo.kim" not in everything and "lena.berg" not in everything
    assert final.output[0].code == "print('mail <EMAIL_ADDRESS> now')"  # type: ignore[union-attr]
    assert final.output[0].outputs[0].logs == "mailed <EMAIL_ADDRESS>"  # type: ignore[union-attr]
    args = json.dumps({"card": CARD})
    mcp = {"type": "mcp_call", "id": "m1", "server_label": "crm", "name": "pay",
           "arguments": args, "output": "ok"}
    upstream.reset(lambda r, p: _tool_stream(
        mcp, [("response.mcp_call_arguments", "arguments", args)]))
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught, \
            client(gateway).responses.stream(model="m", input="go") as stream:
        seen += [json.dumps(e.to_dict(warnings=False)) for e in stream]
    assert caught.value.body["type"] == "guardrail_blocked"  # type: ignore[index]
    assert "1111" not in "".join(seen)


def test_hostile_responses_streams_are_errors_not_leaks(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    """Unknown event types are dropped, unknown items refused, garbage is an error."""
    said = "A fine answer."
    events = response_events(said)
    sneaky = [*events[:4], {"type": "response.vendor.note", "text": "lena.berg@acme.com"},
              {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
               "content_index": 0, "delta": "", "secret": "lena.berg@acme.com"}, *events[4:]]
    upstream.reset(lambda r, p: sneaky)
    raw = _raw_stream(gateway)
    assert "lena.berg" not in raw and '"response.completed"' in raw
    widget = {"type": "vendor_widget", "id": "w", "text": "hi"}
    upstream.reset(lambda r, p: [events[0], {"type": "response.output_item.added",
                                             "output_index": 0, "item": widget}])
    with pytest.raises(openai.APIError) as caught:
        _stream_response(gateway)
    assert caught.value.body["code"] == "uninspectable_item"  # type: ignore[index]
    for garbage in ("{not json", "[1, 2]", '{"type": 7}', json.dumps(
            {"type": "response.output_text.delta", "output_index": "zero", "delta": "x"})):
        upstream.reset(lambda r, p, garbage=garbage: [events[0], garbage])
        raw = _raw_stream(gateway)
        assert '"upstream_invalid_response"' in raw, garbage


def _raw_stream(gateway: GatewaySidecar) -> str:
    request = urllib.request.Request(
        f"{gateway.base_url}/responses", method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        data=json.dumps({"model": "m", "stream": True, "input": "go"}).encode())
    with urllib.request.urlopen(request, timeout=30) as page:
        return str(page.read().decode())


def test_the_upstream_is_not_asked_with_a_blocked_tool_output(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).responses.create(model="m", input=[  # type: ignore[list-item]
            {"type": "mcp_call", "id": "m", "server_label": "s", "name": "n",
             "arguments": "{}", "output": f"card {CARD}"},
            {"role": "user", "content": "what did the tool say?"}])
    assert caught.value.body["type"] == "guardrail_blocked"  # type: ignore[index]
    assert upstream.received == []


# -- chat answers: every text field, not only content --------------------------------------------

def test_text_beyond_content_in_a_chat_answer_is_inspected(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    """Reasoning text (as DeepSeek, vLLM or Qwen send it), custom tool input, citation
    titles: the model's text wherever the answer carries it."""
    answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [{
        "index": 0, "finish_reason": "stop", "logprobs": None, "message": {
            "role": "assistant", "content": "Done.",
            "reasoning_content": "the user is jo.kim@corp.net",
            "annotations": [{"type": "url_citation", "url_citation": {
                "url": "https://x.test", "title": "Profile of lena.berg@acme.com",
                "start_index": 0, "end_index": 1}}],
            "tool_calls": [{"id": "t1", "type": "custom", "custom": {
                "name": "mail", "input": "to: bo.li@mail.org"}}]}}]}
    upstream.reset(lambda r, p: answer)
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}])
    shown = raw.text
    for email in ("jo.kim@corp.net", "lena.berg@acme.com", "bo.li@mail.org"):
        assert email not in shown, email
    assert json.loads(shown)["choices"][0]["message"]["reasoning_content"] == \
        "the user is <EMAIL_ADDRESS>"
    spoken = {**answer, "choices": [{**answer["choices"][0], "message": {
        "role": "assistant", "content": None, "audio": {
            "id": "a1", "data": "UklGRg==", "transcript": "hi", "expires_at": 1}}}]}
    upstream.reset(lambda r, p: spoken)
    with pytest.raises(openai.InternalServerError) as caught:
        client(gateway).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "uninspectable_item"  # type: ignore[index]


def _raw_chat_stream(gateway: GatewaySidecar, n: int = 1) -> list[Any]:
    request = urllib.request.Request(
        f"{gateway.base_url}/chat/completions", method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        data=json.dumps({"model": "m", "stream": True, "n": n, "messages": [
            {"role": "user", "content": "go"}]}).encode())
    with urllib.request.urlopen(request, timeout=30) as page:
        assert page.headers["Content-Type"].startswith("text/event-stream")
        raw = page.read().decode()
    events = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


def test_streamed_chat_extras_are_inspected_or_dropped(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    """A hostile upstream hides text in reasoning deltas, legacy function_call
    arguments, extra chunk and choice fields, nested delta objects: inspected where
    the API defines text, dropped where it does not; never passed on as it came."""
    said = "the user is jo.kim@corp.net, ok"
    chunks: list[Any] = [{**BASE, "note": "lena.berg@acme.com", "choices": [{
        "index": 0, "delta": {"role": "assistant"}, "finish_reason": None,
        "content_filter_results": {"hate": "lena.berg@acme.com"}}]}]
    chunks += [{**BASE, "choices": [{"index": 0, "delta": {"reasoning_content": said[i:i + 4]},
                                     "finish_reason": None}]} for i in range(0, len(said), 4)]
    chunks += [{**BASE, "choices": [{"index": 0, "delta": {
        "function_call": {"name": "mail", "arguments": '{"to": "bo.li@mail.org"}'},
        "audio": {"transcript": "lena.berg@acme.com"}, "weird": {"x": ["lena.berg@acme.com"]},
        "flags": {"n": 1}}, "finish_reason": None}]},
               {**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    upstream.reset(lambda r, p: chunks)
    events = _raw_chat_stream(gateway)
    assert events[-1] == "[DONE]"
    everything = json.dumps(events)
    for email in ("jo.kim@corp.net", "lena.berg@acme.com", "bo.li@mail.org"):
        assert email not in everything, email
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "")
                        for c in events[:-1] if c.get("choices"))
    assert reasoning == "the user is <EMAIL_ADDRESS>, ok"
    args = "".join(c["choices"][0]["delta"].get("function_call", {}).get("arguments", "")
                   for c in events[:-1] if c.get("choices"))
    assert json.loads(args) == {"to": "<EMAIL_ADDRESS>"}


EVENT = st.one_of(
    st.builds(lambda text: {**BASE, "choices": [{"index": 0, "delta": {"content": text},
                                                 "finish_reason": None}]},
              st.sampled_from(["Sure, ", "4111 ", "1111 ", "1111", " 1111", ". ", "ok "])),
    st.sampled_from([
        "{not json", "[]", "null", '"text"', "7", "{}",
        json.dumps({**BASE, "choices": "4111 1111 1111 1111"}),
        json.dumps({**BASE, "choices": [{"index": "0", "delta": {"content": "x"}}]}),
        json.dumps({**BASE, "choices": [{"index": 0, "delta": "4111 1111 1111 1111"}]}),
        json.dumps({**BASE, "choices": [{"index": 0, "delta": {"content": 4111}}]}),
        json.dumps({**BASE, "choices": [{"index": 3, "delta": {"content": "x"}}]}),
        json.dumps({**BASE, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "4111 1111 "}}]}}]}),
        json.dumps({**BASE, "choices": [{"index": 0, "delta": {"tool_calls": "1111 1111"}}]}),
        json.dumps({"error": {"message": "upstream broke", "type": "server_error"}}),
        ": a comment line", "event: ping", "[DONE]"]))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENT, max_size=14))
@example(events=[json.dumps({**BASE, "choices": f"card {CARD}"})])
@example(events=[json.dumps({**BASE, "choices": [], "usage": {"note": f"card {CARD}"}})])
def test_a_malformed_chat_stream_never_crashes_nor_leaks_a_card(
        gateway: GatewaySidecar, upstream: RecordingUpstream, events: list[Any]) -> None:
    upstream.reset(lambda r, p: events)
    received = _raw_chat_stream(gateway)
    assert received, events
    last = received[-1]
    assert last == "[DONE]" or "error" in last, received
    assert CARD not in json.dumps(received)
    shown = "".join(
        (c["choices"][0]["delta"].get("content") or "") +
        "".join(call.get("function", {}).get("arguments", "")
                for call in c["choices"][0]["delta"].get("tool_calls") or [])
        for c in received if isinstance(c, dict) and c.get("choices"))
    digits = "".join(ch for ch in shown if ch.isdigit())
    assert "4111111111111111" not in digits, shown


def test_text_hidden_outside_the_choices_of_a_chat_answer_is_inspected_too(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    base = two_choices("All fine.", "Fine too.")
    hidden = {**base, "note": {"why": [f"card {CARD}"]}}
    upstream.reset(lambda r, p: hidden)
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(
            model="m", n=2, messages=[{"role": "user", "content": "hi"}])
    assert "1111" not in ids_masked(json.dumps(caught.value.body))
    raw = client(gateway, **REFUSING).chat.completions.with_raw_response.create(
        model="m", n=2, messages=[{"role": "user", "content": "hi"}])
    assert "1111" not in raw.text
    assert [c.message.content for c in raw.parse().choices] == [REFUSAL, "Fine too."]
    in_choice = {**base, "choices": [{**base["choices"][0], "extra": "mail jo.kim@corp.net"},
                                     base["choices"][1]]}
    upstream.reset(lambda r, p: in_choice)
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="m", n=2, messages=[{"role": "user", "content": "hi"}])
    assert "jo.kim" not in raw.text
    for broken in ({**base, "choices": f"card {CARD}"}, {**base, "choices": [f"card {CARD}"]},
                   {**base, "choices": [{"index": 0, "message": f"card {CARD}"}]}):
        upstream.reset(lambda r, p, broken=broken: broken)
        with pytest.raises(openai.InternalServerError) as failed:
            client(gateway).chat.completions.create(
                model="m", n=2, messages=[{"role": "user", "content": "hi"}])
        assert failed.value.status_code == 502
        assert "1111" not in json.dumps(failed.value.body)


def test_text_a_request_sends_besides_its_messages_is_inspected(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    """Tool descriptions, a predicted output, a stored prompt's variables: the model
    reads them as it reads the messages."""
    client(gateway).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}],
        tools=[{"type": "function", "function": {
            "name": "notify", "description": "Notify jo.kim@corp.net",
            "parameters": {"type": "object"}}}],
        prediction={"type": "content", "content": "Dear lena.berg@acme.com,"})
    sent = upstream.received[0]
    assert "jo.kim" not in sent.everything() and "lena.berg" not in sent.everything()
    assert sent.json["tools"][0]["function"]["name"] == "notify"
    upstream.reset()
    client(gateway).responses.create(
        model="m", input="hi", prompt={"id": "pmpt_1", "variables": {
            "customer": "bo.li@mail.org"}},
        tools=[{"type": "function", "name": "f", "description": "Mail cy.wu@corp.net",
                "parameters": {"type": "object"}, "strict": False}])
    sent = upstream.received[0]
    assert "bo.li" not in sent.everything() and "cy.wu" not in sent.everything()
    assert sent.json["prompt"]["id"] == "pmpt_1"


_HEAD = {**response_object(""), "status": "in_progress", "output": []}
_WHERE = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
RESPONSE_EVENT = st.one_of(
    st.builds(lambda text: {"type": "response.output_text.delta", **_WHERE, "delta": text},
              st.sampled_from(["Sure, ", "4111 ", "1111 ", "1111", " 1111", ". "])),
    st.sampled_from([
        {"type": "response.created", "response": _HEAD},
        {"type": "response.output_item.added", "output_index": 0, "item": {
            "type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress",
            "content": []}},
        {"type": "response.content_part.added", **_WHERE,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.done", **_WHERE, "text": f"card {CARD}"},
        {"type": "response.output_item.done", "output_index": 0, "item": {
            "type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": f"card {CARD}", "annotations": []}]}},
        {"type": "response.output_item.added", "output_index": 1, "item": {
            "type": "mcp_call", "id": "m", "server_label": "s", "name": "n",
            "arguments": "", "output": {"deep": [f"{CARD}"]}}},
        {"type": "response.mcp_call_arguments.delta", "item_id": "m", "output_index": 1,
         "delta": "4111 1111 "},
        {"type": "response.output_item.added", "output_index": 2, "item": {
            "type": "vendor_widget", "id": "w", "text": CARD}},
        {"type": "response.completed", "response": {**response_object(f"card {CARD}")}},
        {"type": "response.vendor.event", "text": CARD},
        {"type": "response.output_text.delta", "output_index": "x", "delta": "1"},
        {"type": "error", "message": "upstream failed", "code": "server_error"},
    ]),
    st.sampled_from(["{not json", "[]", "null", '"text"', "[DONE]", ": comment"]))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(RESPONSE_EVENT, max_size=12))
def test_a_hostile_responses_stream_never_crashes_nor_leaks_a_card(
        gateway: GatewaySidecar, upstream: RecordingUpstream, events: list[Any]) -> None:
    upstream.reset(lambda r, p: events)
    raw = _raw_stream(gateway)
    blocks = [block for block in raw.split("\n\n") if block]
    assert blocks, events
    sent = [json.loads(block.rpartition("data: ")[2]) for block in blocks]
    # Not even across events: every string the client got, joined, read without the
    # spaces and dashes a card is written with (a word between two groups, as in
    # "4111 Sure, 1111 1111 1111", makes no card for a reader or a detector).
    joined = re.sub(r"[\s-]", "", "".join(_strings_in(sent)))
    assert "4111111111111111" not in joined, raw
    last = sent[-1]
    assert last["type"] in ("response.completed", "response.incomplete", "response.failed",
                            "error"), raw


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings_in(item)]
    return []


def test_a_refusal_when_the_text_skips_the_deltas_still_reads_as_an_answer(
        gateway: GatewaySidecar, upstream: RecordingUpstream) -> None:
    said = f"Your card: {CARD}."
    for drop in (("response.output_text.delta",),
                 ("response.output_text.delta", "response.output_text.done",
                  "response.content_part.done", "response.output_item.done")):
        events = [e for e in response_events(said) if e["type"] not in drop]
        upstream.reset(lambda r, p, events=events: events)
        shown, seen, final = _stream_response(gateway, **REFUSING)
        assert "1111" not in _everything(seen, final), drop
        assert final.output_text == shown == REFUSAL, drop
