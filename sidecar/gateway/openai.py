"""The OpenAI-compatible gateway: an app changes its SDK's `base_url`, nothing else.

    POST /v1/chat/completions   streaming and not
    POST /v1/embeddings         inputs inspected as prompts
    POST /v1/responses          the Responses API, streaming and not

Every text of the request is inspected as the prompt (`sidecar.gateway.texts`), and
only the result goes upstream; the answer's texts are inspected as the completion,
with pseudonyms restored, before the client sees them. A block is an HTTP 400 with an
OpenAI-style error of type `guardrail_blocked` (rule ids, entity types, audit id), or,
when the policy says `on_block: {respond: refusal}`, a normal answer carrying its
refusal text (chat and Responses, streamed or not: `_refuse` and the relays);
the upstream is never called for a blocked prompt, and a blocked answer never
reaches the client. Upstream errors pass back with their status and body; a timeout
is 504, an unreachable upstream 502: the gateway never turns a failure into a success.

With `stream: true` the upstream's SSE events go through the streaming inspection
(the hold-back window, one `LiveStream` per choice and text field): the client gets a
valid SSE stream of `chat.completion.chunk`s carrying only released text, then the
finish and usage chunks, then `[DONE]`. A block mid-stream is a final
`{"error": {...}}` event, which the SDKs raise as an APIError. `logprobs` of a
streamed answer are dropped (they spell the unreleased text), as are those of an
answer the guardrail modified.

A streamed Responses call (`ResponsesRelay`) goes through the same window: each text
delta (output text, refusal, function-call arguments, custom tool input, reasoning
text and summaries) feeds a `LiveStream` per output item and part; the client gets
delta events carrying only released text, and every `.done`, `output_item.done` and
`response.completed` event carries the released text in place of the upstream's. A
block mid-stream is a final `{"type": "error", ...}` event that also holds an `error`
object, which the SDKs raise as an APIError (with `refusal`: a refusal message item,
then `response.completed`).

Several chat choices (`n`) are each a completion of their own (`_chat_answer`,
`ChatRelay`); Responses items other than messages are read deny-by-default
(`texts.response_item`), and what cannot be read is refused unless the policy's
`gateway.pass_items` names it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.errors import GuardrailError, InvalidRequest
from sidecar.gateway import texts
from sidecar.gateway.http import (
    Identity,
    blocked,
    blocked_error,
    check_depth,
    error,
    identity,
    internal,
    json_body,
    openai_fallbacks,
    refusal,
    status_of,
)
from sidecar.gateway.upstream import NoUpstream, Upstreams, forward_headers, returned_headers
from sidecar.service.inspector import Inspector, LiveStream
from sidecar.streaming import Release
from sidecar.types import Decision, Direction, Verdict

log = logging.getLogger(__name__)
Slots = Callable[[dict[str, Any], texts.Opaque | None], list[texts.Slot]]
StreamKey = tuple[int, str | int]  # (choice index, "content" | "refusal" | tool call index)
MAX_CHOICES = 128  # `n` as OpenAI bounds it: each choice is a stream of its own
MAX_STREAMS = 512  # text streams one streamed answer may open (choices x parts)


class UpstreamBroken(Exception):
    """The upstream answered 200 with something that is not what the API promises."""


async def json_events(events: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """An upstream's SSE data as JSON objects, up to `[DONE]` (or the stream's end);
    anything else is UpstreamBroken (chat completions and Responses read alike)."""
    async for data in events:
        if data.strip() == "[DONE]":
            return
        try:
            event = json.loads(data)
            check_depth(event, "an event")
        except (ValueError, RecursionError, InvalidRequest):
            raise UpstreamBroken("an event that is not JSON, or nested too deep") from None
        if not isinstance(event, dict):
            raise UpstreamBroken("an event that is not a JSON object")
        yield event


class UpstreamUninspectable(UpstreamBroken):
    """The upstream answered with an item the guardrail cannot read, not passed by policy."""


def choices_of(body: dict[str, Any]) -> int:
    """How many choices a chat request asks for (`n`), bounded like OpenAI's own."""
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise InvalidRequest(f"n: expected an integer from 1 to {MAX_CHOICES}")
    return n


def check_opaque(opaque: texts.Opaque, passes: frozenset[str]) -> None:
    """Refuse the first uninspectable item or part the policy does not let pass."""
    for where, kind in opaque:
        if kind not in passes:
            raise texts.Uninspectable(
                f"{where}: a '{kind}' item or part cannot be inspected by the guardrail "
                "and the policy does not pass it (gateway.pass_items)")


