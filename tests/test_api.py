"""The Guardrail API through a real gRPC channel: actions, recognizers, selection, errors."""

from __future__ import annotations

import hashlib
import hmac

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from tests.conftest import Sidecar


def spans(response: pb.InspectResponse, text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in response.findings:
        out.setdefault(finding.entity_type, []).append(text[finding.start:finding.end])
    return out


def test_health_reports_serving_and_reflection_lists_the_service(sidecar: Sidecar) -> None:
    reply = health_pb2_grpc.HealthStub(sidecar.channel).Check(
        health_pb2.HealthCheckRequest(service="guardrail.v1.Guardrail"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(sidecar.channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=5)
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"guardrail.v1.Guardrail", "grpc.health.v1.Health"} <= names


def test_name_email_phone_and_card_each_handled_at_original_offsets(sidecar: Sidecar) -> None:
    text = ("Hi, I am John Smith, write to john.smith@example.com or call 212-555-0187; "
            "card 4111 1111 1111 1111.")
    response = sidecar.prompt(text, request_id="r-1")
    assert response.decision == pb.BLOCK  # the default test policy blocks cards
    assert response.request_id == "r-1"
    found = spans(response, text)
    assert found["PERSON"] == ["John Smith"]
    assert found["EMAIL_ADDRESS"] == ["john.smith@example.com"]
    assert found["PHONE_NUMBER"] == ["212-555-0187"]
    assert found["CREDIT_CARD"] == ["4111 1111 1111 1111"]
    assert response.text == ""
    assert [v.rule_id for v in response.violations] == ["pii.CREDIT_CARD"]
    violation = response.violations[0]
    assert text[violation.start:violation.end] == "4111 1111 1111 1111"
    assert "4111" not in violation.message


def test_replace_mask_and_allow(sidecar: Sidecar) -> None:
    text = "John Smith in Paris: john.smith@example.com, phone 212-555-0187."
    response = sidecar.prompt(text)
    assert response.decision == pb.MODIFY
    assert response.text == "<PERSON> in Paris: <EMAIL_ADDRESS>, phone ********0187."
    actions = {f.entity_type: f.action for f in response.findings}
    assert actions == {"PERSON": "replace", "LOCATION": "allow", "EMAIL_ADDRESS": "replace",
                       "PHONE_NUMBER": "mask"}
    assert spans(response, text)["LOCATION"] == ["Paris"]


def test_hash_is_keyed_hmac_and_stable(sidecar: Sidecar, tmp_path_factory: object) -> None:
    text = "The server at 192.168.14.7 is down."
    first = sidecar.prompt(text)
    second = sidecar.prompt(text)
    assert first.decision == pb.MODIFY
    assert first.text == second.text
    token = first.text.removeprefix("The server at ").removesuffix(" is down.")
    assert token.startswith("<IP_ADDRESS:") and token.endswith(">")
    digest = token.removeprefix("<IP_ADDRESS:").removesuffix(">")
    assert digest != hashlib.sha256(b"192.168.14.7").hexdigest()[:32]  # not a bare hash
    key = sidecar.pipeline.policies.default.stages[0].resources.hash_key  # type: ignore[attr-defined]
    assert digest == hmac.new(key, b"192.168.14.7", hashlib.sha256).hexdigest()[:32]


def test_redact_removes_the_value(sidecar: Sidecar) -> None:
    text = "My social security number is 536-90-4399, thanks."
    response = sidecar.prompt(text)
    assert response.decision == pb.MODIFY
    assert "536-90-4399" not in response.text
    assert response.text == "My social security number is , thanks."
    assert spans(response, text)["US_SSN"] == ["536-90-4399"]


def test_allow_list_value_is_left_alone(sidecar: Sidecar) -> None:
    text = "Write to help@example.com or to jane.roe@example.org."
    response = sidecar.prompt(text)
    assert response.text == "Write to help@example.com or to <EMAIL_ADDRESS>."
    assert spans(response, text) == {"EMAIL_ADDRESS": ["jane.roe@example.org"]}


def test_custom_pattern_needs_its_context_word(sidecar: Sidecar) -> None:
    with_context = sidecar.prompt("Please look at ticket TCK-12345 today.")
    assert with_context.text == "Please look at ticket <TICKET_ID> today."
    finding = next(f for f in with_context.findings if f.entity_type == "TICKET_ID")
    assert finding.score == pytest.approx(0.65)  # 0.3 + Presidio's context boost of 0.35
    without = sidecar.prompt("The value TCK-12345 appeared in a log.")
    assert without.decision == pb.ALLOW
    assert "TCK-12345" in without.text


def test_custom_deny_list_is_whole_word_and_case_insensitive(sidecar: Sidecar) -> None:
    response = sidecar.prompt("Project BlueBird and Night Hawk, not bluebirds.")
    assert response.text == "Project <CODENAME> and <CODENAME>, not bluebirds."


def test_policy_selection_by_tenant_and_app(sidecar: Sidecar) -> None:
    text = "Contact jane.roe@example.org please."
    cases = {
        ("", ""): ("default", "Contact <EMAIL_ADDRESS> please."),
        ("unknown-tenant", "x"): ("default", "Contact <EMAIL_ADDRESS> please."),
        ("acme", "billing"): ("acme", "Contact  please."),
        ("acme", "support-web"): ("acme-support", "Contact [acme-support email] please."),
        ("fast-lane", ""): ("patterns-only", "Contact <EMAIL_ADDRESS> please."),
    }
    for (tenant, app), (policy, expected) in cases.items():
        response = sidecar.prompt(text, tenant=tenant, app=app)
        assert (response.policy, response.text) == (policy, expected), (tenant, app)
        assert len(response.policy_revision) == 64


def test_patterns_only_policy_does_not_need_ner(sidecar: Sidecar) -> None:
    compiled = sidecar.pipeline.policies.by_name["patterns-only"]
    assert compiled.stages[0].needs_ner is False  # type: ignore[attr-defined]
    response = sidecar.prompt("John Smith: 212-555-0187", tenant="fast-1")
    assert response.text == "John Smith: <PHONE_NUMBER>"  # PERSON not asked for


def test_messages_are_inspected_each_with_its_own_offsets(sidecar: Sidecar) -> None:
    messages = [pb.Message(role="system", content="You are helpful."),
                pb.Message(role="user", content="I am John Smith, mail john@example.com")]
    response = sidecar.stub.InspectPrompt(
        pb.InspectRequest(messages=pb.Messages(messages=messages)), timeout=30)
    assert response.decision == pb.MODIFY
    assert response.WhichOneof("content") == "messages"
    out = [(m.role, m.content) for m in response.messages.messages]
    assert out == [("system", "You are helpful."), ("user", "I am <PERSON>, mail <EMAIL_ADDRESS>")]
    for finding in response.findings:
        assert finding.message_index == 1
    email = next(f for f in response.findings if f.entity_type == "EMAIL_ADDRESS")
    assert messages[1].content[email.start:email.end] == "john@example.com"


def test_completion_is_inspected_too(sidecar: Sidecar) -> None:
    response = sidecar.completion("Sure, Jane's email is jane.roe@example.org.")
    assert response.decision == pb.MODIFY
    assert "jane.roe@example.org" not in response.text


def test_clean_text_and_empty_text_are_allowed(sidecar: Sidecar) -> None:
    assert sidecar.prompt("What is the capital of France?").decision == pb.ALLOW
    empty = sidecar.prompt("")
    assert (empty.decision, empty.text, list(empty.findings)) == (pb.ALLOW, "", [])


def test_non_bmp_characters_do_not_shift_offsets(sidecar: Sidecar) -> None:
    text = "\U0001f600\U0001f680 mail jane.roe@example.org \U0001f600"
    response = sidecar.prompt(text)
    (finding,) = response.findings
    assert text[finding.start:finding.end] == "jane.roe@example.org"


def _status(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_missing_content_is_invalid_argument(sidecar: Sidecar) -> None:
    err = _status(lambda: sidecar.stub.InspectPrompt(pb.InspectRequest(tenant="a"), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "content" in err.details()


def test_empty_messages_is_invalid_argument(sidecar: Sidecar) -> None:
    err = _status(lambda: sidecar.stub.InspectPrompt(
        pb.InspectRequest(messages=pb.Messages()), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one message" in err.details()


def test_output_schema_errors(sidecar: Sidecar) -> None:
    on_prompt = _status(lambda: sidecar.prompt("{}", output_schema="invoice"))
    assert on_prompt.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "InspectCompletion only" in on_prompt.details()
    unknown = _status(lambda: sidecar.completion("{}", output_schema="invoice"))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no schema 'invoice'" in unknown.details()


def test_oversized_text_is_resource_exhausted_naming_the_limit(sidecar: Sidecar) -> None:
    limit = 64 * 1024
    err = _status(lambda: sidecar.prompt("a" * (limit + 1)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limit of {limit} bytes" in err.details()
    multibyte = _status(lambda: sidecar.prompt("é" * (limit // 2 + 1)))  # 2 bytes each
    assert multibyte.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sidecar.prompt("a" * limit).decision == pb.ALLOW  # exactly at the limit is fine


def test_beyond_grpc_message_cap_is_resource_exhausted(sidecar: Sidecar) -> None:
    err = _status(lambda: sidecar.prompt("a" * (4 * 1024 * 1024)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_too_many_messages_and_attributes(sidecar: Sidecar) -> None:
    many = pb.Messages(messages=[pb.Message(role="user", content="hi")] * 51)
    err = _status(lambda: sidecar.stub.InspectPrompt(pb.InspectRequest(messages=many), timeout=5))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 50" in err.details()
    attrs = {f"k{i}": "v" for i in range(65)}
    err = _status(lambda: sidecar.prompt("hi", attributes=attrs))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "attributes" in err.details()


def test_error_details_never_echo_the_text(sidecar: Sidecar) -> None:
    secret = "jane.roe@example.org " * 5000
    err = _status(lambda: sidecar.prompt(secret + "x" * 70000))
    assert "jane.roe" not in err.details()


def test_concurrent_calls_get_the_same_answers_as_sequential_ones(sidecar: Sidecar) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"Agent {name} ({name.lower()}@example.com) called from Berlin about case {i}."
             for i, name in enumerate(["Alice Johnson", "Bob Miller", "Carol White",
                                       "David Brown", "Erin Davis", "Frank Moore"] * 4)]
    sequential = [sidecar.prompt(t).text for t in texts]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda t: sidecar.prompt(t).text, texts))
    assert concurrent == sequential
    assert all("@example.com" not in t for t in concurrent)
