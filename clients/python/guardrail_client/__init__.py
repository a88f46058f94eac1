"""A small typed client for apps written in Python: sync (`GuardrailClient`) and asyncio
(`AsyncGuardrailClient`), over the same gRPC API any language can call.

    with GuardrailClient("127.0.0.1:50051", tenant="acme", app="support-web") as guard:
        ask = guard.inspect_prompt(user_text, conversation_id=chat_id)
        if ask.blocked:
            return "Sorry, I can't help with that."
        answer = guard.inspect_completion(call_model(ask.text), conversation_id=chat_id)
        return answer.text

Calls that fail raise `GuardrailCallError` with the gRPC status; `retryable` says whether
trying again may help (the sidecar is starting, draining, or shedding load) and is
false for a request that can never succeed (over a size limit, invalid). A text the
client cannot even send (a lone UTF-16 surrogate, as a broken JavaScript or Windows
string decodes to) raises `InvalidText`, a GuardrailCallError (INVALID_ARGUMENT) that
names the field and position, never the text. The channel retries UNAVAILABLE itself,
a few times with backoff, before giving up.

Depends on grpcio and protobuf only (the generated stubs live in `_proto`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import grpc

from guardrail_client._proto.guardrail.v1 import guardrail_pb2 as pb
from guardrail_client._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_TARGET", "AsyncGuardrailClient", "Explanation", "Finding",
           "GuardrailCallError",
           "GuardrailClient", "InvalidText", "Result", "SchemaError", "StreamUpdate", "Tls",
           "Violation", "pb", "pb_grpc", "utf16_offset"]

DEFAULT_TARGET = "127.0.0.1:50051"
# gRPC's own retries (gRFC A6): a sidecar that restarts or drains answers UNAVAILABLE.
_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "guardrail.v1.Guardrail"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


@dataclass(frozen=True)
class Tls:
    """How to reach a sidecar that serves TLS: the CA that signed its certificate, and a
    client certificate and key when it requires mutual TLS."""

    ca_file: Path
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    server_name: Optional[str] = None  # when the certificate names another host


@dataclass(frozen=True)
class Explanation:
    """Why a PII finding was made: only when the call passed `explain=True` (e.g.
    `guard.inspect_prompt(text, explain=True)`), for tuning a policy. Names the
    recognizer, its pattern (or NER model), the base score, the context words that raised
    it and any checksum; never the matched text."""

    recognizer: str
    pattern: str
    base_score: float
    context_words: tuple[str, ...] = ()
    context_improvement: float = 0.0
    validation: str = ""


@dataclass(frozen=True)
class Finding:
    """Sensitive data at [start, end) of message `message_index` (code points)."""

    entity_type: str
    start: int
    end: int
    score: float
    action: str
    message_index: int = 0
    shadow: bool = False
    explanation: Optional[Explanation] = None


@dataclass(frozen=True)
class Violation:
    """A rule the text broke; `message` never quotes the text."""

    rule_id: str
    category: str
    message: str
    start: int = 0
    end: int = 0
    message_index: int = 0
    shadow: bool = False


@dataclass(frozen=True)
class SchemaError:
    """One way a completion fails its JSON Schema (RFC 6901 pointers)."""

    pointer: str
    keyword: str
    message: str
    schema_path: str = ""

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


@dataclass(frozen=True)
class Result:
    """A verdict: what to send on (`text` or `messages`), and why."""

    decision: str  # "ALLOW", "MODIFY" or "BLOCK"
    text: str = ""
    messages: tuple[tuple[str, str], ...] = ()  # (role, content), for chat requests
    findings: tuple[Finding, ...] = ()
    violations: tuple[Violation, ...] = ()
    routing_tags: Mapping[str, str] = field(default_factory=dict)
    restored: tuple[str, ...] = ()
    audit_id: str = ""
    policy: str = ""
    policy_revision: str = ""
    request_id: str = ""
    schema_errors: tuple[SchemaError, ...] = ()
    # Shadow mode and shadow rules: what an enforcing policy would have done.
    would_block: bool = False
    would_modify: bool = False

    @property
    def blocked(self) -> bool:
        return self.decision == "BLOCK"

    @property
    def modified(self) -> bool:
        return self.decision == "MODIFY"


@dataclass(frozen=True)
class StreamUpdate:
    """One answer on a streamed completion: text that is now safe to show."""

    text: str
    final: bool
    decision: str = ""  # on the final update
    findings: tuple[Finding, ...] = ()
    violations: tuple[Violation, ...] = ()
    audit_id: str = ""
    received_chars: int = 0
    released_chars: int = 0
    restored: tuple[str, ...] = ()
    # On the final update: the stream's routing tags, policy and request id.
    routing_tags: Mapping[str, str] = field(default_factory=dict)
    policy: str = ""
    policy_revision: str = ""
    request_id: str = ""


class GuardrailCallError(Exception):
    """The sidecar answered with an error status; `details` never quotes the text sent."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: the sidecar starting or draining
        (UNAVAILABLE), out of time (DEADLINE_EXCEEDED) or shedding load. RESOURCE_EXHAUSTED
        also means "over a size limit", which no retry cures: the sidecar says "retry"
        in the details only when load is the reason."""
        if self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return True
        return self.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in self.details


class InvalidText(GuardrailCallError):
    """A text that is not valid Unicode (a lone surrogate), refused before it is sent:
    protobuf cannot encode it, and no retry cures it. `where` names the field
    (`text`, `messages[2].content`, `chunks[5]`, ...), `position` the code point."""

    def __init__(self, where: str, position: int) -> None:
        self.where = where
        self.position = position
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{where}: a lone surrogate at code point {position} is not "
                         "valid Unicode; the text cannot be sent")


def _check_text(where: str, value: Any) -> None:
    """Raise InvalidText for a string UTF-8 cannot encode (called on failure only, to
    say where: protobuf's own error names neither field nor position, or quotes it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidText(where, err.start) from None


def utf16_offset(text: str, offset: int) -> int:
    """A code-point offset (as in findings) as a UTF-16 code-unit offset, for
    JavaScript, Java or C# strings: characters beyond U+FFFF count twice there."""
    return offset + sum(1 for char in text[:offset] if ord(char) > 0xFFFF)


@dataclass
class _Defaults:
    tenant: str = ""
    app: str = ""
    timeout: float = 2.0


class GuardrailClient:
    """Blocking client; one channel, safe to share between threads."""

    def __init__(self, target: str = DEFAULT_TARGET, *, tenant: str = "", app: str = "",
                 timeout: float = 2.0, tls: Optional[Tls] = None) -> None:
        self._defaults = _Defaults(tenant, app, timeout)
        options = _options(tls)
        self._channel = grpc.secure_channel(target, _credentials(tls), options) if tls \
            else grpc.insecure_channel(target, options)
        self._stub = pb_grpc.GuardrailStub(self._channel)  # type: ignore[no-untyped-call]

    def inspect_prompt(self, text: Optional[str] = None, *,
                       messages: Optional[Sequence[tuple[str, str]]] = None,
                       timeout: Optional[float] = None, **fields: Any) -> Result:
        """Inspect what the app is about to send to a model."""
        request = _request(self._defaults, text, messages, fields)
        return _call(self._stub.InspectPrompt, request, timeout or self._defaults.timeout)

    def inspect_completion(self, text: Optional[str] = None, *,
                           messages: Optional[Sequence[tuple[str, str]]] = None,
                           timeout: Optional[float] = None, **fields: Any) -> Result:
        """Inspect what a model answered, before a user sees it."""
        request = _request(self._defaults, text, messages, fields)
        return _call(self._stub.InspectCompletion, request, timeout or self._defaults.timeout)

    def stream_completion(self, chunks: Iterable[str], *, timeout: Optional[float] = None,
                          **fields: Any) -> Iterator[StreamUpdate]:
        """Inspect a completion as it streams: yields the text that is safe to show."""
        first = _request(self._defaults, None, None, fields)
        bad: list[InvalidText] = []  # a chunk that cannot be sent cancels the call
        try:
            for verdict in self._stub.InspectCompletionStream(
                    _chunks(first, chunks, bad), timeout=timeout):
                update = _update(verdict)
                if update is not None:
                    yield update
        except grpc.RpcError as err:
            raise (bad[0] if bad else _error(err)) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GuardrailClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGuardrailClient:
    """asyncio client; create it inside the running event loop."""

    def __init__(self, target: str = DEFAULT_TARGET, *, tenant: str = "", app: str = "",
                 timeout: float = 2.0, tls: Optional[Tls] = None) -> None:
        self._defaults = _Defaults(tenant, app, timeout)
        options = _options(tls)
        self._channel = grpc.aio.secure_channel(target, _credentials(tls), options) if tls \
            else grpc.aio.insecure_channel(target, options)
        self._stub = pb_grpc.GuardrailStub(self._channel)  # type: ignore[no-untyped-call]

    async def inspect_prompt(self, text: Optional[str] = None, *,
                             messages: Optional[Sequence[tuple[str, str]]] = None,
                             timeout: Optional[float] = None, **fields: Any) -> Result:
        request = _request(self._defaults, text, messages, fields)
        return await _acall(self._stub.InspectPrompt, request,
                            timeout or self._defaults.timeout)

    async def inspect_completion(self, text: Optional[str] = None, *,
                                 messages: Optional[Sequence[tuple[str, str]]] = None,
                                 timeout: Optional[float] = None, **fields: Any) -> Result:
        request = _request(self._defaults, text, messages, fields)
        return await _acall(self._stub.InspectCompletion, request,
                            timeout or self._defaults.timeout)

    async def stream_completion(self, chunks: Union[AsyncIterable[str], Iterable[str]], *,
                                timeout: Optional[float] = None,
                                **fields: Any) -> AsyncIterator[StreamUpdate]:
        first = _request(self._defaults, None, None, fields)

        bad: list[InvalidText] = []  # a chunk that cannot be sent cancels the call

        async def requests() -> AsyncIterator[Any]:
            yield pb.CompletionChunk(request=first)
            number = 0
            if isinstance(chunks, AsyncIterable):
                async for text in chunks:
                    yield _chunk(text, number, bad)
                    number += 1
            else:
                for text in chunks:
                    yield _chunk(text, number, bad)
                    number += 1
            yield pb.CompletionChunk(end=True)

        try:
            async for verdict in self._stub.InspectCompletionStream(requests(),
                                                                    timeout=timeout):
                update = _update(verdict)
                if update is not None:
                    yield update
        except grpc.RpcError as err:
            raise (bad[0] if bad else _error(err)) from None

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncGuardrailClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- conversions, shared by both clients -----------------------------------------------

def _options(tls: Optional[Tls]) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [("grpc.service_config", _SERVICE_CONFIG),
                                      ("grpc.enable_retries", 1)]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def _credentials(tls: Optional[Tls]) -> grpc.ChannelCredentials:
    assert tls is not None

    def read(path: Optional[Path]) -> Optional[bytes]:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(tls.ca_file), read(tls.key_file),
                                        read(tls.cert_file))


