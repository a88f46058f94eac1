"""`explain`: why each PII finding was made, back to the caller who asked and nowhere else.

Through the real gRPC API (unary, chat, stream), the client package and the CLI, with the
real Presidio/spaCy stage. What an attacker would try: read explanations from a call
that did not ask (through the per-message cache), find the matched text echoed in an
explanation, find explanations in the audit payload or the logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.client import GuardrailClient
from sidecar.pipeline import Pipeline
from sidecar.types import Inspection
from tests.conftest import REPO, TEST_POLICIES, Sidecar, make_settings
from tests.faults import Sidecar as ServeProcess
from tests.faults import kill_leftovers

TEXT = ("Call me at 212-555-0100 or mail jane.roe@example.com; my SSN: 536-22-8167, "
        "server 10.1.2.3, ticket TCK-12345.")


def _explained(reply: Any) -> dict[str, pb.Explanation]:
    assert all(f.HasField("explanation") for f in reply.findings), reply.findings
    return {f.entity_type: f.explanation for f in reply.findings}


def test_each_finding_says_recognizer_pattern_score_context_and_check(
        sidecar: Sidecar) -> None:
    reply = sidecar.prompt(TEXT, explain=True)
    why = _explained(reply)
    assert set(why) == {"PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "IP_ADDRESS", "TICKET_ID"}
    email = why["EMAIL_ADDRESS"]
    assert (email.recognizer, email.pattern) == ("EmailRecognizer", "Email (Medium)")
    assert email.base_score == pytest.approx(0.5)
    assert email.validation == "public top-level domain check: passed"
    assert (why["IP_ADDRESS"].pattern, why["IP_ADDRESS"].validation) == ("IPv4", "")
    # A policy's custom recognizer below min_score without its context word: raised by it.
    ticket = why["TICKET_ID"]
    assert (ticket.recognizer, ticket.pattern) == ("policy.recognizers[0].TICKET_ID",
                                                   "patterns[0]")
    assert list(ticket.context_words) == ["ticket"]
    assert ticket.base_score == pytest.approx(0.3)
    assert ticket.context_improvement > 0
    ssn = why["US_SSN"]
    assert (ssn.recognizer, ssn.pattern, list(ssn.context_words)) == (
        "UsSsnRecognizer", "SSN5 (medium)", ["ssn"])
    assert ssn.base_score == pytest.approx(0.5) and ssn.context_improvement == \
        pytest.approx(0.35)
    # Our national phone recognizer weighs its words itself: they are read back.
    phone = why["PHONE_NUMBER"]
    assert phone.recognizer == "NationalPhoneRecognizer"
    assert "call" in phone.context_words
    # The decision, text and findings are those of the same call without explain.
    plain = sidecar.prompt(TEXT)
    assert (plain.decision, plain.text) == (reply.decision, reply.text)
    assert [(f.entity_type, f.start, f.end, f.score) for f in plain.findings] == \
        [(f.entity_type, f.start, f.end, f.score) for f in reply.findings]
    assert not any(f.HasField("explanation") for f in plain.findings)


def test_a_deny_list_is_named_never_spelled(sidecar: Sidecar) -> None:
    """A policy's deny-list words are the policy's secret as much as the text's: the
    explanation names the list, not its regular expression."""
    reply = sidecar.prompt("The night hawk project starts today.", explain=True)
    (codename,) = [f.explanation for f in reply.findings if f.entity_type == "CODENAME"]
    assert (codename.recognizer, codename.pattern) == ("policy.recognizers[1].CODENAME",
                                                       "deny_list")
    assert "bluebird" not in str(codename)


def test_names_the_ner_model_the_checksum_and_the_address_recognizer(
        sidecar: Sidecar, tmp_path: Path) -> None:
    """The address recognizer used to be named by one of its own regular expressions
    (a shadowed module constant): explanations showed the regex."""
    reply = sidecar.prompt("Jane Doe lives at 221B Baker Street, London NW1 6XE.",
                           tenant="pseudo", explain=True)
    why = _explained(reply)
    assert why["PERSON"].recognizer == "SpacyRecognizer"
    assert why["PERSON"].pattern.startswith("NER model en_core_web_sm")
    blocked = sidecar.prompt("Pay with 4111111111111111 today.", explain=True)
    assert blocked.decision == pb.BLOCK
    card = _explained(blocked)["CREDIT_CARD"]
    assert (card.recognizer, card.validation) == ("CreditCardRecognizer",
                                                  "Luhn checksum: passed")
    # The shipped default policy lists STREET_ADDRESS.
    shipped = Pipeline.from_settings(make_settings(tmp_path, policies=REPO / "policies"))
    verdict = shipped.run(Inspection.of_text(
        "Ship it to 221B Baker Street, London NW1 6XE please.", explain=True))
    (address,) = [f.explanation for f in verdict.findings if f.entity_type == "STREET_ADDRESS"]
    assert address is not None and address.recognizer == "StreetAddressRecognizer"
    assert address.pattern == "street address"


def test_a_cached_chat_never_hands_explanations_to_a_caller_that_did_not_ask(
        sidecar: Sidecar) -> None:
    """Chat messages' results are cached per message: an explained result must not be
    served to a later plain call, nor a plain cached result to an explain call."""
    turns = [pb.Message(role="user", content="Mail bob.stone@example.com today."),
             pb.Message(role="user", content="Or call me at 212-555-0199.")]

    def chat(explain: bool) -> pb.InspectResponse:
        return sidecar.stub.InspectPrompt(pb.InspectRequest(
            messages=pb.Messages(messages=turns), explain=explain), timeout=30)

    plain = chat(False)
    assert plain.findings and not any(f.HasField("explanation") for f in plain.findings)
    asked = chat(True)
    assert [f.explanation.recognizer for f in asked.findings] == \
        ["EmailRecognizer", "NationalPhoneRecognizer"]
    again = chat(False)
    assert not any(f.HasField("explanation") for f in again.findings)


def test_a_stream_explains_when_its_first_chunk_asks(sidecar: Sidecar) -> None:
    chunks = [pb.CompletionChunk(request=pb.InspectRequest(explain=True)),
              pb.CompletionChunk(text="Write to jane.roe@"),
              pb.CompletionChunk(text="example.com for details."),
              pb.CompletionChunk(end=True)]
    verdicts = list(sidecar.stub.InspectCompletionStream(iter(chunks), timeout=30))
    findings = [f for v in verdicts for f in v.findings]
    assert [f.explanation.recognizer for f in findings] == ["EmailRecognizer"]


def test_the_client_package_returns_explanations(sidecar: Sidecar) -> None:
    with GuardrailClient(sidecar.address) as guard:
        asked = guard.inspect_prompt("Mail jane.roe@example.com", explain=True)
        plain = guard.inspect_prompt("Mail jane.roe@example.com")
    assert asked.findings[0].explanation is not None
    assert asked.findings[0].explanation.pattern == "Email (Medium)"
    assert plain.findings[0].explanation is None


def test_the_audit_payload_holds_no_explanation(sidecar: Sidecar) -> None:
    reply = sidecar.prompt(TEXT, explain=True, request_id="explain-audit")
    plain = sidecar.prompt(TEXT, request_id="explain-audit")
    payloads = []
    for answer in (reply, plain):
        (record,) = list(sidecar.audit.records("id = ?", (answer.audit_id,)))
        payloads.append(json.loads(sidecar.audit.payload(record) or b"null"))
    assert payloads[0] == payloads[1]  # asking changed nothing that is kept
    kept = json.dumps(payloads[0])
    for word in ("Recognizer", "Email (Medium)", "explanation", "context"):
        assert word not in kept


MAILBOX = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)
NAMES = st.sampled_from(["Jane Doe", "Milenko Vučković", "John Smith", "Grace Hopper",
                         "Sonoka Miki", "Ada Lovelace"])
DIGITS = st.text(alphabet="0123456789", min_size=4, max_size=4)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mailbox=MAILBOX, name=NAMES, line=DIGITS, lead=st.sampled_from(["", "Hi. ", "FYI: "]))
def test_no_explanation_echoes_the_text_it_explains(
        sidecar: Sidecar, mailbox: str, name: str, line: str, lead: str) -> None:
    text = (f"{lead}{name} asked us to call 415-555-{line} or write to "
            f"{mailbox}@{mailbox}corp.example.com.")
    reply = sidecar.prompt(text, tenant="pseudo", explain=True)
    assert reply.findings
    for finding in reply.findings:
        matched = text[finding.start:finding.end]
        why = finding.explanation
        said = [why.recognizer, why.pattern, why.validation, *why.context_words]
        assert not any(matched.casefold() in part.casefold() for part in said), (matched, said)
        assert mailbox not in " ".join(said)


def test_explain_off_does_no_decision_process_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, Presidio is asked for no decision process and no explanation is built: the
    hot path pays nothing (counted, not timed)."""
    from presidio_analyzer import AnalyzerEngine

    import sidecar.pii.explain as explain

    asked: list[bool] = []
    analyze = AnalyzerEngine.analyze

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(bool(kwargs.get("return_decision_process")))
        return analyze(self, *args, **kwargs)

    built: list[str] = []
    real = explain.explanation_of

    def counting_explanations(*args: Any) -> Any:
        built.append("x")
        return real(*args)

    monkeypatch.setattr(AnalyzerEngine, "analyze", counting)
    monkeypatch.setattr(explain, "explanation_of", counting_explanations)
    pipeline = Pipeline.from_settings(make_settings(tmp_path))
    verdict = pipeline.run(Inspection.of_text(TEXT))
    assert verdict.findings and asked and not any(asked) and not built
    assert all(f.explanation is None for f in verdict.findings)
    asked.clear()
    explained = pipeline.run(Inspection.of_text(TEXT, explain=True))
    assert asked == [True] and len(built) == len(explained.findings)


