"""`guardrail policy test`: expectations in YAML, run against the real pipeline.

Like `opa test` for our policies. Files named `*.tests.yaml` next to the policies hold
cases; each names an input (text or messages, direction, tenant, app, ...) and what must
come out. Only what a case states is checked, so a case stays readable:

    tests:
      - name: an email is replaced
        tenant: acme
        text: "write to jane@example.com"
        expect:
          decision: MODIFY
          policy: acme-support
          text: "write to [email]"
          findings: [{entity_type: EMAIL_ADDRESS, text: "jane@example.com"}]
          violations: [{rule_id: secrets/aws_access_key_id}]
          tags: {residency: eu}

`findings` and `violations` list entries that must be present (every key given must
match; `text` is the span in the input). `absent` lists entity types or rule ids that
must not appear. Keys are fixed (all zero bytes), so `hash` outputs and tag signatures
are the same on every machine.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sidecar.errors import GuardrailError, PolicyError, PolicyIssue
from sidecar.policy.files import read_tree
from sidecar.policy.loader import TEST_SUFFIXES, _dotted, line_of, parse_yaml
from sidecar.types import Direction, Inspection, Message, Verdict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Strict):
    decision: Literal["ALLOW", "MODIFY", "BLOCK"] | None = None
    policy: str | None = None
    text: str | None = None
    messages: list[str] | None = None
    findings: list[dict[str, Any]] = Field(default_factory=list)
    violations: list[dict[str, Any]] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    would_block: bool | None = None
    would_modify: bool | None = None
    schema_errors: list[dict[str, Any]] = Field(default_factory=list)
    # An INVALID_ARGUMENT-style refusal: a substring of the error message.
    error: str | None = None


class ChatMessage(_Strict):
    role: str = "user"
    content: str


class Case(_Strict):
    name: str
    text: str | None = None
    messages: list[ChatMessage] | None = None
    direction: Literal["prompt", "completion"] = "prompt"
    tenant: str = ""
    app: str = ""
    request_id: str = "policy-test"
    user_region: str = ""
    target_region: str = ""
    output_schema: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    expect: Expect


class CaseFile(_Strict):
    tests: list[Case] = Field(min_length=1)


@dataclass(frozen=True)
class Outcome:
    file: str
    name: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


def load_case_files(directory: Path) -> list[tuple[str, CaseFile]]:
    """Every `*.tests.yaml` next to the policies, read as safely as the policies are
    (sidecar.policy.files); PolicyError lists every problem, files named relative to
    `directory`."""
    tree = read_tree(directory)
    issues: list[PolicyIssue] = []
    loaded: list[tuple[str, CaseFile]] = []
    for item in tree.files:
        if "/" in item.name or not item.name.lower().endswith(TEST_SUFFIXES):
            continue
        try:
            loaded.append((item.name, load_cases(item.data, item.name)))
        except PolicyError as err:
            issues.extend(err.issues)
    if issues:
        raise PolicyError(issues)
    return loaded


def load_cases(data: bytes, name: str) -> CaseFile:
    parsed = parse_yaml(data, name)
    try:
        return CaseFile.model_validate(parsed.data)
    except ValidationError as err:
        raise PolicyError([PolicyIssue(
            name, _dotted(tuple(e["loc"])),
            "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
            line_of(parsed.lines, tuple(e["loc"])))
            for e in err.errors()]) from None


def run_case(pipeline: Any, case: Case) -> list[str]:
    """What differs between the case's expectation and the pipeline's verdict."""
    messages = (tuple(Message(m.role, m.content) for m in case.messages)
                if case.messages is not None else (Message("", case.text or ""),))
    inspection = Inspection(
        direction=Direction(case.direction), messages=messages,
        chat=case.messages is not None, request_id=case.request_id, tenant=case.tenant,
        app=case.app, user_region=case.user_region, target_region=case.target_region,
        output_schema=case.output_schema, attributes=tuple(sorted(case.attributes.items())))
    expect = case.expect
    try:
        from sidecar.pseudonyms import finish_locally

        # Pseudonyms as within one request (the vault is the server's; see README).
        verdict: Verdict = finish_locally(inspection, pipeline.run(inspection))
    except GuardrailError as err:
        if expect.error is not None and expect.error in str(err):
            return []
        return [f"refused: {err}"]
    if expect.error is not None:
        return [f"expected a refusal containing {expect.error!r}, got {verdict.decision.name}"]
    return _compare(expect, verdict, messages)


def _compare(expect: Expect, verdict: Verdict, sent: tuple[Message, ...]) -> list[str]:
    problems: list[str] = []

    def check(label: str, wanted: Any, actual: Any) -> None:
        if wanted is not None and wanted != actual:
            problems.append(_diff(label, wanted, actual))

    check("decision", expect.decision, verdict.decision.name)
    check("policy", expect.policy, verdict.policy)
    check("text", expect.text, verdict.text if not verdict.chat else None)
    check("messages", expect.messages, [m.content for m in verdict.messages])
    check("would_block", expect.would_block, verdict.would_block)
    check("would_modify", expect.would_modify, verdict.would_modify)
    findings = [{"entity_type": f.entity_type, "action": f.action,
                 "text": sent[f.message_index].content[f.start:f.end],
                 "message_index": f.message_index, "shadow": f.shadow}
                for f in verdict.findings]
    violations = [{"rule_id": v.rule_id, "category": v.category,
                   "text": sent[v.message_index].content[v.start:v.end],
                   "message_index": v.message_index, "shadow": v.shadow}
                  for v in verdict.violations]
    schema_errors = [{"pointer": e.pointer, "keyword": e.keyword} for e in verdict.schema_errors]
    for label, wanted, actual in (("findings", expect.findings, findings),
                                  ("violations", expect.violations, violations),
                                  ("schema_errors", expect.schema_errors, schema_errors)):
        missing = [w for w in wanted
                   if not any(all(a.get(k) == v for k, v in w.items()) for a in actual)]
        if missing:
            problems.append(_diff(f"{label} (missing entries)", missing,
                                  [{k: a.get(k) for k in missing[0]} for a in actual]))
    present = {str(f["entity_type"]) for f in findings} | {str(v["rule_id"]) for v in violations}
    unexpected = sorted(present & set(expect.absent))
    if unexpected:
        problems.append(f"absent: found {', '.join(unexpected)}")
    tags = {k: verdict.routing_tags.get(k) for k in expect.tags}
    check("tags", expect.tags or None, tags)
    return problems


def _diff(label: str, wanted: Any, actual: Any) -> str:
    def dump(value: Any) -> list[str]:
        return yaml.safe_dump(value, allow_unicode=True, sort_keys=False,
                              default_flow_style=False).splitlines()

    lines = difflib.unified_diff(dump(wanted), dump(actual), "expected", "actual", lineterm="",
                                 n=2)
    return f"{label}:\n" + "\n".join(f"    {line}" for line in lines)
