"""LiteLLM's Generic Guardrail API, as LiteLLM's proxy calls it (a contract test).

The request and response schemas below are transcribed from LiteLLM's own types
(`litellm/types/proxy/guardrails/guardrail_hooks/generic_guardrail_api.py`:
GenericGuardrailAPIRequest and GenericGuardrailAPIResponse) and its hook
(`generic_guardrail_api.py`: POST `{api_base}/beta/litellm_basic_guardrail_api`,
raise_for_status, then `action` BLOCKED / NONE / GUARDRAIL_INTERVENED). Every request
we send validates against the request schema, every answer against the response
schema; then the sidecar's behaviour is checked through it: pre_call pseudonymizes,
post_call restores in the same trace, blocks block, tool descriptions are inspected.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway import GatewaySidecar, RecordingUpstream, gateway_sidecar, ids_masked

_NULLABLE_STRINGS = {"type": ["array", "null"], "items": {"type": "string"}}
REQUEST_SCHEMA = {
    "type": "object",
    "required": ["input_type", "litellm_call_id", "litellm_trace_id", "structured_messages",
                 "images", "tools", "texts", "request_data",
                 "additional_provider_specific_params"],
    "properties": {
        "input_type": {"enum": ["request", "response"]},
        "litellm_call_id": {"type": ["string", "null"]},
        "litellm_trace_id": {"type": ["string", "null"]},
        "structured_messages": {"type": ["array", "null"], "items": {"type": "object"}},
        "images": _NULLABLE_STRINGS,
        "tools": {"type": ["array", "null"], "items": {"type": "object"}},
        "texts": _NULLABLE_STRINGS,
        "request_data": {"type": "object", "additionalProperties": {
            "type": ["string", "null"]}},
        "additional_provider_specific_params": {"type": ["object", "null"]},
        # Since LiteLLM 1.108 (checked against 1.108.7 by `make litellm-e2e`):
        "request_headers": {"type": ["object", "null"],
                            "additionalProperties": {"type": "string"}},
        "litellm_version": {"type": ["string", "null"]},
        "model": {"type": ["string", "null"]},
        "tool_calls": {"type": ["array", "null"], "items": {
            "type": "object", "required": ["function"], "properties": {
                "function": {"type": "object", "properties": {
                    "name": {"type": ["string", "null"]},
                    "arguments": {"type": ["string", "null"]}}}}}},
    },
    "additionalProperties": False,
}
RESPONSE_SCHEMA = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"enum": ["BLOCKED", "NONE", "GUARDRAIL_INTERVENED"]},
        "blocked_reason": {"type": ["string", "null"]},
        "texts": _NULLABLE_STRINGS,
        "images": _NULLABLE_STRINGS,
        "tools": {"type": ["array", "null"], "items": {"type": "object"}},
    },
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewaySidecar]:
    upstream = RecordingUpstream()
    try:
        with gateway_sidecar(tmp_path_factory.mktemp("litellm"), upstream) as running:
            yield running
    finally:
        upstream.stop()


def call(gateway: GatewaySidecar, input_type: str = "request", texts: list[str] | None = None,
         *, trace: str | None = "trace-1", tools: list[dict[str, Any]] | None = None,
         team: str | None = None, params: dict[str, Any] | None = None,
         images: list[str] | None = None,
         tool_calls: list[dict[str, Any]] | None = None) -> tuple[int, dict[str, Any]]:
    """POST as LiteLLM's hook does (its exact field set, validated first)."""
    body = {"input_type": input_type, "litellm_call_id": "call-1", "litellm_trace_id": trace,
            "structured_messages": None, "images": images, "tools": tools, "texts": texts,
            "request_data": {"user_api_key_team_id": team, "user_api_key_hash": "h"},
            "additional_provider_specific_params": params or {},
            "request_headers": {"user-agent": "[present]"}, "litellm_version": "1.108.7",
            "model": "m", "tool_calls": tool_calls}
    jsonschema.validate(body, REQUEST_SCHEMA)
    request = urllib.request.Request(
        f"http://{gateway.address}/beta/litellm_basic_guardrail_api", method="POST",
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as page:
            answer = json.loads(page.read())
            jsonschema.validate(answer, RESPONSE_SCHEMA)
            return page.status, answer
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_clean_text_is_none(gateway: GatewaySidecar) -> None:
    assert call(gateway, texts=["What is the weather like?"]) == (200, {"action": "NONE"})
    assert call(gateway, texts=[]) == (200, {"action": "NONE"})


def test_pre_call_pseudonymizes_and_post_call_restores_in_the_same_trace(
        gateway: GatewaySidecar) -> None:
    params = {"tenant": "pseudo"}
    status, pre = call(gateway, texts=["Mail ada.stone@acme.com", "hello"], params=params)
    assert status == 200
    assert pre == {"action": "GUARDRAIL_INTERVENED",
                   "texts": ["Mail <EMAIL_ADDRESS_1>", "hello"]}
    status, post = call(gateway, "response", ["Sent to <EMAIL_ADDRESS_1>."], params=params)
    assert post == {"action": "GUARDRAIL_INTERVENED", "texts": ["Sent to ada.stone@acme.com."]}
    # Another trace never gets this trace's values.
    _, other = call(gateway, "response", ["Sent to <EMAIL_ADDRESS_1>."], params=params,
                    trace="trace-2")
    assert "ada.stone" not in json.dumps(other)


def test_team_id_selects_the_tenant_and_blocks_block(gateway: GatewaySidecar) -> None:
    status, answer = call(gateway, texts=["how do I build a weapon"], team="content")
    assert status == 200
    assert answer["action"] == "BLOCKED"
    assert "weapons" in answer["blocked_reason"]
    assert "weapon" not in answer["blocked_reason"].replace("weapons", "")


def test_tool_descriptions_are_inspected_and_returned(gateway: GatewaySidecar) -> None:
    tools = [{"type": "function", "function": {
        "name": "notify", "description": "Notify lee.park@corp.net of changes",
        "parameters": {"type": "object"}}}]
    status, answer = call(gateway, texts=["ok"], tools=tools)
    assert status == 200
    assert answer["action"] == "GUARDRAIL_INTERVENED"
    assert answer["tools"][0]["function"]["description"] == "Notify <EMAIL_ADDRESS> of changes"
    assert answer["tools"][0]["function"]["name"] == "notify"


def test_bad_requests_are_refused_not_allowed(gateway: GatewaySidecar) -> None:
    status, answer = call(gateway, texts=["look"], images=["data:image/png;base64,AA"])
    assert status == 400
    assert "images" in answer["error"]["message"]
    request = urllib.request.Request(
        f"http://{gateway.address}/beta/litellm_basic_guardrail_api", method="POST",
        data=b'{"input_type": "sideways", "texts": ["x"]}')
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert "input_type" in json.loads(caught.value.read())["error"]["message"]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=40), max_size=4),
       input_type=st.sampled_from(["request", "response"]))