# Texts where two recognizers find the same entity, span and score (the corpus's three
# kinds): which one keeps the finding decides what its explanation names.
TIED = ("hey its Dani, pretend to be my teacher Mr Baptiste and quiz me on french verbs",
        "my ssn is 419 34 4781 is it safe to put it on this rental application??",
        "Please block my card 4821 9935 1819 0934 immediately, my wallet was stolen.")


@settings(max_examples=12, deadline=None)
@given(order=st.randoms(use_true_random=False))
def test_an_explanation_does_not_depend_on_the_order_presidio_lists_recognizers(
        order: Any) -> None:
    """Presidio's registry answers `list(set(recognizers))`, whose order follows the
    objects' addresses: it differs between worker processes. The same request explained
    by two workers must name the same recognizers (it named CreditCardRecognizer in one
    and SeparatedCardRecognizer in the other)."""
    from presidio_analyzer import RecognizerRegistry

    from sidecar.pipeline import Limits
    from sidecar.policy.store import compile_directory
    from tests.conftest import DETECTION_RESOURCES

    def explained(pipeline: Pipeline) -> list[list[tuple[str, str, str]]]:
        return [[(f.entity_type, f.explanation.recognizer, f.explanation.pattern)
                 for f in pipeline.run(Inspection.of_text(text, explain=True)).findings
                 if f.explanation is not None] for text in TIED]

    def compiled() -> Pipeline:  # a fresh registry: its answers are cached
        return Pipeline(compile_directory(REPO / "policies", DETECTION_RESOURCES),
                        Limits(1 << 20, 64, 64))

    reference = explained(compiled())
    assert [{entity for entity, _, _ in found} for found in reference] == [
        {"PERSON"}, {"US_SSN"}, {"CREDIT_CARD"}]
    answer = RecognizerRegistry.get_recognizers

    def shuffled(self: Any, *args: Any, **kwargs: Any) -> list[Any]:
        recognizers = list(answer(self, *args, **kwargs))
        order.shuffle(recognizers)
        return recognizers

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RecognizerRegistry, "get_recognizers", shuffled)
        assert explained(compiled()) == reference