class OpenAIGateway:
    def __init__(self, inspector: Inspector, upstreams: Upstreams, timeout: float,
                 identity_key: bytes = b"") -> None:
        self.inspector = inspector
        self.identity_key = identity_key  # keys the opaque `user` sent upstream
        self.upstreams = upstreams
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the running loop, at first use
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout,
                                              sock_read=self.timeout),
                read_bufsize=1 << 20, trust_env=False)
        return self._session

    async def close(self, app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.chat_completions),
                web.post("/v1/embeddings", self.embeddings),
                web.post("/v1/responses", self.responses)]

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, "chat/completions", texts.chat_prompt,
                                texts.chat_completion, streams=True)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, "embeddings",
                                lambda body, _opaque: texts.embeddings_input(body),
                                lambda body, _opaque: [], streams=False)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, "responses", texts.responses_input,
                                texts.responses_output, streams=True)

    # -- one call -------------------------------------------------------------------------

    async def _call(self, request: web.Request, path: str, prompt: Slots, answer: Slots,
                    *, streams: bool) -> web.StreamResponse:
        started = time.perf_counter()
        ident: Identity | None = None
        region = ""
        try:
            body = await json_body(request)
            ident = identity(request.headers, body, openai_fallbacks(body))
            stream = body.get("stream") is True
            if stream and not streams:
                raise InvalidRequest(f"stream: /v1/{path} is not streamed through the "
                                     "guardrail yet; call it without stream")
            choices = choices_of(body) if path == "chat/completions" else 1
            opaque: texts.Opaque = []
            slots = prompt(body, opaque)
            verdict = await self._inspect(ident, Direction.PROMPT, slots)
            if verdict.decision == Decision.BLOCK:
                text = self._refusal_text(verdict, path, stream)
                if text is None:
                    return self._done(blocked(verdict, Direction.PROMPT), ident, path,
                                      started)
                return self._done(await self._refuse(request, verdict, Direction.PROMPT,
                                                     body, text, stream=stream), ident, path,
                                  started)
            passes = self._passes(verdict)
            check_opaque(opaque, passes)
            texts.write_back(slots, verdict.messages)
            scrub_identity(body, self.identity_key)
            base, region = self.upstreams.choose(verdict.routing_tags)
        except NoUpstream as err:
            return self._done(error(400, str(err), "guardrail_blocked",
                                    rule_ids=["residency"]), ident, path, started)
        except texts.Uninspectable as err:
            return self._done(error(400, str(err), "invalid_request_error",
                                    "uninspectable_item"), ident, path, started)
        except GuardrailError as err:
            return self._done(refusal(err), ident, path, started)
        except Exception:
            return self._done(internal(ident.request_id if ident else ""), ident, path,
                              started)
        url = f"{base}/{path}"
        if request.query_string:  # e.g. Azure's api-version; never inspected, never logged
            url += f"?{request.query_string}"
        with self.inspector.flight():
            if stream:
                response = await self._stream(request, url, body, ident,
                                              choices=choices, passes=passes)
            else:
                response = await self._unary(request, url, body, ident, answer,
                                             choices=choices, passes=passes)
        return self._done(response, ident, path, started, region)

    async def _inspect(self, ident: Identity, direction: Direction,
                       slots: list[texts.Slot],
                       tags: dict[str, str] | None = None) -> Verdict:
        async with self.inspector.call(direction, ident.request_id) as call:
            return await self.inspector.inspect(
                ident.inspection(direction, texts.messages_of(slots)), None, call, tags)

    def _passes(self, verdict: Verdict) -> frozenset[str]:
        """The item and part types the verdict's policy lets pass uninspected."""
        policy = self.inspector.policy_of(verdict.policy)
        return frozenset(policy.gateway.pass_items) if policy is not None else frozenset()

    async def _unary(self, request: web.Request, url: str, body: dict[str, Any],
                     ident: Identity, answer: Slots, *, choices: int,
                     passes: frozenset[str]) -> web.StreamResponse:
        try:
            async with self.session.post(url, data=json.dumps(body),
                                         headers=forward_headers(request.headers),
                                         allow_redirects=False) as upstream:
                raw = await upstream.read()
                headers = returned_headers(upstream.headers)
                if upstream.status >= 300:  # passed back as it came: status and body
                    return web.Response(status=upstream.status, body=raw, headers=headers,
                                        content_type=upstream.content_type)
        except TimeoutError:
            return self._upstream_timeout()
        except aiohttp.ClientError:
            return self._upstream_unreachable()
        try:
            result = json.loads(raw)
            if not isinstance(result, dict):
                raise ValueError
            check_depth(result, "answer")
        except (ValueError, UnicodeDecodeError, RecursionError, InvalidRequest):
            return error(502, "the upstream answered 2xx with a body that is not a JSON "
                              "object, or one nested too deep", "upstream_invalid_response")
        if url.partition("?")[0].endswith("/chat/completions"):
            return await self._chat_answer(request, result, ident, headers,
                                           choices=choices, passes=passes)
        opaque: texts.Opaque = []
        try:
            slots = answer(result, opaque)
            check_opaque(opaque, passes)
        except texts.Uninspectable as err:
            return error(502, f"the upstream answered with {err}", "upstream_uninspectable",
                         "uninspectable_item")
        except InvalidRequest as err:
            return error(502, f"the upstream answered with {err}",
                         "upstream_invalid_response")
        if slots:
            try:
                verdict = await self._inspect(ident, Direction.COMPLETION, slots)
            except GuardrailError as err:
                return refusal(err)
            except Exception:
                return internal(ident.request_id)
            if verdict.decision == Decision.BLOCK:
                path = url.partition("?")[0].rpartition("/v1/")[2]
                text = self._refusal_text(verdict, path, False)
                if text is None:
                    return blocked(verdict, Direction.COMPLETION)
                return await self._refuse(request, verdict, Direction.COMPLETION, result,
                                          text, stream=False)
            texts.write_back(slots, verdict.messages)
        return web.json_response(result, headers=headers)

    async def _chat_answer(self, request: web.Request, result: dict[str, Any],
                           ident: Identity, headers: dict[str, str], *,
                           choices: int, passes: frozenset[str]) -> web.StreamResponse:
        """A chat answer, each choice inspected as a completion of its own (its audit
        record tagged `choice`), concurrently. One blocked choice: with `on_block:
        error` the whole answer is a 400 naming that choice; with `refusal`, that
        choice alone carries the refusal text (finish_reason content_filter)."""
        try:
            opaque: texts.Opaque = []
            groups = texts.chat_choices(result, opaque)
            check_opaque(opaque, passes)
            indices = [index for index, _slots in groups]
            if len(result.get("choices") or []) > choices or len(set(indices)) != len(
                    indices) or not all(0 <= index < choices for index in indices):
                raise UpstreamBroken(f"choices that do not match the n={choices} asked for")
        except texts.Uninspectable as err:
            return error(502, f"the upstream answered with {err}", "upstream_uninspectable",
                         "uninspectable_item")
        except (InvalidRequest, UpstreamBroken) as err:
            return error(502, f"the upstream answered with {err}",
                         "upstream_invalid_response")
        try:
            found_verdicts = await asyncio.gather(*(
                self._inspect(ident, Direction.COMPLETION, slots, {"choice": str(index)})
                for index, slots in groups if slots))  # a choice without text: nothing
        except GuardrailError as err:
            return refusal(err)
        except Exception:
            return internal(ident.request_id)
        verdicts = iter(found_verdicts)
        judged = [(position, index, slots, next(verdicts))
                  for position, (index, slots) in enumerate(groups) if slots]
        found: list[dict[str, Any]] = result.get("choices") or []  # checked: choice objects
        text: str | None = None
        blocked_ones = [(index, verdict) for _position, index, _slots, verdict in judged
                        if verdict.decision == Decision.BLOCK]
        if blocked_ones:
            first_index, first = blocked_ones[0]
            text = self._refusal_text(first, "chat/completions", False)
            if text is None:
                return web.json_response({"error": {
                    **blocked_error(first, Direction.COMPLETION), "choice": first_index}},
                    status=400)
            headers = {**headers, "x-guardrail-blocked": Direction.COMPLETION.value,
                       "x-guardrail-audit-id": first.audit_id}
        for position, _index, slots, verdict in judged:
            # The last group may hold only the answer's strings outside any choice.
            choice = found[position] if position < len(found) else {}
            if verdict.decision == Decision.BLOCK:
                for slot in slots:  # nothing of a blocked group stays, inside or out
                    slot.put("")
                choice.update(finish_reason="content_filter", logprobs=None, message={
                    "role": "assistant", "content": text, "refusal": None})
                continue
            texts.write_back(slots, verdict.messages)
            if verdict.decision == Decision.MODIFY:
                choice["logprobs"] = None  # they spell the original text
        return web.json_response(result, headers=headers)

    async def _stream(self, request: web.Request, url: str, body: dict[str, Any],
                      ident: Identity, *, choices: int,
                      passes: frozenset[str]) -> web.StreamResponse:
        try:
            upstream = await self.session.post(url, data=json.dumps(body),
                                               headers=forward_headers(request.headers),
                                               allow_redirects=False)
        except TimeoutError:
            return self._upstream_timeout()
        except aiohttp.ClientError:
            return self._upstream_unreachable()
        async with upstream:
            headers = returned_headers(upstream.headers)
            try:
                if upstream.status >= 300:
                    return web.Response(status=upstream.status, body=await upstream.read(),
                                        headers=headers, content_type=upstream.content_type)
            except TimeoutError:
                return self._upstream_timeout()
            except aiohttp.ClientError:
                return self._upstream_unreachable()
            if upstream.content_type != "text/event-stream":
                return error(502, "the upstream did not answer a streamed request with an "
                                  "event stream", "upstream_invalid_response")
            response = web.StreamResponse(status=200, headers={
                **headers, "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache"})
            await response.prepare(request)
            kind = ResponsesRelay if url.partition("?")[0].endswith("/responses") else ChatRelay
            relay = kind(self.inspector, ident, response, self.timeout, choices)
            relay.passes = passes
            relay.refusal_of = lambda verdict: self._refusal_text(
                verdict, "chat/completions" if kind is ChatRelay else "responses", True)
            try:
                await relay.run(_events(upstream.content))
            except ConnectionError:  # the client went away: what was shown is audited
                log.info("gateway client went away mid-stream",
                         extra={"request_id": ident.request_id})
            return response

    def _refusal_text(self, verdict: Verdict, path: str, stream: bool) -> str | None:
        """The refusal text to answer a block with, when the verdict's policy says
        `on_block.respond: refusal` and the door has a completion to carry it (chat and
        Responses, streamed or not); None: answer with an error."""
        if path not in ("chat/completions", "responses"):
            return None
        policy = self.inspector.policy_of(verdict.policy)
        if policy is None or policy.on_block.respond != "refusal":
            return None
        return policy.on_block.refusal_text

    @staticmethod
    async def _refuse(request: web.Request, verdict: Verdict, direction: Direction,
                      body: dict[str, Any], text: str, *,
                      stream: bool) -> web.StreamResponse:
        """A normal completion carrying `text` in place of a blocked prompt's answer or
        of a blocked answer (`body`: the request, or the upstream's result to replace).
        Headers say it was a block and name the audit record."""
        headers = {"x-guardrail-blocked": direction.value,
                   "x-guardrail-audit-id": verdict.audit_id}
        model = body.get("model") if isinstance(body.get("model"), str) else "guardrail"
        if request.path.endswith("/responses") and stream:  # a blocked prompt, streamed
            head: dict[str, Any] = {
                    "id": f"resp_guardrail_{verdict.request_id}", "object": "response",
                    "created_at": int(time.time()), "status": "in_progress", "model": model,
                    "output": [], "parallel_tool_calls": False, "tool_choice": "none",
                    "tools": []}
            response = web.StreamResponse(status=200, headers={
                **headers, "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache"})
            await response.prepare(request)
            item_id = f"msg_guardrail_{verdict.request_id}"
            events = [{"type": "response.created", "response": head},
                      {"type": "response.in_progress", "response": head},
                      *response_refusal_events(0, item_id, text),
                      {"type": "response.completed", "response": {
                          **head, "status": "completed",
                          "output": [refusal_item(item_id, text)]}}]
            for number, event in enumerate(events):
                await response.write(sse_event({**event, "sequence_number": number}))
            return response
        if request.path.endswith("/responses"):
            refused = body if direction == Direction.COMPLETION else {
                "id": f"resp_guardrail_{verdict.request_id}", "object": "response",
                "created_at": int(time.time()), "status": "completed", "model": model,
                "parallel_tool_calls": False, "tool_choice": "none", "tools": []}
            refused["output"] = [{"type": "message", "id": f"msg_guardrail_{verdict.request_id}",
                                  "status": "completed", "role": "assistant", "content": [
                                      {"type": "output_text", "text": text,
                                       "annotations": []}]}]
            if "output_text" in refused:
                refused["output_text"] = text
            return web.json_response(refused, headers=headers)
        base = {"id": body.get("id") if direction == Direction.COMPLETION else
                f"chatcmpl-guardrail-{verdict.request_id}",
                "created": body.get("created") if direction == Direction.COMPLETION else
                int(time.time()), "model": model}
        if not stream:
            refused = {**body, **base} if direction == Direction.COMPLETION else \
                {**base, "usage": {"prompt_tokens": 0, "completion_tokens": 0,
                                   "total_tokens": 0}}
            refused.update(object="chat.completion", choices=[{
                "index": 0, "finish_reason": "content_filter", "logprobs": None,
                "message": {"role": "assistant", "content": text, "refusal": None}}])
            return web.json_response(refused, headers=headers)
        response = web.StreamResponse(status=200, headers={
            **headers, "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache"})
        await response.prepare(request)
        for chunk in refusal_chunks({**base, "object": "chat.completion.chunk"}, text,
                                    role=True):
            await response.write(b"data: " + json.dumps(chunk).encode("utf-8") + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    def _upstream_timeout(self) -> web.Response:
        return error(504, f"the upstream did not answer within {self.timeout:g} s "
                          "(GUARDRAIL_UPSTREAM_TIMEOUT)", "upstream_timeout")

    @staticmethod
    def _upstream_unreachable() -> web.Response:
        return error(502, "the upstream could not be reached", "upstream_unavailable")

    @staticmethod
    def _done(response: web.StreamResponse, ident: Identity | None, path: str,
              started: float, region: str = "") -> web.StreamResponse:
        log.info("gateway call", extra={
            "request_id": ident.request_id if ident else "", "path": path,
            "status": response.status, "upstream_region": region,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)})
        return response


