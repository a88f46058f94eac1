"""The OpenAI-compatible gateway: an app changes its SDK's `base_url`, nothing else.

    POST /v1/chat/completions   streaming and not
    POST /v1/embeddings         inputs inspected as prompts
    POST /v1/responses          the Responses API, streaming and not

Every text of the request is inspected as the prompt (`sidecar.gateway.texts`), and
only the result goes upstream; the answer's texts are inspected as the completion,
with pseudonyms restored, before the client sees them. A block is an HTTP 400 with an
OpenAI-style error of type `guardrail_blocked` (rule ids, entity types, audit id), or,
when the policy says `on_block: {respond: refusal}`, a normal answer carrying its
refusal text (chat streamed or not, Responses not streamed: `_refuse`);
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
object, which the SDKs raise as an APIError.
"""

from __future__ import annotations

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
Slots = Callable[[dict[str, Any]], list[texts.Slot]]
StreamKey = tuple[int, str | int]  # (choice index, "content" | "refusal" | tool call index)


class UpstreamBroken(Exception):
    """The upstream answered 200 with something that is not what the API promises."""


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
        return await self._call(request, "embeddings", texts.embeddings_input,
                                lambda body: [], streams=False)

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
            slots = prompt(body)
            verdict = await self._inspect(ident, Direction.PROMPT, slots)
            if verdict.decision == Decision.BLOCK:
                text = self._refusal_text(verdict, path, stream)
                if text is None:
                    return self._done(blocked(verdict, Direction.PROMPT), ident, path,
                                      started)
                return self._done(await self._refuse(request, verdict, Direction.PROMPT,
                                                     body, text, stream=stream), ident, path,
                                  started)
            texts.write_back(slots, verdict.messages)
            scrub_identity(body, self.identity_key)
            base, region = self.upstreams.choose(verdict.routing_tags)
        except NoUpstream as err:
            return self._done(error(400, str(err), "guardrail_blocked",
                                    rule_ids=["residency"]), ident, path, started)
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
                response = await self._stream(request, url, body, ident)
            else:
                response = await self._unary(request, url, body, ident, answer)
        return self._done(response, ident, path, started, region)

    async def _inspect(self, ident: Identity, direction: Direction,
                       slots: list[texts.Slot]) -> Verdict:
        async with self.inspector.call(direction, ident.request_id) as call:
            return await self.inspector.inspect(
                ident.inspection(direction, texts.messages_of(slots)), None, call)

    async def _unary(self, request: web.Request, url: str, body: dict[str, Any],
                     ident: Identity, answer: Slots) -> web.StreamResponse:
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
        except (ValueError, UnicodeDecodeError):
            return error(502, "the upstream answered 2xx with a body that is not a JSON "
                              "object", "upstream_invalid_response")
        slots = answer(result)
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
            if verdict.decision == Decision.MODIFY:
                _drop_logprobs(result)
        return web.json_response(result, headers=headers)

    async def _stream(self, request: web.Request, url: str, body: dict[str, Any],
                      ident: Identity) -> web.StreamResponse:
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
            relay = kind(self.inspector, ident, response, self.timeout)
            if kind is ChatRelay:
                relay.refusal_of = lambda verdict: self._refusal_text(
                    verdict, "chat/completions", True)
            try:
                await relay.run(_events(upstream.content))
            except ConnectionError:  # the client went away: what was shown is audited
                log.info("gateway client went away mid-stream",
                         extra={"request_id": ident.request_id})
            return response

    def _refusal_text(self, verdict: Verdict, path: str, stream: bool) -> str | None:
        """The refusal text to answer a block with, when the verdict's policy says
        `on_block.respond: refusal` and the door has a completion to carry it (chat,
        streamed or not; Responses, not streamed); None: answer with an error."""
        if path not in ("chat/completions", "responses") or (stream and path == "responses"):
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
                   role: bool) -> list[dict[str, Any]]:
    """The chunks of a streamed refusal: its text, then finish_reason content_filter."""
    delta: dict[str, Any] = {"role": "assistant", "content": text} if role else \
        {"content": text}
    return [{**template, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": None}]},
            {**template, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                      "finish_reason": "content_filter"}]}]


def _drop_logprobs(result: dict[str, Any]) -> None:
    for choice in result.get("choices") or []:
        if isinstance(choice, dict) and choice.get("logprobs") is not None:
            choice["logprobs"] = None


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


def _meaningful(value: Any) -> bool:
    """Whether a delta still says something once its text was taken out."""
    if isinstance(value, dict):
        return any(_meaningful(item) for key, item in value.items() if key != "index")
    if isinstance(value, list):
        return any(_meaningful(item) for item in value)
    return value is not None and value != ""


