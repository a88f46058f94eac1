"""`on_error` holds for a failure of every stage, visible in the answer and the audit record.

A real policy with all four stages (content, pii, schema, residency) is served over gRPC;
one stage at a time is made to raise, the way a library bug would, and the answer and
the committed audit record are checked for a fail-closed and a fail-open policy.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import AuditWriter, open_store
from sidecar.pipeline import Pipeline
from sidecar.runner import make_runner
from tests.conftest import TEST_POLICIES, _ServerThread, make_settings

POLICY = """
name: {name}
match: {{tenants: [{name}]}}
on_error: {on_error}
content:
  rules:
    - {{id: profanity, category: profanity, action: redact, words: [damn]}}
pii:
  entities:
    EMAIL_ADDRESS: {{action: replace}}
structured_output:
  ref_mirrors: {{"https://schemas.example.test/": schemas/}}
  schemas:
    ticket: {{file: schemas/ticket.schema.json}}
residency:
  rules:
    - {{id: anywhere, residency: any, allowed_regions: ["*"]}}
"""
TICKET = ('{"title": "damn, mail a@example.com", "priority": "low", '
          '"reporter": {"name": "Sam"}}')


class Broken:
    """Stands in for a real stage: same name and attributes, but every run raises."""

    def __init__(self, stage: Any) -> None:
        self._stage = stage
        self.name = stage.name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._stage, attribute)

    def run(self, *args: Any) -> Any:
        raise RuntimeError("a bug that quotes its input: a@example.com")

    def run_many(self, *args: Any) -> Any:
        raise RuntimeError("a bug that quotes its input: a@example.com")


@dataclasses.dataclass
class Served:
    stub: pb_grpc.GuardrailStub
    pipeline: Pipeline
    audit: AuditWriter


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("on-error")
    policies = folder / "policies"
    shutil.copytree(TEST_POLICIES / "schemas", policies / "schemas")
    (policies / "default.yaml").write_text("name: default\n")
    for name, on_error in (("strict", "block"), ("lenient", "allow")):
        (policies / f"{name}.yaml").write_text(POLICY.format(name=name, on_error=on_error))
    settings = make_settings(folder, policies=policies, workers=0)
    pipeline = Pipeline.from_settings(settings)
    audit = AuditWriter(open_store(settings), lambda name: (
        pipeline.policies.by_name[name].policy if name in pipeline.policies.by_name else None))
    server = _ServerThread(settings, make_runner(settings, pipeline), audit)
    channel = grpc.insecure_channel(server.running.address)
    try:
        yield Served(pb_grpc.GuardrailStub(channel), pipeline, audit)
    finally:
        channel.close()
        server.stop()


def break_stage(pipeline: Pipeline, policy: str, stage: str) -> None:
    compiled = pipeline.policies.by_name[policy]
    stages = tuple(Broken(s) if s.name == stage and not isinstance(s, Broken) else
                   getattr(s, "_stage", s) for s in compiled.stages)
    assert any(isinstance(s, Broken) for s in stages), f"{policy} has no stage {stage}"
    policies = [dataclasses.replace(c, stages=stages) if c.name == policy else c
                for c in pipeline.policies.policies]
    pipeline.policies = type(pipeline.policies)(policies)


@pytest.mark.parametrize("stage", ["content", "pii", "schema", "residency"])
@pytest.mark.parametrize(("tenant", "decision"), [("strict", pb.BLOCK), ("lenient", None)])
def test_every_stage_failure_follows_on_error(served: Served, stage: str, tenant: str,
                                              decision: int | None) -> None:
    break_stage(served.pipeline, tenant, stage)
    reply = served.stub.InspectCompletion(pb.InspectRequest(
        text=TICKET, tenant=tenant, output_schema="ticket", request_id=f"{tenant}-{stage}"),
        timeout=30)
    errors = [v for v in reply.violations if v.rule_id.startswith("error.")]
    assert [(v.rule_id, v.category) for v in errors] == [(f"error.{stage}", "error")]
    assert f"on_error={'block' if tenant == 'strict' else 'allow'}" in errors[0].message
    assert "a@example.com" not in errors[0].message
    if decision == pb.BLOCK:
        assert (reply.decision, reply.text) == (pb.BLOCK, "")
    else:  # fails open: the other stages still did their work
        assert reply.decision != pb.BLOCK
        if stage != "content":
            assert "damn" not in reply.text
        if stage not in ("pii", "schema"):
            assert "a@example.com" not in reply.text
    [record] = served.audit.store.records("id = ?", (reply.audit_id,))
    assert f"error.{stage}" in json.loads(record["rule_ids"])
    assert record["decision"].upper() == pb.Decision.Name(reply.decision)


def test_a_broken_stage_says_nothing_of_the_text_in_the_answer(served: Served) -> None:
    break_stage(served.pipeline, "strict", "pii")
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.InspectPrompt(pb.InspectRequest(text="x", tenant="strict",
                                                    output_schema="nope"), timeout=30)
    assert "a@example.com" not in (caught.value.details() or "")
    reply = served.stub.InspectPrompt(pb.InspectRequest(text="mail a@example.com",
                                                        tenant="strict"), timeout=30)
    assert all("a@example.com" not in v.message for v in reply.violations)
    assert reply.decision == pb.BLOCK


@pytest.fixture(autouse=True)
def _restore(served: Served) -> Iterator[None]:
    yield
    for name in ("strict", "lenient"):
        compiled = served.pipeline.policies.by_name[name]
        stages = tuple(getattr(s, "_stage", s) for s in compiled.stages)
        policies = [dataclasses.replace(c, stages=stages) if c.name == name else c
                    for c in served.pipeline.policies.policies]
        served.pipeline.policies = type(served.pipeline.policies)(policies)

