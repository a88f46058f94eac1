"""Structured-output validation through the gRPC API (tests/policies/schema.yaml)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.cli import main
from tests.conftest import Sidecar

GOOD = {"title": "Printer on fire", "priority": "high", "reporter": {"name": "Ops"}}


def complete(sidecar: Sidecar, text: str, schema: str = "ticket") -> pb.InspectResponse:
    return sidecar.completion(text, tenant="schema", output_schema=schema)


def test_valid_json_is_allowed_with_no_errors(sidecar: Sidecar) -> None:
    reply = complete(sidecar, json.dumps(GOOD))
    assert reply.decision == pb.ALLOW
    assert list(reply.schema_errors) == []


def test_every_error_has_its_pointer_and_keyword_and_never_the_value(sidecar: Sidecar) -> None:
    bad = {"title": "x" * 300, "priority": "urgent-secret-value", "reporter": {},
           "tags": ["ok", 42], "extra": True}
    reply = complete(sidecar, json.dumps(bad))
    assert reply.decision == pb.BLOCK
    errors = {(e.pointer, e.keyword) for e in reply.schema_errors}
    assert errors == {("/title", "maxLength"), ("/priority", "enum"),
                      ("/reporter", "required"), ("/tags/1", "type"),
                      ("", "additionalProperties")}
    by_keyword = {e.keyword: e for e in reply.schema_errors}
    assert by_keyword["maxLength"].schema_path == "/properties/title/maxLength"
    assert by_keyword["required"].message == 'fails \'required\': ["name"]'
    assert all("urgent-secret-value" not in e.message and "xxx" not in e.message
               for e in reply.schema_errors)
    assert [v.rule_id for v in reply.violations] == ["schema.invalid"]


def test_on_invalid_flag_reports_but_allows(sidecar: Sidecar) -> None:
    reply = complete(sidecar, json.dumps({"title": 5}), schema="ticket-lenient")
    assert reply.decision == pb.ALLOW
    assert {e.keyword for e in reply.schema_errors} >= {"type", "required"}


def test_the_first_fenced_json_block_is_validated(sidecar: Sidecar) -> None:
    text = f"Here you go:\n```json\n{json.dumps(GOOD)}\n```\nAnything else?"
    assert list(complete(sidecar, text).schema_errors) == []
    text = "Sure!\n```json\n{\"title\": 1}\n```"
    assert complete(sidecar, text).decision == pb.BLOCK


@pytest.mark.parametrize(("text", "reason"), [
    ("I could not produce a ticket, sorry.", "not JSON"),
    ('{"title": "a", "title": "b", "priority": "low", "reporter": {"name": "x"}}',
     "duplicate key"),
    ("[" * 10_000 + "]" * 10_000, "deeper than 128 levels"),
    ('{"n": 1e999999}', "too large"),
    ('{"n": ' + "9" * 5000 + "}", "longer than 400"),
    ('{"title": NaN}', "NaN is not valid JSON"),
    ('{"title": "unterminated', "not valid JSON"),
    ("```json\n\n```", "empty"),
])
def test_bad_json_gets_a_clear_answer_not_a_crash(sidecar: Sidecar, text: str,
                                                  reason: str) -> None:
    reply = complete(sidecar, text)
    assert reply.decision == pb.BLOCK
    assert [e.keyword for e in reply.schema_errors] == ["json"]
    assert reason in reply.schema_errors[0].message


def test_pii_and_content_run_over_string_values_and_the_json_stays_valid(
        sidecar: Sidecar) -> None:
    document = {"title": "Damn, call John Smith", "priority": "low",
                "reporter": {"name": "Jane Roe", "email": "jane.roe@example.com"},
                "tags": ["printer", "quote \" and \\ and \n"]}
    text = json.dumps(document, ensure_ascii=True, indent=1)  # escapes in the raw text
    reply = complete(sidecar, text)
    assert reply.decision == pb.MODIFY
    redacted = json.loads(reply.text)
    assert redacted["title"] == "[REDACTED], call <PERSON>"
    assert redacted["reporter"] == {"name": "<PERSON>", "email": "<EMAIL_ADDRESS>"}
    assert redacted["tags"] == document["tags"]
    assert list(reply.schema_errors) == []
    found = {text[f.start:f.end] for f in reply.findings}
    assert {"John Smith", "Jane Roe", "jane.roe@example.com"} <= found
    damn = next(v for v in reply.violations if v.rule_id == "profanity")
    assert text[damn.start:damn.end] == "Damn"


def test_offsets_inside_escaped_strings_point_at_the_raw_characters(sidecar: Sidecar) -> None:
    text = ('{"title": "caf\\u00e9 \\u00e0 John Smith", "priority": "low", '
            '"reporter": {"name": "x"}}')
    reply = complete(sidecar, text)
    raw = [text[f.start:f.end] for f in reply.findings]
    assert "John Smith" in raw
    # Every span is whole escape sequences: it decodes to part of the value.
    assert all(json.loads(f'"{span}"') in "caf\u00e9 \u00e0 John Smith" for span in raw)
    assert json.loads(reply.text)["title"].endswith(" <PERSON>")


def test_a_redaction_that_breaks_the_schema_is_reported(sidecar: Sidecar) -> None:
    # "code" has maxLength 12: "x@ex.co" (7) is valid, its replacement "<EMAIL_ADDRESS>"
    # (15) is not, so the redacted completion would break the app's contract.
    reply = complete(sidecar, json.dumps(dict(GOOD, code="x@ex.co")))
    assert reply.decision == pb.BLOCK
    assert "schema.redacted_invalid" in {v.rule_id for v in reply.violations}
    assert [(e.pointer, e.keyword) for e in reply.schema_errors] == [("/code", "maxLength")]
    lenient = complete(sidecar, json.dumps(dict(GOOD, code="x@ex.co")), schema="ticket-lenient")
    assert lenient.decision == pb.MODIFY  # on_invalid: flag lets it through, reported


def _status(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_unknown_schema_ids_and_misuse_are_invalid_argument(sidecar: Sidecar) -> None:
    err = _status(lambda: complete(sidecar, "{}", schema="invoice"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "defines no schema 'invoice'; it defines: any, ticket, ticket-lenient" in err.details()
    err = _status(lambda: sidecar.stub.InspectCompletion(pb.InspectRequest(
        tenant="schema", output_schema="ticket",
        messages=pb.Messages(messages=[pb.Message(role="assistant", content="{}")])),
        timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not to messages" in err.details()


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


POLICY = ("name: default\nstructured_output:\n  schemas:\n"
          "    t: {file: schemas/t.json}\n")


@pytest.mark.parametrize(("schema", "reason"), [
    ('{"type": "strnig"}', "not a valid Draft 2020-12 schema at '/type'"),
    ('{"type": "object", "type": "array"}', "duplicate key"),
    ('{"$schema": "http://json-schema.org/draft-07/schema#"}', "only Draft 2020-12"),
    ("{not json", "not valid JSON"),
])
def test_a_broken_schema_fails_the_policy_load(tmp_path: Path, schema: str, reason: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": POLICY, "schemas/t.json": schema})
    assert main(["policy", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "structured_output.schemas.t.file" in err
    assert reason in err


def test_a_schema_outside_the_policy_directory_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"p/default.yaml": POLICY.replace("schemas/t.json", "../t.json"),
                     "t.json": "{}"})
    assert main(["policy", "check", str(tmp_path / "p")]) == 1
    error = capsys.readouterr().err
    # Refused by the policy model (a98f7b7) before the schema stage looks at the path.
    assert "structured_output.schemas.t.file" in error
    assert "inside the policy directory" in error


def test_editing_a_schema_file_changes_the_policy_revision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": POLICY, "schemas/t.json": '{"type": "object"}'})
    assert main(["policy", "check", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    write(tmp_path, {"schemas/t.json": '{"type": "array"}'})
    assert main(["policy", "check", str(tmp_path)]) == 0
    assert capsys.readouterr().out != first


# -- round 12 (outside trial 18): naming a schema must not switch inspection off for
# what lies outside the string values ----------------------------------------------------

def test_prose_around_the_json_block_is_inspected(sidecar: Sidecar) -> None:
    """Trial 18: with output_schema, text outside the ```json block was not inspected at
    all (a card, an AWS key and a blocked word came back ALLOW, unchanged)."""
    block = f"```json\n{json.dumps(GOOD)}\n```"
    reply = complete(sidecar, f"Damn, John Smith wrote to jane.roe@example.com:\n{block}")
    assert reply.decision == pb.MODIFY
    assert reply.text == f"[REDACTED], <PERSON> wrote to <EMAIL_ADDRESS>:\n{block}"
    card = complete(sidecar, f"Card 4111 1111 1111 1111 below.\n{block}")
    assert card.decision == pb.BLOCK
    assert "pii.CREDIT_CARD" in {v.rule_id for v in card.violations}


def test_a_second_json_block_is_inspected(sidecar: Sidecar) -> None:
    first = f"```json\n{json.dumps(GOOD)}\n```"
    second = '```json\n{"title": "mail jane.roe@example.com", "priority": "low"}\n```'
    reply = complete(sidecar, f"{first}\n{second}")
    assert reply.decision == pb.MODIFY
    assert reply.text == f"{first}\n{second.replace('jane.roe@example.com', '<EMAIL_ADDRESS>')}"


def test_numbers_and_keys_are_inspected(sidecar: Sidecar) -> None:
    """Trial 18: a card written as a JSON number was missed once the object also had a
    string value; keys were never inspected."""
    card = complete(sidecar, '{"a": 4111111111111111, "b": "x"}', schema="any")
    assert card.decision == pb.BLOCK
    assert "pii.CREDIT_CARD" in {v.rule_id for v in card.violations}
    key = complete(sidecar, '{"jane.roe@example.com": "x", "b": 1}', schema="any")
    assert key.decision == pb.MODIFY
    assert json.loads(key.text) == {"<EMAIL_ADDRESS>": "x", "b": 1}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), inner, max_size=3),
    max_leaves=8)
_PLANTED = "jane.roe@example.com"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), _JSON,
                                min_size=1, max_size=4),
       where=st.sampled_from(["before", "after", "value", "key", "second block"]),
       fenced=st.booleans(), indent=st.sampled_from([None, 1]))
def test_no_part_of_a_completion_escapes_inspection(sidecar: Sidecar, document: dict[str, Any],
                                                    where: str, fenced: bool,
                                                    indent: int | None) -> None:
    """Invariant: whatever the shape (plain or fenced JSON, prose before or after, a
    second block, the value in a key or a string), an e-mail address in the completion
    never comes back, and every answer is ALLOW, MODIFY or BLOCK, never an error."""
    if where == "value":
        document = {**document, "zz": f"write to {_PLANTED} now"}
    elif where == "key":
        document = {**document, _PLANTED: 1}
    body = json.dumps(document, indent=indent)
    text = f"```json\n{body}\n```" if fenced or where in ("before", "after", "second block") \
        else body
    if where == "before":
        text = f"Write to {_PLANTED}.\n{text}"
    elif where == "after":
        text = f"{text}\nWrite to {_PLANTED}."
    elif where == "second block":
        text = f'{text}\n```json\n{{"m": "{_PLANTED}"}}\n```'
    reply = complete(sidecar, text, schema="any")
    assert reply.decision in (pb.MODIFY, pb.BLOCK), reply
    assert _PLANTED not in reply.text


@pytest.mark.parametrize("document", [
    {"created_at": 1764700000, "order_id": 9876543210, "size_bytes": 2147483648},
    # trial 20: microsecond timestamps (10% pass a card's checksum), 12-digit ids
    {"ts_us": 1733156167900366, "id": 164208555351, "account": 123456789012},
    # trial 21: EAN-13 barcodes (one passes a card's checksum, one reads as a phone)
    {"ean": 4009397298065, "gtin": 4999622830385},
    {"count": 3105551234, "ratio": 0.25, "ok": True, "none": None},
    list(range(3000)),
])
def test_ordinary_numbers_stay_as_they_are(sidecar: Sidecar, document: Any) -> None:
    """Trial 19: ten-digit numbers (epoch seconds, ids) were read as phone numbers in the
    text outside the strings and masked inside the number: no longer JSON, BLOCK."""
    text = json.dumps(document)
    reply = sidecar.completion(text, tenant="schema-mask", output_schema="any")
    assert (reply.decision, reply.text) == (pb.ALLOW, text), reply.violations


def test_a_long_number_with_pii_becomes_a_string_and_the_json_stays_valid(
        sidecar: Sidecar) -> None:
    """A card number as a JSON number under an editing action: the number cannot hold
    the edit, so the whole token becomes a JSON string; the schema decides the rest."""
    reply = sidecar.completion('{"a": 5500572311393153, "b": "x"}', tenant="schema-mask",
                               output_schema="any")
    assert reply.decision == pb.MODIFY, reply
    assert json.loads(reply.text) == {"a": "************3153", "b": "x"}


def test_a_blocked_word_as_a_key_is_caught(sidecar: Sidecar) -> None:
    reply = complete(sidecar, '{"damn": 1}', schema="any")
    assert reply.decision == pb.MODIFY and json.loads(reply.text) == {"[REDACTED]": 1}