# Our identity hints in an OpenAI body's `metadata`: read by the guardrail, not the model's.
IDENTITY_METADATA = ("tenant", "app", "subject_id", "conversation_id", "user_region",
                     "target_region")


def scrub_identity(body: dict[str, Any], key: bytes) -> None:
    """What the body says about who is asking, made opaque before it goes upstream.

    `user` and `safety_identifier` are often an e-mail address or a name: the provider
    gets a keyed hash instead (stable per user, as its abuse monitoring wants, and
    useless to anyone without the key). Our `metadata` identity hints are removed; other
    metadata keys are the app's own and pass through.
    """
    for field in ("user", "safety_identifier"):
        value = body.get(field)
        if isinstance(value, str) and value:
            body[field] = "gr-" + hmac.new(key, value.encode("utf-8", "surrogatepass"),
                                           hashlib.sha256).hexdigest()[:32]
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        for name in IDENTITY_METADATA:
            metadata.pop(name, None)
        if not metadata:
            del body["metadata"]


def refusal_chunks(template: dict[str, Any], text: str, *,
                   role: bool, index: int = 0) -> list[dict[str, Any]]:
    """The chunks of a streamed refusal for choice `index`: its text, then
    finish_reason content_filter."""
    delta: dict[str, Any] = {"role": "assistant", "content": text} if role else \
        {"content": text}
    return [{**template, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                      "finish_reason": None}]},
            {**template, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                      "finish_reason": "content_filter"}]}]


