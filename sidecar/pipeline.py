"""The inspection pipeline: pick the policy, run its stages in order, decide.

Pure Python, no grpc: the CLI's `inspect` and the gRPC servicer both call `Pipeline.run`.
Decision precedence is BLOCK > MODIFY > ALLOW; a stage that blocks ends the run, so
later (costlier) stages never see a request that is already refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sidecar.config import Settings
from sidecar.errors import InvalidRequest, RequestTooLarge, StageFailed
from sidecar.keys import load_or_create_key
from sidecar.logs import error_frames
from sidecar.policy.store import CompiledPolicy, PolicySet, compile_directory
from sidecar.stages.pii import PiiResources
from sidecar.types import Decision, Finding, Inspection, Message, Verdict, Violation

log = logging.getLogger(__name__)
MAX_ID_CHARS = 128
MAX_ATTRIBUTE_KEY_CHARS = 128
MAX_ATTRIBUTE_VALUE_CHARS = 1024


@dataclass(frozen=True)
class Limits:
    max_text_bytes: int
    max_messages: int
    max_attributes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_text_bytes, settings.max_messages, settings.max_attributes)

    def check(self, inspection: Inspection) -> None:
        """Raise InvalidRequest / RequestTooLarge naming the field and the limit."""
        if len(inspection.messages) > self.max_messages:
            raise RequestTooLarge(
                f"messages: {len(inspection.messages)} messages exceed the limit of "
                f"{self.max_messages}")
        size = sum(len(m.content.encode("utf-8", "surrogatepass")) for m in inspection.messages)
        if size > self.max_text_bytes:
            raise RequestTooLarge(
                f"content: {size} bytes of text exceed the limit of {self.max_text_bytes} bytes")
        for field in ("request_id", "tenant", "app", "subject_id", "conversation_id",
                      "user_region", "target_region", "output_schema"):
            if len(getattr(inspection, field)) > MAX_ID_CHARS:
                raise InvalidRequest(f"{field}: longer than {MAX_ID_CHARS} characters")
        if len(inspection.attributes) > self.max_attributes:
            raise InvalidRequest(
                f"attributes: {len(inspection.attributes)} entries exceed the limit of "
                f"{self.max_attributes}")
        for key, value in inspection.attributes:
            if not key or len(key) > MAX_ATTRIBUTE_KEY_CHARS:
                raise InvalidRequest(f"attributes: keys must be 1 to {MAX_ATTRIBUTE_KEY_CHARS} "
                                     "characters")
            if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
                raise InvalidRequest(f"attributes[{key!r}]: value longer than "
                                     f"{MAX_ATTRIBUTE_VALUE_CHARS} characters")
        for index, message in enumerate(inspection.messages):
            if any(0xD800 <= ord(ch) <= 0xDFFF for ch in message.content):
                raise InvalidRequest(f"messages[{index}].content: contains lone surrogates")


class Pipeline:
    def __init__(self, policies: PolicySet, limits: Limits) -> None:
        self.policies = policies
        self.limits = limits

    @classmethod
    def from_settings(cls, settings: Settings) -> Pipeline:
        """Compile the policies in `settings.policies` (raises PolicyError/ConfigError)."""
        return cls(compile_directory(settings.policies, resources_from(settings)),
                   Limits.from_settings(settings))

    def prepare(self) -> None:
        """Load models and warm every policy up, so the first request is not the slow one."""
        self.policies.prepare()
        for compiled in self.policies.policies:
            self._run_policy(compiled, Inspection.of_text(
                "Warm-up: Jane Doe, jane@example.com, +1 212 555 0100."))

    def run(self, inspection: Inspection) -> Verdict:
        self.limits.check(inspection)
        compiled = self.policies.select(inspection.tenant, inspection.app)
        if inspection.output_schema:
            # Schemas arrive with structured-output validation; until then none exist.
            raise InvalidRequest(f"output_schema: policy '{compiled.name}' defines no schema "
                                 f"'{inspection.output_schema}'")
        return self._run_policy(compiled, inspection)

    def _run_policy(self, compiled: CompiledPolicy, inspection: Inspection) -> Verdict:
        messages = inspection.messages
        findings: list[Finding] = []
        violations: list[Violation] = []
        blocked = False
        for stage in compiled.stages:
            try:
                result = stage.run(inspection, messages)
            except Exception as err:  # a stage bug must not become a loosened policy
                failure = StageFailed(stage.name)
                # The exception's message may quote the text: log its type only.
                log.error("stage failed", extra={"stage": stage.name,
                                                 "error_type": type(err).__name__,
                                                 "error_frames": error_frames(err),
                                                 "request_id": inspection.request_id,
                                                 "policy": compiled.name})
                violations.append(Violation(
                    f"error.{stage.name}", "error",
                    f"{failure}; policy on_error={compiled.policy.on_error}"))
                if compiled.policy.on_error == "block":
                    blocked = True
                    break
                continue
            findings.extend(result.findings)
            violations.extend(result.violations)
            if result.rewritten:
                messages = tuple(
                    Message(m.role, result.rewritten.get(i, m.content))
                    for i, m in enumerate(messages))
            if result.blocked:
                blocked = True
                break
        out: tuple[Message, ...]
        if blocked:
            decision, out = Decision.BLOCK, ()
        elif messages != inspection.messages:
            decision, out = Decision.MODIFY, messages
        else:
            decision, out = Decision.ALLOW, messages
        return Verdict(
            decision=decision, messages=out, chat=inspection.chat,
            findings=tuple(findings), violations=tuple(violations),
            policy=compiled.name, policy_revision=compiled.revision,
            request_id=inspection.request_id,
        )


def resources_from(settings: Settings) -> PiiResources:
    return PiiResources(
        spacy_model=settings.spacy_model,
        hash_key=load_or_create_key(Path(settings.data_dir) / "keys" / "hash.key"),
    )