class ChatRelay:
    """One streamed chat completion, from the upstream's events to the client's."""

    def __init__(self, inspector: Inspector, ident: Identity, response: web.StreamResponse,
                 timeout: float) -> None:
        self.inspector = inspector
        self.ident = ident
        self.response = response
        self.timeout = timeout
        self.streams: dict[StreamKey, LiveStream] = {}
        self.template: dict[str, Any] = {}
        self.deferred: list[dict[str, Any]] = []  # finish and usage chunks: after the text
        # The policy's refusal text for a block (None: a final error event instead).
        self.refusal_of: Callable[[Verdict], str | None] = lambda verdict: None

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
        except UpstreamBroken as err:
            await self._fail({"message": f"the upstream sent {err}",
                              "type": "upstream_invalid_response", "param": None,
                              "code": "upstream_invalid_response"})
        finally:
            for stream in self.streams.values():
                stream.abandon()  # a no-op for streams that finished

    async def _relay(self, events: AsyncIterator[str]) -> None:
        async for data in events:
            if data.strip() == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise UpstreamBroken("an event that is not JSON") from None
            if not isinstance(chunk, dict):
                raise UpstreamBroken("an event that is not a JSON object")
            if chunk.get("error"):  # the upstream's own error: passed on, and the end
                await self._fail(chunk["error"])
                return
            for key in await self._absorb(chunk):
                if await self._emit(key, await self.streams[key].advance()):
                    return
        for key, stream in list(self.streams.items()):
            if await self._emit(key, await stream.finish()):
                return
        for chunk in self.deferred:
            await self._send(chunk)
        await self.response.write(b"data: [DONE]\n\n")

    async def _absorb(self, chunk: dict[str, Any]) -> list[StreamKey]:
        """Take the texts out of an upstream chunk into their streams; pass on at once
        what is left (roles, tool call names), keep finish and usage chunks for the end."""
        if not self.template:
            self.template = {key: chunk[key] for key in (
                "id", "object", "created", "model", "system_fingerprint", "service_tier")
                if key in chunk}
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            self.deferred.append(chunk)
            return []
        touched: list[StreamKey] = []
        now: list[dict[str, Any]] = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise UpstreamBroken("a choice that is not an object")
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if not isinstance(index, int) or not isinstance(delta, dict | None):
                raise UpstreamBroken("a choice without a valid index or delta")
            delta = delta or {}
            choice["logprobs"] = None
            for name in ("content", "refusal"):
                touched += self._take(delta, name, (index, name))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        position = call.get("index", 0)
                        touched += self._take(function, "arguments", (
                            index, position if isinstance(position, int) else 0))
            if choice.get("finish_reason") is not None:
                self.deferred.append({**chunk, "choices": [choice]})
            elif _meaningful(delta):
                now.append(choice)
        if now:
            await self._send({**chunk, "choices": now})
        return list(dict.fromkeys(touched))

    def _take(self, holder: dict[str, Any], name: str, key: StreamKey) -> list[StreamKey]:
        text = holder.pop(name, None)
        if text is None or text == "":
            return []
        if not isinstance(text, str):
            raise UpstreamBroken(f"a {name} that is not a string")
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self.inspector.open_stream(
                self.ident.stream_template())
        stream.add(text)
        return [key]

    async def _emit(self, key: StreamKey, releases: list[Release]) -> bool:
        """Send what the releases let through; True when the stream was blocked."""
        index, part = key
        for release in releases:
            if release.text:
                delta: dict[str, Any] = {part: release.text} if isinstance(part, str) else \
                    {"tool_calls": [{"index": part, "function": {"arguments": release.text}}]}
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
                for chunk in refusal_chunks(self.template, text, role=False):
                    await self._send(chunk)
                await self.response.write(b"data: [DONE]\n\n")
                return True
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
    "response.reasoning_text": ("text", "reasoning"),
    "response.reasoning_summary_text": ("text", "summary"),
}
_RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


def _response_key(event: dict[str, Any], how: str) -> StreamKey:
    index = event.get("output_index", 0)
    if not isinstance(index, int):
        raise UpstreamBroken("an event without a valid output_index")
    if how in ("arguments", "input"):
        return (index, how)
    part = event.get("summary_index" if how == "summary" else "content_index", 0)
    if not isinstance(part, int):
        raise UpstreamBroken("an event without a valid part index")
    return (index, part) if how == "content" else (index, f"{how}{part}")


def _item_slots(item: Any, index: int) -> list[tuple[StreamKey, dict[str, Any], str]]:
    """The texts of one Responses output item: (stream key, holder, field)."""
    found: list[tuple[StreamKey, dict[str, Any], str]] = []
    if not isinstance(item, dict):
        return found
    kind = item.get("type")
    if kind == "function_call":
        found.append(((index, "arguments"), item, "arguments"))
    elif kind == "custom_tool_call":
        found.append(((index, "input"), item, "input"))
    groups = (("content", "reasoning"), ("summary", "summary")) if kind == "reasoning" \
        else (("content", ""),)
    for name, prefix in groups:
        parts = item.get(name)
        if not isinstance(parts, list):
            continue
        for position, part in enumerate(parts):
            if not isinstance(part, dict):
                continue
            key: StreamKey = (index, f"{prefix}{position}") if prefix else (index, position)
            for field in ("text", "refusal"):
                if field in part:
                    found.append((key, part, field))
    return [(key, holder, field) for key, holder, field in found
            if isinstance(holder.get(field), str)]