def _request(defaults: _Defaults, text: Optional[str],
             messages: Optional[Sequence[tuple[str, str]]],
             fields: dict[str, Any]) -> Any:
    fields.setdefault("tenant", defaults.tenant)
    fields.setdefault("app", defaults.app)
    try:
        request = pb.InspectRequest(**fields)
        if messages is not None:
            request.messages.CopyFrom(pb.Messages(messages=[
                pb.Message(role=role, content=content) for role, content in messages]))
        elif text is not None:
            request.text = text
    except ValueError:  # UnicodeEncodeError, or ValueError (pure-Python protobuf)
        for name, value in fields.items():
            _check_text(name, value)
        for index, (role, content) in enumerate(messages or ()):
            _check_text(f"messages[{index}].role", role)
            _check_text(f"messages[{index}].content", content)
        _check_text("text", text)
        raise  # not ours after all (a nested field): as it came
    return request


def _call(method: Any, request: Any, timeout: float) -> Result:
    try:
        return _result(method(request, timeout=timeout))
    except grpc.RpcError as err:
        raise _error(err) from None


async def _acall(method: Any, request: Any, timeout: float) -> Result:
    try:
        return _result(await method(request, timeout=timeout))
    except grpc.RpcError as err:
        raise _error(err) from None


def _error(err: grpc.RpcError) -> GuardrailCallError:
    call: Any = err  # a grpc.Call as well
    return GuardrailCallError(call.code(), call.details() or "")