def test_every_answer_keeps_the_contract(gateway: GatewaySidecar, texts: list[str],
                                         input_type: str) -> None:
    status, answer = call(gateway, input_type, texts)
    assert status == 200
    if answer.get("texts") is not None:
        assert len(answer["texts"]) == len(texts)


def _tool_call(arguments: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function",
            "function": {"name": "pay", "arguments": arguments}}


def test_tool_call_arguments_are_inspected_and_never_waved_through(
        gateway: GatewaySidecar) -> None:
    """LiteLLM sends the model's tool calls (post_call) and earlier ones (pre_call) in
    `tool_calls` but cannot take changed ones back: a block blocks, and a redaction the
    answer could not carry blocks too, rather than letting the value through."""
    card = "4111 1111 1111 1111"
    for kind in ("request", "response"):
        status, answer = call(gateway, kind, ["ok"],
                              tool_calls=[_tool_call(json.dumps({"card": card}))])
        assert status == 200 and answer["action"] == "BLOCKED", kind
        assert "1111" not in ids_masked(answer["blocked_reason"])
        status, answer = call(gateway, kind, ["ok"], tool_calls=[
            _tool_call(json.dumps({"to": "kim.lee@mail.org"}))])
        assert answer["action"] == "BLOCKED", kind
        assert "EMAIL_ADDRESS" in answer["blocked_reason"]
        assert "kim.lee" not in answer["blocked_reason"]
    # Clean arguments, or placeholders the response restores: no block.
    assert call(gateway, "response", ["ok"], tool_calls=[_tool_call('{"n": 2}')]) == (
        200, {"action": "NONE"})
    status, answer = call(gateway, "request", ["Mail ada.stone@acme.com"],
                          params={"tenant": "pseudo"}, trace="trace-tools")
    assert answer["texts"] == ["Mail <EMAIL_ADDRESS_1>"]
    status, answer = call(gateway, "response", ["Done."], params={"tenant": "pseudo"},
                          trace="trace-tools",
                          tool_calls=[_tool_call('{"to": "<EMAIL_ADDRESS_1>"}')])
    assert status == 200 and answer["action"] != "BLOCKED"
    request = urllib.request.Request(  # not what LiteLLM sends: a clear 400
        f"http://{gateway.address}/beta/litellm_basic_guardrail_api", method="POST",
        data=json.dumps({"input_type": "response", "texts": ["ok"],
                         "tool_calls": [{"function": 7}]}).encode())
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert "tool_calls[0]" in json.loads(caught.value.read())["error"]["message"]
