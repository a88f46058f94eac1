"""Residency attribute values as people write them, through the real gRPC server.

Round 12's guard against disguised attribute values (tests/test_residency.py) refused
every value with a space, an accent or punctuation in it: the shipped example policy
blocked `plan: "free trial"`, and a policy listing `cost-center: ["cc 1001"]` did not
load. Only what hides a difference is refused (invisible and control characters, a
look-alike letter of another script inside a word); everything else matches, or does
not, as folded text.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.cli import main
from tests.conftest import REPO, guardrail_stub, make_settings

# "Tariff business" in Cyrillic: a value wholly in another script is no disguise.
TARIFF = "\u0442\u0430\u0440\u0438\u0444 \u0431\u0438\u0437\u043d\u0435\u0441"
# A second policy beside the shipped ones: values with spaces, accents, punctuation,
# digits and other scripts, and a glob with a space.
WRITTEN = """\
name: globex
match: {tenants: [globex]}
residency:
  rules:
    - id: written
      when:
        attributes:
          plan: ["Business Plus", "pro-2024 (legacy)", "büsiness", "free trial", "TARIFF", "gold *"]
          cost-center: ["cc 1001"]
      residency: eu
      allowed_regions: [eu-central-1]
    - id: default
      residency: any
      allowed_regions: ["*"]
""".replace("TARIFF", TARIFF)


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.GuardrailStub]:
    root = tmp_path_factory.mktemp("residency-values")
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "globex.yaml").write_text(WRITTEN, encoding="utf-8")
    config = make_settings(root, policies=policies, workers=0)
    with guardrail_stub(config) as stub:
        yield stub


def ask(stub: pb_grpc.GuardrailStub, tenant: str, app: str = "",
        **attributes: str) -> pb.InspectResponse:
    return stub.InspectPrompt(pb.InspectRequest(
        text="hello", tenant=tenant, app=app, request_id="req-1",
        user_region="eu-west-1", attributes=attributes), timeout=30)


def rule(reply: pb.InspectResponse) -> str:
    assert not any(v.rule_id == "residency.attribute_value" for v in reply.violations), (
        [v.message for v in reply.violations])
    assert reply.decision != pb.BLOCK
    return dict(reply.routing_tags)["residency_rule"]


@pytest.mark.parametrize("plan", ["free trial", "Business Plus", "pro-2024 (legacy)",
                                  "büsiness", "Free  Trial", "enterprise 2", "a.b/c"])
def test_the_shipped_example_reads_ordinary_plans_as_written(
        stub: pb_grpc.GuardrailStub, plan: str) -> None:
    """policies/example.yaml compares `plan` with [business, enterprise]: none of these
    is either, so the default rule applies; none is refused."""
    assert rule(ask(stub, "acme", "support-web", plan=plan)) == "default"
    assert rule(ask(stub, "acme", "support-web", plan=" Business ")) == "eu-users"


@pytest.mark.parametrize("plan", ["Business Plus", "business plus", " BUSINESS   PLUS ",
                                  "business\tplus", "business\u00a0plus", "pro-2024 (legacy)",
                                  "PRO-2024 (LEGACY)", "büsiness", "BÜSINESS",
                                  "bu\u0308siness", "free trial", TARIFF.title().replace(" ", "  "),
                                  "gold 3", "gold plus"])
def test_values_with_spaces_accents_and_punctuation_match_as_written(
        stub: pb_grpc.GuardrailStub, plan: str) -> None:
    """Case, width, composed or decomposed accents and runs of whitespace fold; the
    value then meets the policy's value (or glob) as text."""
    assert rule(ask(stub, "globex", **{"plan": plan, "cost-center": "CC  1001"})) == "written"
    assert rule(ask(stub, "globex", plan=plan)) == "default"  # both attributes must hold


@pytest.mark.parametrize("plan", ["business", "businessplus", "free-trial", "pro-2024",
                                  "busíness", "gold"])
def test_other_values_simply_do_not_match(stub: pb_grpc.GuardrailStub, plan: str) -> None:
    assert rule(ask(stub, "globex", **{"plan": plan, "cost-center": "cc 1001"})) == "default"


@pytest.mark.parametrize("plan", ["Business\u200b Plus", "free\u00adtrial", "free trial\x00",
                                  "Business Pl\u0443s", "b\u0435siness", "\u0440ro-2024 (legacy)",
                                  "free \u0301trial", TARIFF + "\u200d"])
def test_a_disguise_is_still_refused(stub: pb_grpc.GuardrailStub, plan: str) -> None:
    """Invisible and control characters, a look-alike of another script inside a word,
    a combining mark on nothing: refused, never matched against no rule."""
    reply = ask(stub, "globex", **{"plan": plan, "cost-center": "cc 1001"})
    assert reply.decision == pb.BLOCK, ascii(plan)
    violation = next(v for v in reply.violations if v.category == "residency")
    assert violation.rule_id == "residency.attribute_value"
    assert plan not in violation.message


WORD = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.()/&+éüñçø"),
               min_size=1, max_size=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(WORD, min_size=1, max_size=4), blanks=st.data())
def test_generated_ordinary_values_are_never_refused(
        stub: pb_grpc.GuardrailStub, words: list[str], blanks: st.DataObject) -> None:
    """Letters (accented too), digits, punctuation and blanks between words: such a
    value is read, never refused, in the shipped example policy and in globex."""
    value = words[0]
    for word in words[1:]:
        value += blanks.draw(st.sampled_from([" ", "  ", "\t", "\u00a0", "\u3000"])) + word
    for tenant, app in (("acme", "support-web"), ("globex", "")):
        reply = ask(stub, tenant, app, plan=value.upper() if len(words) % 2 else value)
        assert reply.decision != pb.BLOCK, ascii(value)


def test_a_policy_value_with_a_space_loads(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "default.yaml").write_text(
        WRITTEN.replace("name: globex\nmatch: {tenants: [globex]}\n", "name: default\n"),
        encoding="utf-8")
    assert main(["policy", "check", str(tmp_path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("value", ["' '", '"qq\\u200b1001"', '"qq\\x001001"', '"qq\\x011001"'])
def test_a_policy_value_that_can_never_be_met_is_refused(
        tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Blank, or holding a character every request is refused for: no request could
    ever meet it, so the rule would silently be dead."""
    (tmp_path / "default.yaml").write_text(
        "name: default\nresidency:\n  rules:\n"
        f"    - {{id: a, when: {{attributes: {{cost-center: [{value}]}}}}, residency: eu, "
        "allowed_regions: [eu-1]}\n"
        "    - {id: b, residency: any, allowed_regions: ['*']}\n", encoding="utf-8")
    assert main(["policy", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "attributes" in err and "qq" not in err