def _inspect(tmp_path: Path, *flags: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "inspect", "--policies", str(TEST_POLICIES),
         "--data-dir", str(tmp_path), *flags], input=TEXT, text=True, capture_output=True,
        cwd=REPO, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_guardrail_inspect_explain(tmp_path: Path) -> None:
    asked = _inspect(tmp_path, "--explain")
    plain = _inspect(tmp_path)
    assert all("explanation" not in f for f in plain["findings"])
    by_type = {f["entity_type"]: f["explanation"] for f in asked["findings"]}
    assert by_type["EMAIL_ADDRESS"]["recognizer"] == "EmailRecognizer"
    assert by_type["TICKET_ID"]["context_words"] == ["ticket"]
    assert [{k: v for k, v in f.items() if k != "explanation"} for f in asked["findings"]] \
        == plain["findings"]


def test_explanations_never_reach_the_logs(tmp_path: Path) -> None:
    """A real `guardrail serve` logging at DEBUG: explain calls leave no explanation,
    recognizer name or context word in its log lines."""
    serve = ServeProcess(tmp_path / "data", "--log-level", "DEBUG").serving()
    try:
        for _ in range(3):
            reply = serve.prompt(TEXT, explain=True)
            assert reply.findings[0].HasField("explanation")
    finally:
        serve.stop()
        kill_leftovers()
    logged = "".join(serve.lines)
    assert "serving" in logged
    for word in ("EmailRecognizer", "NationalPhoneRecognizer", "Email (Medium)",
                 '"explanation"', "context_words", "jane.roe", "536-22-8167"):
        assert word not in logged, word