def _chunk(text: str, number: int, bad: list[InvalidText]) -> Any:
    """One chunk of a stream; a text that cannot be sent is kept in `bad` and ends the
    request stream with an error, which cancels the call (never a half stream that
    would look finished)."""
    try:
        return pb.CompletionChunk(text=text)
    except ValueError:  # UnicodeEncodeError, or ValueError (pure-Python protobuf)
        try:
            _check_text(f"chunks[{number}]", text)
        except InvalidText as err:
            bad.append(err)
        raise


def _chunks(first: Any, texts: Iterable[str], bad: list[InvalidText]) -> Iterator[Any]:
    yield pb.CompletionChunk(request=first)
    for number, text in enumerate(texts):
        yield _chunk(text, number, bad)
    yield pb.CompletionChunk(end=True)


def _findings(items: Iterable[Any]) -> tuple[Finding, ...]:
    return tuple(Finding(f.entity_type, f.start, f.end, round(f.score, 4), f.action,
                         f.message_index, f.shadow, _explanation(f)) for f in items)


def _explanation(finding: Any) -> Optional[Explanation]:
    if not finding.HasField("explanation"):
        return None
    why = finding.explanation
    return Explanation(why.recognizer, why.pattern, round(why.base_score, 4),
                       tuple(why.context_words), round(why.context_improvement, 4),
                       why.validation)


