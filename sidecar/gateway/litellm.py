"""LiteLLM's Generic Guardrail API: LiteLLM's proxy calls us, for every model it serves.

    POST /beta/litellm_basic_guardrail_api

LiteLLM (`guardrail: generic_guardrail_api`, `api_base: http://127.0.0.1:8080`) sends

    {"input_type": "request" | "response", "texts": [...], "tools": [...],
     "images": [...], "structured_messages": [...], "request_data": {user_api_key_*},
     "litellm_call_id": ..., "litellm_trace_id": ...,
     "additional_provider_specific_params": {...}}

for `pre_call` and `during_call` (input_type "request": inspected as a prompt) and
`post_call` ("response": as a completion), and expects

    {"action": "NONE"}                                   allowed as it is
    {"action": "GUARDRAIL_INTERVENED", "texts": [...], "tools": [...]}   use these instead
    {"action": "BLOCKED", "blocked_reason": "..."}       LiteLLM refuses the call

The texts, the tools' descriptions and parameter schemas (`texts.tool_texts`) and the
arguments of `tool_calls` (earlier calls in a request, the model's calls in a
response) are the inspection's messages, in that order. LiteLLM's API has no way to
hand changed tool-call arguments back: when the policy would redact or replace
something in them (a finding or rule there), the answer is BLOCKED rather than
letting them through unchanged; restoring pseudonyms in them is not a safety change
and is left undone (the client sees the placeholders).
Identity: `x-guardrail-*` headers (LiteLLM's `headers:` setting), then
`additional_provider_specific_params` (tenant, app, subject_id, conversation_id,
user_region), then LiteLLM's metadata: team id → tenant, key alias → app, end user
(else user) id → subject, trace id (else call id) → conversation, so the values a
request's pseudonyms stand for are restored in its response. Images cannot be
inspected: a request carrying any is refused (400), which LiteLLM treats as a failure.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from sidecar.errors import GuardrailError, InvalidRequest
from sidecar.gateway import texts as gateway_texts
from sidecar.gateway.http import identity, internal, json_body, refusal
from sidecar.service.inspector import Inspector
from sidecar.types import Decision, Direction, Message

log = logging.getLogger(__name__)
PATH = "/beta/litellm_basic_guardrail_api"
_DIRECTIONS = {"request": Direction.PROMPT, "response": Direction.COMPLETION}


def _fallbacks(body: dict[str, Any]) -> dict[str, str]:
    params = body.get("additional_provider_specific_params")
    params = params if isinstance(params, dict) else {}
    meta = body.get("request_data")
    meta = meta if isinstance(meta, dict) else {}

    def first(*values: Any) -> str:
        return next((v for v in values if isinstance(v, str) and v), "")

    found = {
        "tenant": first(params.get("tenant"), meta.get("user_api_key_team_id")),
        "app": first(params.get("app"), meta.get("user_api_key_alias")),
        "subject_id": first(params.get("subject_id"), meta.get("user_api_key_end_user_id"),
                            meta.get("user_api_key_user_id")),
        "conversation_id": first(params.get("conversation_id"), body.get("litellm_trace_id"),
                                 body.get("litellm_call_id")),
        "user_region": first(params.get("user_region")),
        "target_region": first(params.get("target_region")),
        "request_id": first(body.get("litellm_call_id")),
    }
    return {name: value for name, value in found.items() if value}


def _call_arguments(calls: Any) -> list[str]:
    """The arguments of LiteLLM's `tool_calls` (OpenAI tool calls or stream chunks)."""
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise InvalidRequest("tool_calls: expected an array")
    found: list[str] = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise InvalidRequest(f"tool_calls[{index}]: expected a tool call with a function")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            raise InvalidRequest(f"tool_calls[{index}].function.arguments: expected a string")
        if arguments:
            found.append(arguments)
    return found


class LiteLLMGuardrail:
    def __init__(self, inspector: Inspector) -> None:
        self.inspector = inspector

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        request_id = ""
        try:
            body = await json_body(request)
            direction = _DIRECTIONS.get(body.get("input_type", "request"))
            if direction is None:
                raise InvalidRequest("input_type: expected 'request' or 'response'")
            if body.get("images"):
                raise InvalidRequest("images: cannot be inspected by the guardrail")
            texts = body.get("texts") or []
            tools = body.get("tools") or []
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise InvalidRequest("texts: expected an array of strings")
            if not isinstance(tools, list):
                raise InvalidRequest("tools: expected an array")
            arguments = _call_arguments(body.get("tool_calls"))
            described: list[gateway_texts.Slot] = []  # descriptions, parameter schemas
            gateway_texts.tool_texts(tools, described)
            messages = tuple(Message("user" if direction is Direction.PROMPT else "assistant",
                                     text) for text in texts)
            messages += gateway_texts.messages_of(described)
            messages += tuple(Message("assistant", text) for text in arguments)
            if not messages:
                return web.json_response({"action": "NONE"})
            ident = identity(request.headers, body, _fallbacks(body))
            request_id = ident.request_id
            async with self.inspector.call(direction, request_id) as call:
                verdict = await self.inspector.inspect(
                    ident.inspection(direction, messages), None, call)
        except GuardrailError as err:
            return refusal(err)
        except Exception:
            return internal(request_id)
        if verdict.decision == Decision.BLOCK:
            rules = sorted({v.rule_id for v in verdict.violations if not v.shadow})
            entities = sorted({f.entity_type for f in verdict.findings
                               if f.action == "block" and not f.shadow})
            return web.json_response({"action": "BLOCKED", "blocked_reason": (
                f"blocked by the guardrail ({', '.join([*rules, *entities]) or 'policy'}; "
                f"audit id {verdict.audit_id or '-'})")})
        if verdict.decision == Decision.ALLOW:
            return web.json_response({"action": "NONE"})
        first_call = len(texts) + len(described)
        changed = sorted({f.entity_type for f in verdict.findings
                          if f.message_index >= first_call and not f.shadow
                          and f.action != "allow"} |
                         {v.rule_id for v in verdict.violations
                          if v.message_index >= first_call and not v.shadow})
        if changed:
            return web.json_response({"action": "BLOCKED", "blocked_reason": (
                f"blocked by the guardrail: tool-call arguments hold {', '.join(changed)}, "
                "which the policy changes and LiteLLM's guardrail API cannot carry back "
                f"(audit id {verdict.audit_id or '-'})")})
        out = [m.content for m in verdict.messages]
        for slot, text in zip(described, out[len(texts):first_call], strict=True):
            slot.put(text)
        answer: dict[str, Any] = {"action": "GUARDRAIL_INTERVENED", "texts": out[:len(texts)]}
        if described:
            answer["tools"] = tools
        return web.json_response(answer)