class ResponsesRelay(ChatRelay):
    """One streamed Responses API call, from the upstream's events to the client's.

    Each text stream is keyed by output index and part; text that arrives in an
    `.added` event is taken in as the stream's first delta. A `.done` event finishes its
    stream (its last releases go out first as deltas) and carries the released text;
    `output_item.done` and `response.completed` carry the released texts too, and a
    text they hold that never came as deltas is inspected there, before it is sent.
    Sequence numbers are the gateway's own, since the relay adds and drops events."""

    def __init__(self, inspector: Inspector, ident: Identity, response: web.StreamResponse,
                 timeout: float) -> None:
        super().__init__(inspector, ident, response, timeout)
        self.released: dict[StreamKey, str] = {}
        self.delta_templates: dict[StreamKey, dict[str, Any]] = {}
        self.sequence = 0
        self.ended = False

    async def _relay(self, events: AsyncIterator[str]) -> None:
        try:
            async for data in events:
                if data.strip() == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    raise UpstreamBroken("an event that is not JSON") from None
                if not isinstance(event, dict):
                    raise UpstreamBroken("an event that is not a JSON object")
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
            field, how = _RESPONSE_TEXTS[base]
            key = _response_key(event, how)
            if phase == "delta":
                text = event.get("delta")
                if not isinstance(text, str):
                    raise UpstreamBroken("a delta that is not a string")
                self.delta_templates[key] = {
                    name: ([] if name == "logprobs" else value) for name, value in event.items()
                    if name not in ("delta", "sequence_number", "obfuscation")}
                await self._feed(key, text)
                return
            value = event.get(field)
            if isinstance(value, str) and value and key not in self.streams:
                self._open(key).add(value)  # a done event without deltas
            event[field] = await self._settle(key)
            if "logprobs" in event:
                event["logprobs"] = []
        elif kind in ("response.output_item.added", "response.output_item.done"):
            await self._item(event.get("item"), event.get("output_index", 0),
                             done=kind.endswith(".done"))
        elif kind in ("response.content_part.added", "response.content_part.done",
                      "response.reasoning_summary_part.added",
                      "response.reasoning_summary_part.done"):
            how = "summary" if "summary" in kind else "content"
            key = _response_key(event, how)
            part = event.get("part")
            if isinstance(part, dict):
                for field in ("text", "refusal"):
                    if isinstance(part.get(field), str):
                        await self._slot(key, part, field, done=kind.endswith(".done"))
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
        await self._send(event)

    async def _item(self, item: Any, index: Any, *, done: bool) -> None:
        if not isinstance(index, int):
            raise UpstreamBroken("an event without a valid output_index")
        for key, holder, field in _item_slots(item, index):
            await self._slot(key, holder, field, done=done)

    async def _slot(self, key: StreamKey, holder: dict[str, Any], field: str, *,
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
            stream = self.streams[key] = self.inspector.open_stream(
                self.ident.stream_template())
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
                await self._send({**template, "delta": release.text})
            if release.blocked:
                verdict = self.streams[key].verdict
                assert verdict is not None  # a blocked stream is closed and audited
                await self._fail(blocked_error(verdict, Direction.COMPLETION))
                raise _Blocked
        return False

    @staticmethod
    def _delta_template(key: StreamKey) -> dict[str, Any]:
        """A delta event for text that came in an `.added` or `.done` object."""
        index, part = key
        if isinstance(part, int):
            return {"type": "response.output_text.delta", "item_id": "", "output_index": index,
                    "content_index": part, "logprobs": []}
        if part in ("arguments", "input"):
            kind = "function_call_arguments" if part == "arguments" else "custom_tool_call_input"
            return {"type": f"response.{kind}.delta", "item_id": "", "output_index": index}
        how = "summary" if part.startswith("summary") else "reasoning"
        number = int(part.removeprefix(how))
        if how == "summary":
            return {"type": "response.reasoning_summary_text.delta", "item_id": "",
                    "output_index": index, "summary_index": number}
        return {"type": "response.reasoning_text.delta", "item_id": "", "output_index": index,
                "content_index": number}

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
        kind = event.get("type")
        head = f"event: {kind}\n".encode() if isinstance(kind, str) else b""
        await self.response.write(head + b"data: " + json.dumps(event).encode("utf-8")
                                  + b"\n\n")
