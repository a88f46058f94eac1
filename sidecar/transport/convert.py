"""Protobuf messages to domain types and back. No logic beyond shape."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.errors import InvalidRequest
from sidecar.policy.reload import Status
from sidecar.streaming import Release
from sidecar.types import (
    Decision,
    Direction,
    Explanation,
    Finding,
    Inspection,
    Message,
    Verdict,
    Violation,
)

_DECISIONS = {Decision.ALLOW: pb.ALLOW, Decision.MODIFY: pb.MODIFY, Decision.BLOCK: pb.BLOCK}


def to_inspection(request: pb.InspectRequest, direction: Direction) -> Inspection:
    kind = request.WhichOneof("content")
    if kind is None:
        raise InvalidRequest("content: set either 'text' or 'messages'")
    if kind == "text":
        messages: tuple[Message, ...] = (Message("", request.text),)
    else:
        if not request.messages.messages:
            raise InvalidRequest("messages: at least one message is required")
        messages = tuple(Message(m.role, m.content) for m in request.messages.messages)
    if direction is Direction.PROMPT and request.output_schema:
        raise InvalidRequest("output_schema: applies to InspectCompletion only")
    return Inspection(
        direction=direction,
        messages=messages,
        chat=kind == "messages",
        # None given: one is made, so routing-tag signatures never repeat (issue 17).
        request_id=request.request_id or uuid.uuid4().hex,
        tenant=request.tenant,
        app=request.app,
        subject_id=request.subject_id,
        conversation_id=request.conversation_id,
        user_region=request.user_region,
        target_region=request.target_region,
        output_schema=request.output_schema,
        attributes=tuple(sorted(request.attributes.items())),
        explain=request.explain,
    )


def to_stream_template(request: pb.InspectRequest) -> Inspection:
    """A streamed completion's request fields (its text comes in the chunks)."""
    if request.WhichOneof("content") is not None:
        raise InvalidRequest("request: leave text and messages unset on a stream; send the "
                             "completion in CompletionChunk.text")
    if request.output_schema:
        raise InvalidRequest("request.output_schema: not supported on streams (a JSON "
                             "document is validated whole: use InspectCompletion)")
    return to_inspection(pb.InspectRequest(text="", **{
        name: getattr(request, name) for name in (
            "request_id", "tenant", "app", "subject_id", "conversation_id",
            "user_region", "target_region", "explain")}, attributes=request.attributes),
        Direction.COMPLETION)


def findings_of(findings: Iterable[Finding]) -> list[pb.Finding]:
    return [pb.Finding(entity_type=f.entity_type, start=f.start, end=f.end, score=f.score,
                       action=f.action, message_index=f.message_index, shadow=f.shadow,
                       explanation=_explanation_of(f.explanation))
            for f in findings]


def _explanation_of(why: Explanation | None) -> pb.Explanation | None:
    if why is None:  # not asked for: the field stays unset
        return None
    return pb.Explanation(recognizer=why.recognizer, pattern=why.pattern,
                          base_score=why.base_score, context_words=why.context_words,
                          context_improvement=why.context_improvement,
                          validation=why.validation)


def violations_of(violations: Iterable[Violation]) -> list[pb.Violation]:
    return [pb.Violation(rule_id=v.rule_id, category=v.category, message=v.message,
                         start=v.start, end=v.end, message_index=v.message_index,
                         shadow=v.shadow)
            for v in violations]


def to_stream_verdict(release: Release) -> pb.StreamVerdict:
    return pb.StreamVerdict(text=release.text, findings=findings_of(release.findings),
                            violations=violations_of(release.violations),
                            received_chars=release.received, released_chars=release.released,
                            restored=release.restored)


def to_final_stream_verdict(release: Release, verdict: Verdict) -> pb.StreamVerdict:
    message = to_stream_verdict(release)
    message.final = True
    message.decision = _DECISIONS[verdict.decision]
    message.audit_id = verdict.audit_id
    message.policy = verdict.policy
    message.policy_revision = verdict.policy_revision
    message.request_id = verdict.request_id
    message.routing_tags.update(verdict.routing_tags)
    return message


def to_response(verdict: Verdict) -> pb.InspectResponse:
    response = pb.InspectResponse(
        decision=_DECISIONS[verdict.decision],
        findings=findings_of(verdict.findings),
        violations=violations_of(verdict.violations),
        routing_tags=verdict.routing_tags,
        audit_id=verdict.audit_id,
        policy=verdict.policy,
        policy_revision=verdict.policy_revision,
        request_id=verdict.request_id,
        would_block=verdict.would_block,
        would_modify=verdict.would_modify,
        restored=verdict.restored,
        schema_errors=[pb.SchemaError(pointer=e.pointer, keyword=e.keyword, message=e.message,
                                      schema_path=e.schema_path)
                       for e in verdict.schema_errors],
    )
    if verdict.chat:
        response.messages.CopyFrom(pb.Messages(messages=[
            pb.Message(role=m.role, content=m.content) for m in verdict.messages]))
    else:
        response.text = verdict.text
    return response


def to_status(status: Status) -> pb.PolicyStatusResponse:
    return pb.PolicyStatusResponse(
        policies=[pb.PolicyInfo(name=p.name, revision=p.revision, source=p.source,
                                loaded_at_unix_ms=int(p.loaded_at * 1000),
                                last_error=p.last_error, is_default=p.is_default, mode=p.mode)
                  for p in status.policies],
        errors=[pb.PolicyLoadError(file=e.file, line=e.line or 0, path=e.path, reason=e.reason)
                for e in status.errors],
        last_attempt_unix_ms=int(status.last_attempt * 1000),
        last_applied_unix_ms=int(status.last_applied * 1000),
    )
