"""HTTP shapes shared by the doors: who is calling, errors as the SDKs expect them.

Errors are OpenAI-style objects, `{"error": {"message", "type", "param", "code"}}`,
with a status the SDKs map to the right exception (and retry when it may help: 429,
503, 504). Messages name fields, limits and rule ids, never the text sent.
"""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sidecar import errors
from sidecar.errors import GuardrailError, InvalidRequest
from sidecar.types import Decision, Direction, Inspection, Message, Verdict

HEADER_PREFIX = "x-guardrail-"


class UnsupportedEncoding(InvalidRequest):
    """A body in a `content-encoding` the gateway does not decode (415, not 400)."""


# The deepest JSON nesting a body may have. Python's parser fails with RecursionError
# near 1,000 levels, and every walk over the body recurses too; no request the APIs
# define comes near this, a JSON Schema included.
MAX_BODY_DEPTH = 100
# Content codings a body may come in: decoded here, not by aiohttp, whose own errors
# were a 500 (bad gzip) or a plain-text 400 (br, zstd) instead of the JSON error shape.
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
             "deflate": zlib.MAX_WBITS}
_STATUSES: tuple[tuple[type[GuardrailError], int, str], ...] = (
    (errors.RequestTooLarge, 413, "request_too_large"),
    (UnsupportedEncoding, 415, "invalid_request_error"),
    (errors.Overloaded, 429, "guardrail_overloaded"),
    (errors.DeadlineExceeded, 504, "guardrail_timeout"),
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.NotReady, 503, "guardrail_unavailable"),
    (errors.AuditUnavailable, 503, "guardrail_unavailable"),
    (errors.PolicyError, 500, "guardrail_error"),
    (errors.ConfigError, 500, "guardrail_error"),
)


def error(status: int, message: str, kind: str, code: str | None = None,
          **extra: Any) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None,
                      "code": code or kind, **extra}}
    return web.json_response(body, status=status)


def status_of(err: GuardrailError) -> tuple[int, str]:
    for kind, status, name in _STATUSES:
        if isinstance(err, kind):
            return status, name
    return 500, "guardrail_error"


def refusal(err: GuardrailError) -> web.Response:
    status, kind = status_of(err)
    return error(status, str(err), kind)


def internal(request_id: str) -> web.Response:
    return error(500, f"internal error in the guardrail (request_id={request_id!r})",
                 "guardrail_error")


def blocked_error(verdict: Verdict, direction: Direction) -> dict[str, Any]:
    """The error object of a blocked request or answer: which rules and entity types,
    the audit record's id; never the text."""
    rules = sorted({v.rule_id for v in verdict.violations if not v.shadow})
    entities = sorted({f.entity_type for f in verdict.findings
                       if f.action == "block" and not f.shadow})
    reasons = ", ".join([*rules, *entities]) or "policy"
    return {"message": f"the guardrail blocked this {direction.value} ({reasons}); "
                       f"audit id {verdict.audit_id or '-'}",
            "type": "guardrail_blocked", "param": None, "code": "guardrail_blocked",
            "direction": direction.value, "rule_ids": rules, "entity_types": entities,
            "audit_id": verdict.audit_id, "request_id": verdict.request_id,
            "policy": verdict.policy}


def blocked(verdict: Verdict, direction: Direction) -> web.Response:
    return web.json_response({"error": blocked_error(verdict, direction)}, status=400)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; InvalidRequest (never the bytes) when it is not one:
    a body that does not decode (`content-encoding`), is not JSON, or nests deeper than
    MAX_BODY_DEPTH. The server must not decompress bodies itself (`start_gateway` runs
    it with auto_decompress=False): the codings are read here, bounded by the same
    size limit, so that every malformed body gets the gateway's own JSON error."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.RequestTooLarge(
            f"body: larger than {request.client_max_size} bytes") from None
    raw = _decoded(raw, request.headers.getall("Content-Encoding", []),
                   request.client_max_size)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body: not valid JSON") from None
    except RecursionError:
        raise InvalidRequest(f"body: nested deeper than {MAX_BODY_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object")
    check_depth(body, "body")
    return body


