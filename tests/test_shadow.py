"""Shadow mode and shadow rules: everything computed and reported, nothing enforced."""

from __future__ import annotations

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from tests.conftest import Sidecar

TEXT = "Damn, John Smith wants a grenade sent to john.smith@example.com"


def test_a_shadow_mode_policy_never_changes_decision_or_text(sidecar: Sidecar) -> None:
    reply = sidecar.prompt(TEXT, tenant="shadow-mode")
    assert reply.decision == pb.ALLOW
    assert reply.text == TEXT
    assert reply.would_block and not reply.would_modify
    assert [v.rule_id for v in reply.violations] == ["weapons"]
    assert all(v.shadow for v in reply.violations)
    # Every stage still ran (the content block did not short-circuit PII): all reported.
    assert {f.entity_type for f in reply.findings} == {"PERSON", "EMAIL_ADDRESS"}
    assert all(f.shadow for f in reply.findings)


def test_shadow_mode_reports_a_would_be_modification(sidecar: Sidecar) -> None:
    text = "Write to john.smith@example.com"
    reply = sidecar.prompt(text, tenant="shadow-mode")
    assert (reply.decision, reply.text) == (pb.ALLOW, text)
    assert reply.would_modify and not reply.would_block


def test_shadow_rules_are_reported_while_the_others_enforce(sidecar: Sidecar) -> None:
    reply = sidecar.prompt(TEXT, tenant="shadow-rules", target_region="us-east-1")
    assert reply.decision == pb.MODIFY  # not BLOCK: the grenade rule is on trial
    assert reply.text == "[REDACTED], John Smith wants a grenade sent to <EMAIL_ADDRESS>"
    assert reply.would_block
    shadowed = {(v.rule_id, v.shadow) for v in reply.violations}
    assert shadowed == {("weapons-trial", True), ("profanity", False),
                        ("residency.target_region", True)}
    person = next(f for f in reply.findings if f.entity_type == "PERSON")
    assert person.shadow and TEXT[person.start:person.end] == "John Smith"
    email = next(f for f in reply.findings if f.entity_type == "EMAIL_ADDRESS")
    assert not email.shadow


def test_nothing_to_report_means_no_would_flags(sidecar: Sidecar) -> None:
    reply = sidecar.prompt("What time is it?", tenant="shadow-rules")
    assert reply.decision == pb.ALLOW
    assert not reply.would_block and not reply.would_modify