def _violations(items: Iterable[Any]) -> tuple[Violation, ...]:
    return tuple(Violation(v.rule_id, v.category, v.message, v.start, v.end,
                           v.message_index, v.shadow) for v in items)


def _result(reply: Any) -> Result:
    return Result(
        decision=pb.Decision.Name(reply.decision), text=reply.text,
        messages=tuple((m.role, m.content) for m in reply.messages.messages),
        findings=_findings(reply.findings), violations=_violations(reply.violations),
        routing_tags=dict(reply.routing_tags), restored=tuple(reply.restored),
        audit_id=reply.audit_id, policy=reply.policy,
        policy_revision=reply.policy_revision, request_id=reply.request_id,
        schema_errors=tuple(SchemaError(e.pointer, e.keyword, e.message, e.schema_path)
                            for e in reply.schema_errors),
        would_block=reply.would_block, would_modify=reply.would_modify)


def _update(verdict: Any) -> Optional[StreamUpdate]:
    """None for a bare acknowledgement (nothing new to show, not final)."""
    if not verdict.text and not verdict.final and not verdict.findings \
            and not verdict.violations:
        return None
    return StreamUpdate(
        text=verdict.text, final=verdict.final,
        decision=pb.Decision.Name(verdict.decision) if verdict.final else "",
        findings=_findings(verdict.findings), violations=_violations(verdict.violations),
        audit_id=verdict.audit_id, received_chars=verdict.received_chars,
        released_chars=verdict.released_chars, restored=tuple(verdict.restored),
        routing_tags=dict(verdict.routing_tags), policy=verdict.policy,
        policy_revision=verdict.policy_revision, request_id=verdict.request_id)