def _decoded(raw: bytes, headers: list[str], limit: int) -> bytes:
    """The body as sent before its `content-encoding` (gzip or deflate, once): at most
    `limit` bytes, so a small bomb cannot grow past the size a plain body may have."""
    codings = [coding.strip().lower() for header in headers for coding in header.split(",")]
    codings = [coding for coding in codings if coding not in ("", "identity")]
    if not codings:
        return raw
    if len(codings) > 1 or codings[0] not in _DECODERS:
        raise UnsupportedEncoding("content-encoding: the guardrail reads bodies plain, "
                                  "gzip or deflate (one coding)")
    coding = codings[0]
    wbits = _DECODERS[coding]
    if coding == "deflate" and raw and raw[0] & 0xF != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, as some clients send it
    decoder = zlib.decompressobj(wbits)
    try:
        plain = decoder.decompress(raw, limit + 1)
    except zlib.error:
        raise InvalidRequest(f"body: not valid {coding} data") from None
    if len(plain) > limit or decoder.unconsumed_tail:
        raise errors.RequestTooLarge(f"body: larger than {limit} bytes once decoded")
    if not decoder.eof or decoder.unused_data:
        raise InvalidRequest(f"body: not valid {coding} data")
    return plain


def check_depth(body: Any, what: str) -> None:
    """Refuse JSON nested deeper than MAX_BODY_DEPTH (iteratively: no recursion), a
    request's body or an upstream's answer, before anything walks or re-encodes it."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise InvalidRequest(f"{what}: nested deeper than {MAX_BODY_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((inner, depth + 1) for inner in value.values()
                         if isinstance(inner, (dict, list)))
        elif isinstance(value, list):
            stack.extend((inner, depth + 1) for inner in value
                         if isinstance(inner, (dict, list)))


@dataclass(frozen=True)
class Identity:
    """Who is asking, for policy selection, pseudonyms and the audit record."""

    request_id: str
    tenant: str = ""
    app: str = ""
    subject_id: str = ""
    conversation_id: str = ""
    user_region: str = ""
    target_region: str = ""
    # Whether the conversation id was made here (one per call) rather than given.
    conversation_made: bool = False

    def inspection(self, direction: Direction, messages: tuple[Message, ...]) -> Inspection:
        return Inspection(direction=direction, messages=messages, chat=True,
                          request_id=self.request_id, tenant=self.tenant, app=self.app,
                          subject_id=self.subject_id, conversation_id=self.conversation_id,
                          user_region=self.user_region, target_region=self.target_region)

    def stream_template(self) -> Inspection:
        return Inspection(direction=Direction.COMPLETION, messages=(), chat=False,
                          request_id=self.request_id, tenant=self.tenant, app=self.app,
                          subject_id=self.subject_id, conversation_id=self.conversation_id,
                          user_region=self.user_region, target_region=self.target_region)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _header(headers: Any, name: str) -> str:
    """One identity header's value; InvalidRequest naming it when it was sent more than
    once with different values. aiohttp's `get` answers the first, so `tenant: zzz`
    then `tenant: acme` was read as zzz while a proxy, a log or the app may read the
    other: who is asking must not depend on which copy a reader takes."""
    values = headers.getall(name, []) if hasattr(headers, "getall") else \
        [value for value in (headers.get(name),) if value is not None]
    if len(set(values)) > 1:
        raise InvalidRequest(f"{name}: sent more than once with different values; "
                             "send it once")
    return _text(values[0]) if values else ""


def identity(headers: Any, body: dict[str, Any] | None = None,
             fallbacks: dict[str, str] | None = None) -> Identity:
    """Identity from `x-guardrail-*` headers first, then `fallbacks` (door specific:
    the OpenAI `user` and `metadata` fields, LiteLLM's request metadata).

    Without a conversation id, one is made for this call alone, so the values a
    prompt's pseudonyms stand for are restored in its own answer and nowhere else."""
    more = fallbacks or {}

    def pick(name: str) -> str:
        return _header(headers, HEADER_PREFIX + name.replace("_", "-")) or more.get(name, "")

    given, generic = pick("request_id"), _header(headers, "x-request-id")  # both checked
    request_id = given or generic or uuid.uuid4().hex
    conversation = pick("conversation_id")
    return Identity(request_id=request_id, tenant=pick("tenant"), app=pick("app"),
                    subject_id=pick("subject_id"),
                    conversation_id=conversation or f"gateway-{request_id}",
                    user_region=pick("user_region"), target_region=pick("target_region"),
                    conversation_made=not conversation)


def openai_fallbacks(body: dict[str, Any]) -> dict[str, str]:
    """The OpenAI body's own identity fields: `metadata` (tenant, app, subject_id,
    conversation_id, user_region) and, for the subject, `user` or `safety_identifier`."""
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    found = {name: _text(metadata.get(name)) for name in (
        "tenant", "app", "subject_id", "conversation_id", "user_region", "target_region")}
    found["subject_id"] = found["subject_id"] or _text(body.get("user")) \
        or _text(body.get("safety_identifier"))
    return {name: value for name, value in found.items() if value}


def decision_name(verdict: Verdict) -> str:
    return Decision(verdict.decision).name
