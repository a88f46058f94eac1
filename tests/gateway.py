"""Helpers for the HTTP door tests: a recording model upstream and a sidecar with its
gateway, both real servers on 127.0.0.1 ports the OS picks.

`RecordingUpstream` is an OpenAI-compatible model API that records exactly what it
received (method, path with query, headers, body bytes) and answers as the test
scripts it: by default it echoes the last user message, as a JSON completion or, with
`stream: true`, as SSE chunks cut where the test says (`splits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar.auditing import AuditWriter, open_store
from sidecar.config import Settings
from sidecar.pipeline import Pipeline
from sidecar.runner import make_runner
from tests.conftest import _ServerThread, make_settings, pseudonymizer

# The ids an answer carries (audit and request ids, the refusal item's): 32 random hex
# digits, which hold `1111` about once in 2,000. A test looking for a card's digits in
# what a client got masks them (a round-12 clean-clone CI failed on one).
_RANDOM_IDS = re.compile(r"[0-9a-f]{32}")


def ids_masked(text: str) -> str:
    """`text` with every 32-hex-digit id replaced by `<id>`."""
    return _RANDOM_IDS.sub("<id>", text)


@dataclass
class Received:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def everything(self) -> str:
        """All the upstream saw, as one text to search for leaked values."""
        return "\n".join([self.path_qs, *(f"{k}: {v}" for k, v in self.headers.items()),
                          self.body.decode("utf-8", "replace")])


Script = Callable[[web.Request, Any], Any]


@dataclass
class RecordingUpstream:
    received: list[Received] = field(default_factory=list)
    script: Script | None = None  # None: echo
    splits: list[int] | None = None  # where to cut a streamed echo (character offsets)
    url: str = ""

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> web.AppRunner:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        return runner

    def reset(self, script: Script | None = None, splits: list[int] | None = None) -> None:
        self.received.clear()
        self.script, self.splits = script, splits

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path_qs,
                                      dict(request.headers), body))
        payload = json.loads(body) if body else {}
        if self.script is not None:
            answer = self.script(request, payload)
            if asyncio.iscoroutine(answer):
                answer = await answer
            if isinstance(answer, web.StreamResponse):
                return answer
            if isinstance(answer, list):  # SSE events (dicts or raw strings)
                return await sse(request, answer)
            return web.json_response(answer)
        return await self._echo(request, payload)

    async def _echo(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        path = request.path
        if path.endswith("/embeddings"):
            items = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
            return web.json_response({"object": "list", "model": payload.get("model", "m"),
                                      "data": [{"object": "embedding", "index": i,
                                                "embedding": [0.1, 0.2]}
                                               for i in range(len(items))],
                                      "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        if path.endswith("/responses"):
            text = payload["input"] if isinstance(payload["input"], str) else \
                payload["input"][-1]["content"]
            if payload.get("stream"):
                return await sse(request, response_events(f"You said: {text}", self.splits),
                                 done=False)
            return web.json_response(response_object(f"You said: {text}"))
        text = last_user_text(payload)
        if payload.get("stream"):
            return await sse(request, chat_chunks(f"You said: {text}", self.splits))
        return web.json_response(chat_completion(f"You said: {text}"))


def last_user_text(payload: dict[str, Any]) -> str:
    for message in reversed(payload.get("messages", [])):
        if message.get("role") == "user":
            content = message["content"]
            if isinstance(content, list):
                return " ".join(part["text"] for part in content if "text" in part)
            return str(content)
    return ""


def chat_completion(text: str, **message: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, **message}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def response_object(text: str) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
            "model": "m", "output": [{"type": "message", "id": "msg_1", "status": "completed",
                                      "role": "assistant", "content": [
                                          {"type": "output_text", "text": text,
                                           "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def response_events(text: str, splits: list[int] | None = None) -> list[dict[str, Any]]:
    """The events the Responses API streams for `text` (one message, one output_text
    part), its deltas cut at `splits` (default: every 7 chars), as OpenAI sends them."""
    cuts = sorted(set(splits if splits is not None else range(7, len(text), 7)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    empty = {**response_object(""), "status": "in_progress", "output": []}
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant",
            "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": empty},
        {"type": "response.in_progress", "response": empty},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **where, "part": part}]
    events += [{"type": "response.output_text.delta", **where, "delta": piece,
                "logprobs": []} for piece in pieces if piece]
    done_part = {**part, "text": text}
    done_item = {**item, "status": "completed", "content": [done_part]}
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": done_part},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {"type": "response.completed", "response": response_object(text)}]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def chat_chunks(text: str, splits: list[int] | None = None) -> list[dict[str, Any]]:
    """The chunks a model streams for `text`, cut at `splits` (default: every 7 chars)."""
    cuts = sorted(set(splits if splits is not None else range(7, len(text), 7)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": piece},
                                     "finish_reason": None}]} for piece in pieces if piece]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return chunks


async def sse(request: web.Request, events: list[Any], done: bool = True) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        if isinstance(event, float):  # a pause, in seconds
            await asyncio.sleep(event)
            continue
        data = event if isinstance(event, str) else json.dumps(event)
        await response.write(f"data: {data}\n\n".encode())
    if done:
        await response.write(b"data: [DONE]\n\n")
    return response


@dataclass
class GatewaySidecar:
    server: _ServerThread
    address: str  # HOST:PORT of the gateway
    audit_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.address}/v1"


def audit_rows(audit_dir: Path, request_id: str) -> list[tuple[str, dict[str, str]]]:
    """(decision, tags) of the audit records of one request, in the order written."""
    import sqlite3

    [database] = (audit_dir / "audit").rglob("audit.db")
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT decision, tags FROM records ORDER BY seq").fetchall()
    found = [(str(decision), json.loads(tags)) for decision, tags in rows]
    return [(decision, tags) for decision, tags in found if tags.get("request_id") == request_id]


@contextmanager
def gateway_sidecar(tmp: Path, upstream: RecordingUpstream,
                    **overrides: Any) -> Iterator[GatewaySidecar]:
    """A real sidecar (inline runner, audit and pseudonym vault on) with its gateway."""
    values: dict[str, Any] = {"workers": 0, "gateway_listen": "127.0.0.1:0",
                              "upstream": upstream.url, "upstream_timeout": 3.0,
                              "max_text_bytes": 64 * 1024}
    values.update(overrides)
    settings: Settings = make_settings(tmp, **values)
    pipeline = Pipeline.from_settings(settings)
    audit = AuditWriter(open_store(settings), lambda name: (
        pipeline.policies.by_name[name].policy if name in pipeline.policies.by_name else None))
    server = _ServerThread(settings, make_runner(settings, pipeline), audit,
                           pseudonymizer(settings, pipeline))
    try:
        yield GatewaySidecar(server, server.running.gateway.address, settings.data_dir)
    finally:
        server.stop()