def refusal_item(item_id: str, text: str) -> dict[str, Any]:
    """The Responses output message that carries a refusal text: an `output_text` part,
    as in the unary refusal, so the SDKs show it as the answer (`output_text`)."""
    return {"type": "message", "id": item_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def response_refusal_events(index: int, item_id: str, text: str) -> list[dict[str, Any]]:
    """The Responses events of one refusal message at output `index`, from
    output_item.added to output_item.done (no sequence numbers)."""
    where = {"item_id": item_id, "output_index": index, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    return [
        {"type": "response.output_item.added", "output_index": index, "item": {
            **refusal_item(item_id, text), "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where, "part": part},
        {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []},
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": index,
         "item": refusal_item(item_id, text)}]


def sse_event(event: dict[str, Any]) -> bytes:
    """One server-sent event, named by its type as the Responses API names them."""
    kind = event.get("type")
    head = f"event: {kind}\n".encode() if isinstance(kind, str) else b""
    return head + b"data: " + json.dumps(event).encode("utf-8") + b"\n\n"


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined by newlines)."""
    data: list[str] = []
    async for raw in content:
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UpstreamBroken("an event that is not UTF-8") from None
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


# What a streamed chat chunk may carry on: its own fields, a choice's, a delta's role.
_CHUNK_FIELDS = frozenset({"id", "object", "created", "model", "system_fingerprint",
                           "service_tier", "choices", "usage"})
_CHOICE_FIELDS = frozenset({"index", "delta", "finish_reason", "logprobs"})
_ROLES = frozenset({"assistant", "tool", "developer", "system", "user", "function"})


def _numbers(value: Any) -> Any:
    """A JSON value with every string in it dropped (token counts carry no text)."""
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()
                if not isinstance(item, str)}
    if isinstance(value, list):
        return [_numbers(item) for item in value if not isinstance(item, str)]
    return None if isinstance(value, str) else value


def _chat_delta(part: str | int, text: str) -> dict[str, Any]:
    """The delta that carries released text for one stream of a chat choice."""
    if isinstance(part, int):
        return {"tool_calls": [{"index": part, "function": {"arguments": text}}]}
    if part.startswith("custom:"):
        return {"tool_calls": [{"index": int(part.removeprefix("custom:")),
                                "custom": {"input": text}}]}
    if part == "function_call":
        return {"function_call": {"arguments": text}}
    return {part: text}


def _meaningful(value: Any) -> bool:
    """Whether a delta still says something once its text was taken out."""
    if isinstance(value, dict):
        return any(_meaningful(item) for key, item in value.items() if key != "index")
    if isinstance(value, list):
        return any(_meaningful(item) for item in value)
    return value is not None and value != ""


class ChatRelay:
    """One streamed chat completion, from the upstream's events to the client's.

    Each choice (`n` > 1) is a completion of its own: each of its text fields is a
    stream with its own window and audit record, tagged `choice` and `field`, so a
    value split across chunks of choice 1 is caught while choice 0 flows. A block
    with `on_block: error` ends the whole stream in an error event; with `refusal`,
    the blocked choice ends in the refusal text (finish_reason content_filter) and
    the other choices go on. A choice index outside the `n` asked for is a broken
    upstream."""

    def __init__(self, inspector: Inspector, ident: Identity, response: web.StreamResponse,
                 timeout: float, choices: int = 1) -> None:
        self.inspector = inspector
        self.ident = ident
        self.response = response
        self.timeout = timeout
        self.choices = choices
        self.streams: dict[StreamKey, LiveStream] = {}
        self.template: dict[str, Any] = {}
        self.deferred: list[dict[str, Any]] = []  # finish and usage chunks: after the text
        self.refused: set[int] = set()  # choices that ended in the refusal text
        # The policy's refusal text for a block (None: a final error event instead).
        self.refusal_of: Callable[[Verdict], str | None] = lambda verdict: None
        # Item and part types the policy lets pass uninspected (Responses).
        self.passes: frozenset[str] = frozenset()

    async def run(self, events: AsyncIterator[str]) -> None:
        try:
            await self._relay(events)
        except GuardrailError as err:
            _status, kind = status_of(err)
            await self._fail({"message": str(err), "type": kind, "param": None,
                              "code": kind})
        except TimeoutError:
            await self._fail({
                "message": f"the upstream stopped streaming for {self.timeout:g} s",
                "type": "upstream_timeout", "param": None, "code": "upstream_timeout"})
        except aiohttp.ClientError:
            await self._fail({"message": "the upstream stream broke off",
                              "type": "upstream_unavailable", "param": None,
                              "code": "upstream_unavailable"})
        except UpstreamUninspectable as err:
            await self._fail({"message": f"the upstream sent {err}",
                              "type": "upstream_uninspectable", "param": None,
                              "code": "uninspectable_item"})
        except UpstreamBroken as err:
            await self._fail({"message": f"the upstream sent {err}",
                              "type": "upstream_invalid_response", "param": None,
                              "code": "upstream_invalid_response"})
        finally:
            for stream in self.streams.values():
                stream.abandon()  # a no-op for streams that finished

    async def _relay(self, events: AsyncIterator[str]) -> None:
        async for chunk in json_events(events):
            if chunk.get("error"):  # the upstream's own error: passed on, and the end
                await self._fail(chunk["error"])
                return
            for key in await self._absorb(chunk):
                if key[0] not in self.refused and await self._emit(
                        key, await self.streams[key].advance()):
                    return
        for key, stream in list(self.streams.items()):
            if key[0] not in self.refused and await self._emit(key, await stream.finish()):
                return
        for chunk in self.deferred:
            if not any(isinstance(choice, dict) and choice.get("index") in self.refused
                       for choice in chunk.get("choices") or []):
                await self._send(chunk)
        await self.response.write(b"data: [DONE]\n\n")

    async def _absorb(self, chunk: dict[str, Any]) -> list[StreamKey]:
        """Take the texts out of an upstream chunk into their streams; pass on at once
        what is left (roles, tool call names), keep finish and usage chunks for the end."""
        if not self.template:
            self.template = {key: chunk[key] for key in (
                "id", "object", "created", "model", "system_fingerprint", "service_tier")
                if key in chunk}
        # Only the fields the API defines pass on; a hostile upstream's extras do not,
        # nor text in the token counts.
        chunk = {key: _numbers(value) if key == "usage" else value
                 for key, value in chunk.items() if key in _CHUNK_FIELDS}
        choices = chunk.get("choices", [])
        if not isinstance(choices, list):
            raise UpstreamBroken("choices that are not an array")
        if not choices:  # usage, at the end
            self.deferred.append(chunk)
            return []
        touched: list[StreamKey] = []
        now: list[dict[str, Any]] = []
        for given in choices:
            if not isinstance(given, dict):
                raise UpstreamBroken("a choice that is not an object")
            choice = {key: value for key, value in given.items() if key in _CHOICE_FIELDS}
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if not isinstance(index, int) or not isinstance(delta, dict | None):
                raise UpstreamBroken("a choice without a valid index or delta")
            if isinstance(index, bool) or not 0 <= index < self.choices:
                raise UpstreamBroken(f"a choice index out of range (n={self.choices})")
            if index in self.refused:
                continue  # the rest of a choice that ended in the refusal text
            delta = choice["delta"] = self._delta(delta or {}, index, touched)
            choice["logprobs"] = None
            if choice.get("finish_reason") is not None:
                self.deferred.append({**chunk, "choices": [choice]})
            elif _meaningful(delta):
                now.append(choice)
        if now:
            await self._send({**chunk, "choices": now})
        return list(dict.fromkeys(touched))

    def _delta(self, given: dict[str, Any], index: int,
               touched: list[StreamKey]) -> dict[str, Any]:
        """A chunk's delta with its texts taken into their streams (deny by default:
        every string field but the role is a text: content, refusal, and what other
        APIs add, such as `reasoning_content`); tool calls keep their ids and names;
        any other value (an object, a number) is dropped, never passed on unread."""
        delta: dict[str, Any] = {}
        for name, value in list(given.items()):
            if name == "role":
                if value in _ROLES:
                    delta[name] = value
            elif name in ("tool_calls", "function_call") and not isinstance(
                    value, list if name == "tool_calls" else dict) and value is not None:
                raise UpstreamBroken(f"a {name} of the wrong type")
            elif isinstance(value, str):
                touched += self._take(given, name, (index, name))
            elif name == "tool_calls" and isinstance(value, list):
                delta[name] = [self._call(call, index, touched) for call in value
                               if isinstance(call, dict)]
            elif name == "function_call" and isinstance(value, dict):
                touched += self._take(value, "arguments", (index, "function_call"))
                delta[name] = {key: value[key] for key in ("name",)
                               if isinstance(value.get(key), str)}
            elif name in ("content", "refusal") and value is not None:
                raise UpstreamBroken(f"a {name} that is not a string")
        return delta

    def _call(self, given: dict[str, Any], index: int,
              touched: list[StreamKey]) -> dict[str, Any]:
        """One streamed tool call: its arguments (function) or input (custom tool) taken
        into a stream; its index, id, type and name kept."""
        position = given.get("index", 0)
        position = position if isinstance(position, int) and \
            not isinstance(position, bool) else 0
        call = {key: given[key] for key in ("index", "id", "type")
                if isinstance(given.get(key), int | str)}
        for kind, field, key in (("function", "arguments", position),
                                 ("custom", "input", f"custom:{position}")):
            inner = given.get(kind)
            if isinstance(inner, dict):
                touched += self._take(inner, field, (index, key))
                call[kind] = {name: inner[name] for name in ("name",)
                              if isinstance(inner.get(name), str)}
        return call

    def _take(self, holder: dict[str, Any], name: str, key: StreamKey) -> list[StreamKey]:
        text = holder.pop(name, None)
        if text is None or text == "":
            return []
        if not isinstance(text, str):
            raise UpstreamBroken(f"a {name} that is not a string")
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self._new_stream(key)
        stream.add(text)
        return [key]

    def _new_stream(self, key: StreamKey) -> LiveStream:
        """A stream for one text of the answer, its audit record tagged with the choice
        (output item) and field it is; a bounded number per answer."""
        if len(self.streams) >= MAX_STREAMS:
            raise UpstreamBroken(f"more than {MAX_STREAMS} texts in one answer")
        index, part = key
        field = part if isinstance(part, str) else f"tool_calls[{part}]"
        return self.inspector.open_stream(self.ident.stream_template(), tags={
            self.TAG: str(index), "field": field})

    TAG = "choice"  # the audit tag naming a stream's choice (Responses: its output item)

    async def _emit(self, key: StreamKey, releases: list[Release]) -> bool:
        """Send what the releases let through; True when the stream was blocked."""
        index, part = key
        for release in releases:
            if release.text:
                delta = _chat_delta(part, release.text)
                await self._send({**self.template, "choices": [{
                    "index": index, "delta": delta, "logprobs": None,
                    "finish_reason": None}]})
            if release.blocked:
                verdict = self.streams[key].verdict
                assert verdict is not None  # a blocked stream is closed and audited
                text = self.refusal_of(verdict)
                if text is None:
                    await self._fail(blocked_error(verdict, Direction.COMPLETION))
                    return True
                for chunk in refusal_chunks(self.template, text, role=False, index=index):
                    await self._send(chunk)
                self.refused.add(index)
                for other, stream in self.streams.items():
                    if other[0] == index:
                        stream.abandon()  # the choice's other texts: what was shown
                if len(self.refused) == self.choices:
                    await self.response.write(b"data: [DONE]\n\n")
                    return True
                return False
        return False

    async def _fail(self, error_object: Any) -> None:
        """The stream's last event: an error the SDKs raise as an APIError."""
        await self._send({"error": error_object})

    async def _send(self, event: dict[str, Any]) -> None:
        await self.response.write(b"data: " + json.dumps(event).encode("utf-8") + b"\n\n")


class _Blocked(Exception):
    """A stream was blocked and its error event sent: the relay ends here."""


# Responses API delta events whose text the guardrail streams: type -> the field of the
# matching `.done` event, and how an event names its stream within its output item.
_RESPONSE_TEXTS: dict[str, tuple[str, str]] = {
    "response.output_text": ("text", "content"),
    "response.refusal": ("refusal", "content"),
    "response.function_call_arguments": ("arguments", "arguments"),
    "response.custom_tool_call_input": ("input", "input"),
    "response.code_interpreter_call_code": ("code", "code"),
    "response.mcp_call_arguments": ("arguments", "arguments"),
    "response.reasoning_text": ("text", "reasoning"),
    "response.reasoning_summary_text": ("text", "summary"),
}
# The delta event of a top-level text field, by item type (for text that came whole).
_DELTA_EVENTS: dict[tuple[str, str], str] = {
    ("function_call", "arguments"): "response.function_call_arguments.delta",
    ("mcp_call", "arguments"): "response.mcp_call_arguments.delta",
    ("custom_tool_call", "input"): "response.custom_tool_call_input.delta",
    ("code_interpreter_call", "code"): "response.code_interpreter_call_code.delta",
}
_TEXT_EVENT_FIELDS = frozenset({"type", "item_id", "output_index", "content_index",
                                "summary_index", "logprobs", "name"})
_RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")
_LIFECYCLE = ("response.created", "response.in_progress", "response.queued")
# Progress events of server-side tools: passed on with their position fields only (a
# hostile upstream's extra fields are dropped); any other event type is dropped, since
# its text, if any, also comes in the output item, which is inspected.
_PROGRESS_TOOLS = frozenset({"web_search_call", "file_search_call", "code_interpreter_call",
                             "mcp_call", "mcp_list_tools", "image_generation_call"})
_PROGRESS_PHASES = frozenset({"in_progress", "searching", "interpreting", "generating",
                              "completed", "failed"})


def _response_key(event: dict[str, Any], how: str) -> StreamKey:
    index = event.get("output_index", 0)
    if not isinstance(index, int):
        raise UpstreamBroken("an event without a valid output_index")
    if how in ("arguments", "input", "code"):
        return (index, how)
    part = event.get("summary_index" if how == "summary" else "content_index", 0)
    if not isinstance(part, int):
        raise UpstreamBroken("an event without a valid part index")
    return (index, part) if how == "content" else (index, f"{how}{part}")


def _item_slots(item: Any, index: int,
                passes: frozenset[str]) -> list[tuple[StreamKey, Any, Any]]:
    """The texts of one Responses output item: (stream key, holder, field). Messages and
    reasoning by part; any other item deny by default (`texts.item_leaves`: every
    string but names and ids, keyed by its path). An item or part the guardrail cannot
    read, which the policy does not pass, is UpstreamUninspectable."""
    found: list[tuple[StreamKey, Any, Any]] = []
    if not isinstance(item, dict):
        return found
    kind = item.get("type")
    where = f"output[{index}]"
    if kind not in ("message", "reasoning"):
        if not isinstance(kind, str):
            raise UpstreamBroken("an output item without a type")
        if (kind in texts.UNINSPECTABLE or kind in texts.BLOBS
                or kind not in texts.KNOWN_ITEMS) and kind not in passes:
            raise UpstreamUninspectable(
                f"{where}: a '{kind[:64]}' item the guardrail cannot inspect and the "
                "policy does not pass (gateway.pass_items)")
        try:
            return [((index, path), holder, key)
                    for path, holder, key in texts.item_leaves(item, where)]
        except InvalidRequest as err:
            raise UpstreamBroken(str(err)) from None
    groups = (("content", "reasoning"), ("summary", "summary")) if kind == "reasoning" \
        else (("content", ""),)
    for name, prefix in groups:
        parts = item.get(name)
        if not isinstance(parts, list):
            continue
        for position, part in enumerate(parts):
            if not isinstance(part, dict):
                continue
            _check_part(part, f"{where}.{name}[{position}]", passes)
            key: StreamKey = (index, f"{prefix}{position}") if prefix else (index, position)
            for field in ("text", "refusal"):
                if field in part:
                    found.append((key, part, field))
    return [(key, holder, field) for key, holder, field in found
            if isinstance(holder.get(field), str)]


def _check_part(part: dict[str, Any], where: str, passes: frozenset[str]) -> None:
    kind = part.get("type")
    if kind is not None and (kind in texts.UNINSPECTABLE or kind not in texts.KNOWN_PARTS) \
            and kind not in passes:
        raise UpstreamUninspectable(f"{where}: a '{str(kind)[:64]}' part the guardrail "
                                    "cannot inspect and the policy does not pass")


class ResponsesRelay(ChatRelay):
    """One streamed Responses API call, from the upstream's events to the client's.

    Each text stream is keyed by output index and part (or, outside messages and
    reasoning, the text's path in its item: code interpreter code and logs, MCP
    arguments and output, search queries and results...); text that arrives in an
    `.added` event is taken in as the stream's first delta. A `.done` event finishes its
    stream (its last releases go out first as deltas) and carries the released text;
    `output_item.done` and `response.completed` carry the released texts too, and a
    text they hold that never came as deltas is inspected there, before it is sent.
    Sequence numbers are the gateway's own, since the relay adds and drops events.

    A block with `on_block: refusal`: the open output items are closed (status
    incomplete, with the text released so far), a message carrying the refusal text
    follows as a new output item, and `response.completed` ends the stream, so the SDK's
    final response reads as a normal answer ending in the refusal."""

    TAG = "output_index"

    def __init__(self, inspector: Inspector, ident: Identity, response: web.StreamResponse,
                 timeout: float, choices: int = 1) -> None:
        super().__init__(inspector, ident, response, timeout, choices)
        self.released: dict[StreamKey, str] = {}
        self.delta_templates: dict[StreamKey, dict[str, Any]] = {}
        self.sequence = 0
        self.ended = False
        self.head: dict[str, Any] | None = None  # the response, as response.created said
        self.items: dict[int, dict[str, Any]] = {}  # as added (texts emptied)
        self.parts: dict[int, list[dict[str, Any]]] = {}  # message parts as added
        self.done_items: dict[int, dict[str, Any]] = {}  # as sent when done

    async def _relay(self, events: AsyncIterator[str]) -> None:
        try:
            async for event in json_events(events):
                if event.get("type") == "error" or event.get("error"):
                    await self._fail(event.get("error") or {
                        key: event.get(key) for key in ("message", "code", "param")})
                    return
                await self._event(event)
                if self.ended:
                    return
        except _Blocked:
            return
        raise UpstreamBroken("a stream that ended without response.completed")

    async def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            raise UpstreamBroken("an event without a type")
        base, _, phase = kind.rpartition(".")
        if base in _RESPONSE_TEXTS and phase in ("delta", "done"):
            finished = await self._text_event(event, base, phase)
            if finished is None:
                return
            event = finished
        elif kind in _LIFECYCLE:
            response = event.get("response")
            if isinstance(response, dict):
                response["output"] = []  # items come as items, inspected
                response.pop("output_text", None)
                self.head = copy.deepcopy(response)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            index = event.get("output_index", 0)
            done = kind.endswith(".done")
            await self._item(event.get("item"), index, done=done)
            if isinstance(index, int) and isinstance(event.get("item"), dict):
                (self.done_items if done else self.items)[index] = copy.deepcopy(event["item"])
        elif kind in ("response.content_part.added", "response.content_part.done",
                      "response.reasoning_summary_part.added",
                      "response.reasoning_summary_part.done"):
            how = "summary" if "summary" in kind else "content"
            key = _response_key(event, how)
            part = event.get("part")
            if isinstance(part, dict):
                _check_part(part, f"output[{key[0]}].{how}", self.passes)
                for field in ("text", "refusal"):
                    if isinstance(part.get(field), str):
                        await self._slot(key, part, field, done=kind.endswith(".done"))
                if kind == "response.content_part.added":
                    self.parts.setdefault(key[0], []).append(copy.deepcopy(part))
        elif kind in _RESPONSE_ENDS:
            response = event.get("response")
            if isinstance(response, dict):
                output = response.get("output")
                items: list[Any] = output if isinstance(output, list) else []
                for index, item in enumerate(items):
                    await self._item(item, index, done=True)
                if isinstance(response.get("output_text"), str):
                    response["output_text"] = "".join(
                        part["text"] for item in items
                        if isinstance(item, dict) and item.get("type") == "message"
                        for part in item.get("content") or []
                        if isinstance(part, dict) and part.get("type") == "output_text"
                        and isinstance(part.get("text"), str))
            self.ended = True
        elif base.removeprefix("response.") in _PROGRESS_TOOLS and phase in _PROGRESS_PHASES:
            event = {name: value for name, value in event.items()
                     if name in ("type", "item_id", "output_index")}
        else:
            return  # an event the guardrail does not know: not passed on blind
        await self._send(event)

    async def _text_event(self, event: dict[str, Any], base: str,
                          phase: str) -> dict[str, Any] | None:
        """A text delta (fed to its stream; None: nothing to send now) or done event
        (the released text in place of the upstream's). Only the fields the API defines
        for them are kept: a hostile upstream's extra fields are not passed on."""
        field, how = _RESPONSE_TEXTS[base]
        key = _response_key(event, how)
        kept = {name: ([] if name == "logprobs" else value) for name, value in event.items()
                if name in _TEXT_EVENT_FIELDS}
        if phase == "delta":
            text = event.get("delta")
            if not isinstance(text, str):
                raise UpstreamBroken("a delta that is not a string")
            self.delta_templates[key] = kept
            await self._feed(key, text)
            return None
        value = event.get(field)
        if isinstance(value, str) and value and key not in self.streams:
            self._open(key).add(value)  # a done event without deltas
        kept[field] = await self._settle(key) if key in self.streams else ""
        return kept

    async def _item(self, item: Any, index: Any, *, done: bool) -> None:
        if not isinstance(index, int):
            raise UpstreamBroken("an event without a valid output_index")
        for key, holder, field in _item_slots(item, index, self.passes):
            await self._slot(key, holder, field, done=done)

    async def _slot(self, key: StreamKey, holder: Any, field: Any, *,
                    done: bool) -> None:
        """One text inside an added or done object: taken in, or replaced by what was
        released (its stream finished first)."""
        text = holder[field]
        if not done:
            holder[field] = ""
            if text:
                await self._feed(key, text)
            return
        if text and key not in self.streams:
            self._open(key).add(text)
        holder[field] = await self._settle(key) if key in self.streams else ""

    def _open(self, key: StreamKey) -> LiveStream:
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self._new_stream(key)
            self.released[key] = ""
        return stream

    async def _feed(self, key: StreamKey, text: str) -> None:
        if key in self.streams and self.streams[key].verdict is not None:
            raise UpstreamBroken("text after its part was done")
        stream = self._open(key)
        if text:
            stream.add(text)
            await self._emit(key, await stream.advance())

    async def _settle(self, key: StreamKey) -> str:
        """Finish the stream (once) and answer the whole text it released."""
        stream = self.streams[key]
        if stream.verdict is None:
            await self._emit(key, await stream.finish())
        return self.released[key]

    async def _emit(self, key: StreamKey, releases: list[Release]) -> bool:
        for release in releases:
            if release.text:
                self.released[key] += release.text
                template = self.delta_templates.get(key) or self._delta_template(key)
                if template is not None:  # text with no delta event goes in its item
                    await self._send({**template, "delta": release.text})
            if release.blocked:
                verdict = self.streams[key].verdict
                assert verdict is not None  # a blocked stream is closed and audited
                text = self.refusal_of(verdict)
                if text is None:
                    await self._fail(blocked_error(verdict, Direction.COMPLETION))
                else:
                    await self._refuse_rest(verdict, text)
                raise _Blocked
        return False

    async def _refuse_rest(self, verdict: Verdict, text: str) -> None:
        """End the stream in the refusal text (see the class docstring)."""
        for index in sorted(self.items):
            if index not in self.done_items:
                item = self._partial(index)
                await self._send({"type": "response.output_item.done", "output_index": index,
                                  "item": item})
                self.done_items[index] = item
        index = max([*self.items, *self.done_items], default=-1) + 1
        item_id = f"msg_guardrail_{verdict.request_id}"
        for event in response_refusal_events(index, item_id, text):
            await self._send(event)
        head = self.head or {"id": f"resp_guardrail_{verdict.request_id}",
                             "object": "response", "created_at": int(time.time()),
                             "model": "guardrail", "parallel_tool_calls": False,
                             "tool_choice": "none", "tools": []}
        await self._send({"type": "response.completed", "response": {
            **head, "status": "completed", "output": [
                *(self.done_items[i] for i in sorted(self.done_items)),
                refusal_item(item_id, text)]}})

    def _partial(self, index: int) -> dict[str, Any]:
        """An output item cut short by a block: as added, status incomplete, with the
        text released so far."""
        item: dict[str, Any] = copy.deepcopy(self.items[index])
        item["status"] = "incomplete"
        if item.get("type") == "message":
            item["content"] = [
                {**part, field: self.released.get((index, position), "")}
                for position, part in enumerate(self.parts.get(index, []))
                for field in ("refusal" if part.get("type") == "refusal" else "text",)]
        else:
            for (where, name), released in self.released.items():
                if where == index and isinstance(name, str) and name in item \
                        and isinstance(item[name], str):
                    item[name] = released
        return item

    def _delta_template(self, key: StreamKey) -> dict[str, Any] | None:
        """A delta event for text that came in an `.added` or `.done` object (None: the
        text has no delta event; it is carried by its item alone)."""
        index, part = key
        if isinstance(part, int):
            return {"type": "response.output_text.delta", "item_id": "", "output_index": index,
                    "content_index": part, "logprobs": []}
        kind = (self.items.get(index) or self.done_items.get(index) or {}).get("type")
        if part in ("arguments", "input", "code"):
            delta = _DELTA_EVENTS.get((str(kind), part))
            return None if delta is None else {"type": delta, "item_id": "",
                                               "output_index": index}
        for how, event, name in (("summary", "response.reasoning_summary_text.delta",
                                  "summary_index"),
                                 ("reasoning", "response.reasoning_text.delta",
                                  "content_index")):
            number = part.removeprefix(how)
            if kind == "reasoning" and number != part and number.isdigit():
                return {"type": event, "item_id": "", "output_index": index,
                        name: int(number)}
        return None

    async def _fail(self, error_object: Any) -> None:
        """A Responses `error` event that also holds the error object, so that the SDKs
        raise it (they raise any event with an `error` field) and event readers see it."""
        fields = error_object if isinstance(error_object, dict) else {}
        await self._send({"type": "error", "code": fields.get("code"),
                          "message": str(fields.get("message") or "error"),
                          "param": fields.get("param"), "error": error_object})

    async def _send(self, event: dict[str, Any]) -> None:
        event["sequence_number"] = self.sequence
        self.sequence += 1
        await self.response.write(sse_event(event))
