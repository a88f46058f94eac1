"""Red team: hostile JSON completions against the schema and PII stages.

The model writes the completion, so the model is the attacker here. What it controls:
the JSON text (escapes, nesting, numbers, keys, lengths). What the policy controls: the
schema, written by people who are not regex experts. The promises attacked:

- no input switches a stage off: every stage answers, or fails the request as the
  policy's `on_error` says, and never because of what the completion contains (a stage
  failure shows as an `error.<stage>` violation: the marker these tests look for);
- with `on_error: allow`, PII is still found and redacted next to anything hostile;
- validation costs time linear in the document, whatever the schema's patterns,
  `uniqueItems` or branching (RE2, linear `uniqueItems`, a per-document work budget);
- nesting has one honest limit (sidecar.jsontext.MAX_DEPTH), stated in the message, and
  everything within it is validated, recursive schemas included;
- numbers no double can hold are answered with a clear error, never an exception.

Hostile documents are generated (Hypothesis): lone surrogate escapes (`\\ud800`,
`\\udfff`, reversed pairs, a high surrogate before a non-surrogate escape) at random
places in keys and values, random nesting, huge number tokens, long strings, many keys,
with a card number embedded somewhere. They go through a real server over gRPC, for a
fail-open and a fail-closed policy. Pathological patterns are generated too (nested
quantifiers; lookaround and backreferences, which RE2 refuses) and loaded by the real
schema stage. No test asserts a timing: a backtracking engine would not finish (the
suite's timeout is the judge), so finishing with the right answer is the assertion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.errors import PolicyError
from sidecar.jsontext import MAX_DEPTH
from sidecar.policy.model import OutputSchema, StructuredOutput
from sidecar.stages.schema import SchemaStage
from sidecar.wellformed import well_formed
from tests.conftest import guardrail_stub, make_settings
from tests.redteam.conftest import TALLY

DRAFT = "https://json-schema.org/draft/2020-12/schema"
CARD = "4111 1111 1111 1111"
POLICY = """
name: {name}
match: {{tenants: [{name}]}}
on_error: {on_error}
content:
  rules:
    - {{id: profanity, category: profanity, action: redact, words: [damn]}}
pii:
  entities:
    CREDIT_CARD: {{action: replace}}
structured_output:
  ref_mirrors: {{"https://schemas.example.test/": schemas/}}
  schemas:
    any: {{file: schemas/any.json, on_invalid: flag}}
    mixed: {{file: schemas/mixed.json, on_invalid: flag}}
    ref: {{file: schemas/ref.json}}
    items: {{file: schemas/items.json}}
    dynamic: {{file: schemas/dynamic.json}}
    redos: {{file: schemas/redos.json}}
    numbers: {{file: schemas/numbers.json}}
    unique: {{file: schemas/unique.json}}
    branchy: {{file: schemas/branchy.json}}
    chain: {{file: schemas/chain.json}}
"""
SCHEMAS: dict[str, Any] = {
    "any": {"$schema": DRAFT},
    # Every JSON value, with patterns on values and keys, so hostile strings and keys
    # reach the regex engine, and errors carry pointers made of hostile keys.
    "mixed": {"$schema": DRAFT, "$ref": "#/$defs/node", "$defs": {"node": {
        "if": {"type": "object"},
        "then": {"propertyNames": {"pattern": "^.{0,40}$"},
                 "patternProperties": {"^k[0-9]+$": {"$ref": "#/$defs/node"}},
                 "additionalProperties": {"$ref": "#/$defs/node"}},
        "else": {"items": {"$ref": "#/$defs/node"}, "pattern": "^[^<>]*$"}}}},
    "ref": {"$schema": DRAFT, "anyOf": [
        {"type": "string"}, {"type": "number"},
        {"type": "array", "items": {"$ref": "#"}},
        {"type": "object", "additionalProperties": {"$ref": "#"}}]},
    "items": {"$schema": DRAFT, "type": "array", "items": {"$ref": "#"}},
    "dynamic": {"$schema": DRAFT, "$id": "https://schemas.example.test/tree",
                "$dynamicAnchor": "node", "type": "array",
                "items": {"$dynamicRef": "#node"}},
    "redos": {"$schema": DRAFT, "type": "object", "properties": {
        "email": {"pattern": "^([a-zA-Z0-9]+)*@example\\.com$"},
        # A subschema that declares the dialect: jsonschema would switch to its stock
        # class (Python's re) for it.
        "nested": {"$schema": DRAFT, "pattern": "^(a|aa)+$"}},
        "patternProperties": {"^(x+x+)+y$": {"type": "string"}},
        "unevaluatedProperties": {"type": "string"}},
    "numbers": {"$schema": DRAFT, "properties": {
        "half": {"multipleOf": 0.5}, "tiny": {"multipleOf": 1e-300},
        "huge": {"multipleOf": 1e308}, "three": {"multipleOf": 3}},
        "additionalProperties": {"maximum": 1e308}},
    "unique": {"$schema": DRAFT, "type": "array", "uniqueItems": True},
    # Re-validates each subtree once per branch: 2^depth keyword evaluations.
    "branchy": {"$schema": DRAFT, "anyOf": [
        {"type": "object", "properties": {"a": {"$ref": "#"}}},
        {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["b"]}],
        "unevaluatedProperties": False},
    # 40 $refs per level of the document: Python's stack runs out long before MAX_DEPTH.
    "chain": {"$schema": DRAFT, "$ref": "#/$defs/a0", "$defs": {
        **{f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(40)},
        "a40": {"type": "array", "items": {"$ref": "#/$defs/a0"}}}},
}


def stage_failures(reply: pb.InspectResponse) -> list[str]:
    """The marker of a stage that raised: what no input may ever cause."""
    return [v.rule_id for v in reply.violations if v.rule_id.startswith("error.")]


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.GuardrailStub]:
    folder = tmp_path_factory.mktemp("hostile")
    policies = folder / "policies"
    (policies / "schemas").mkdir(parents=True)
    for name, schema in SCHEMAS.items():
        (policies / "schemas" / f"{name}.json").write_text(json.dumps(schema))
    (policies / "default.yaml").write_text("name: default\n")
    for name, on_error in (("open", "allow"), ("closed", "block")):
        (policies / f"{name}.yaml").write_text(POLICY.format(name=name, on_error=on_error))
    settings_ = make_settings(folder, policies=policies, workers=0)
    with guardrail_stub(settings_) as stub:
        yield stub


def complete(stub: pb_grpc.GuardrailStub, text: str, schema: str,
             tenant: str = "open") -> pb.InspectResponse:
    reply = stub.InspectCompletion(pb.InspectRequest(
        tenant=tenant, text=text, output_schema=schema), timeout=60)
    assert stage_failures(reply) == [], (tenant, schema)
    return reply


def errors(reply: pb.InspectResponse) -> list[tuple[str, str]]:
    return [(e.pointer, e.keyword) for e in reply.schema_errors]


# --- Patterns: linear time, or refused at load ---------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize(("document", "expected"), [
    ({"email": "a" * 31 + "!"}, [("/email", "pattern")]),
    ({"email": "a" * 20_000 + "!"}, [("/email", "pattern")]),
    ({"email": "abc123@example.com"}, []),
    ({"nested": "a" * 60 + "b"}, [("/nested", "pattern")]),
    ({"nested": "a" * 61}, []),
    ({"x" * 40: "value"}, []),  # patternProperties misses, unevaluatedProperties takes it
    ({"x" * 40: 5}, [("", "unevaluatedProperties")]),
    ({"x" * 40 + "y": 5}, [("/" + "x" * 40 + "y", "type")]),
])
def test_a_backtracking_pattern_finishes_with_the_right_answer(
        stub: pb_grpc.GuardrailStub, document: dict[str, Any],
        expected: list[tuple[str, str]]) -> None:
    for tenant in ("open", "closed"):
        reply = complete(stub, json.dumps(document), "redos", tenant)
        assert errors(reply) == expected
        assert reply.decision == (pb.BLOCK if expected else pb.ALLOW)


ATOMS = st.sampled_from(["a", "b", "a", ".", "[ab]", "\\w", "a?", "(?:ab)"])
QUANTIFIERS = st.sampled_from(["*", "+", "?", "{1,3}", "*?", "+?", "{2}"])
UNSUPPORTED = st.sampled_from(["(?=a)", "(?!b)", "(?<=a)", "(?<!b)", "(a)\\1", "\\ud800"])
PATTERNS = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        st.tuples(inner, QUANTIFIERS).map(lambda t: f"(?:{t[0]}){t[1]}"),
        st.tuples(inner, QUANTIFIERS).map(lambda t: f"({t[0]}){t[1]}"),
        st.tuples(inner, inner).map("".join),
        st.tuples(inner, inner).map("|".join).map(lambda p: f"({p})"),
    ),
    max_leaves=6)


@st.composite
def hostile_patterns(draw: st.DrawFn) -> tuple[str, bool]:
    """A pattern with nested quantifiers, and whether RE2 can run it."""
    core = f"(?:{draw(PATTERNS)})+"
    supported = True
    if draw(st.integers(0, 3)) == 0:
        core = draw(st.sampled_from(["", core])) + draw(UNSUPPORTED) + core
        supported = False
    anchored = draw(st.booleans())
    return (f"^{core}$" if anchored else core), supported


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_patterns(), st.text("ab!", max_size=8))
def test_generated_pathological_patterns_run_on_re2_or_are_refused_at_load(
        tmp_path_factory: pytest.TempPathFactory, generated: tuple[str, bool],
        short: str) -> None:
    pattern, supported = generated
    folder = tmp_path_factory.mktemp("patterns")
    schema = {"$schema": DRAFT, "properties": {"v": {"pattern": pattern}}}
    (folder / "p.json").write_text(json.dumps(schema))
    config = StructuredOutput(schemas={"p": OutputSchema(file="p.json")})
    TALLY["schema patterns (refused)"]["tried"] += 1
    try:
        stage = SchemaStage(config, folder)
    except PolicyError as err:
        TALLY["schema patterns (refused)"]["caught"] += 1
        assert not supported
        message = str(err)
        assert "p.json" in message and "'/properties/v/pattern'" in message
        assert "RE2" in message
        return
    assert supported
    # Far beyond what backtracking survives: it must finish, and agree with `re` where
    # `re` can still answer (a short string; same semantics for these constructs).
    for attack in ("a" * 5_000 + "!", "ab" * 3_000 + "!", short):
        document = {"v": attack}
        invalid = bool(stage.validate("p", document, len(attack)))
        if attack is short:
            assert invalid == (re.search(pattern, short) is None)


@pytest.mark.parametrize(("files", "pointer"), [
    ({"s.json": {"properties": {"a": {"items": {"pattern": "^(?=x)"}}}}},
     "s.json: the pattern at '/properties/a/items/pattern'"),
    ({"s.json": {"patternProperties": {"(a)\\1": {}}}},
     "s.json: the pattern at '/patternProperties/(a)\\1'"),
    ({"s.json": {"$ref": "#/$defs/x", "$defs": {"x": {"pattern": "(?<!a)b"}}}},
     "s.json: the pattern at '/$defs/x/pattern'"),
    ({"s.json": {"$ref": "https://schemas.example.test/common.json#/$defs/id"},
      "common.json": {"$defs": {"id": {"pattern": "\\d+(?=px)"}}}},
     "common.json: the pattern at '/$defs/id/pattern'"),
    ({"s.json": {"properties": {"a": {"pattern": "\ud800"}}}},
     "s.json: the pattern at '/properties/a/pattern'"),
    ({"s.json": {"properties": {"a": {"$schema": "http://json-schema.org/draft-07/schema#"}}}},
     "s.json: only Draft 2020-12 schemas are supported ($schema at '/properties/a'"),
    ({"s.json": {"$ref": "missing.json"}}, "s.json: cannot resolve the $ref at '/$ref'"),
])
def test_a_schema_re2_cannot_run_is_refused_at_load_with_file_and_pointer(
        tmp_path: Path, files: dict[str, Any], pointer: str) -> None:
    for name, schema in files.items():
        (tmp_path / name).write_text(json.dumps(schema))
    config = StructuredOutput(schemas={"s": OutputSchema(file="s.json")},
                              ref_mirrors={"https://schemas.example.test/": "."})
    with pytest.raises(PolicyError) as caught:
        SchemaStage(config, tmp_path)
    assert pointer in str(caught.value)


def test_referenced_files_are_read_at_load_and_are_part_of_the_revision(
        tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"$ref": "common.json"}))
    (tmp_path / "common.json").write_text(json.dumps({"type": "string"}))
    config = StructuredOutput(schemas={"s": OutputSchema(file="s.json")})
    stage = SchemaStage(config, tmp_path)
    before = stage.digest
    (tmp_path / "common.json").unlink()  # a request never reads it again
    assert stage.validate("s", 5, 1) and not stage.validate("s", "x", 3)
    (tmp_path / "common.json").write_text(json.dumps({"type": "integer"}))
    assert SchemaStage(config, tmp_path).digest != before


# --- Lone surrogates: no stage switched off, the card still redacted -----------------

SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udbff", "\udc00",
                              "\udfff\ud800",  # reversed pair
                              "\ud83d\ude00"])  # a real pair, as two code points
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@st.composite
def hostile_string(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(TEXT, SURROGATES, st.just("<")), max_size=5))
    return "".join(parts)


def hostile_value(depth: int) -> st.SearchStrategy[Any]:
    leaves = st.one_of(hostile_string(), st.integers(-10**300, 10**300),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.booleans(), st.none(),
                       st.text(alphabet="ab \ud800", min_size=200, max_size=800))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(hostile_string(), inner, max_size=4)),
        max_leaves=depth)


@st.composite
def hostile_documents(draw: st.DrawFn) -> tuple[str, bool]:
    """JSON text with a card number in one string, and whether it is acceptable JSON."""
    document = draw(st.dictionaries(hostile_string(), hostile_value(12), max_size=6))
    around = draw(st.tuples(hostile_string(), hostile_string()))
    carrier = f"{around[0]} card {CARD} ok {around[1]}"
    # The card goes in a new key, or deep inside a generated nest of arrays.
    nest = draw(st.integers(0, MAX_DEPTH + 20))
    if draw(st.integers(0, 3)) == 0:  # many keys
        document.update({f"k{i}": i for i in range(500)})
    document[draw(hostile_string())] = json.loads("[" * nest + json.dumps(carrier)
                                                  + "]" * nest) if nest else carrier
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    # Raw surrogates cannot travel in a protobuf string: write them as JSON escapes.
    text = re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)
    acceptable = nest < MAX_DEPTH
    suffix = draw(st.sampled_from(["", "", "", "", "", "1e999999", "-1e400", "9" * 5_000,
                                   "NaN", "Infinity", "1" * 400]))
    if suffix:
        text = text[:-1] + (", " if len(document) else "") + f'"n": {suffix}' + "}"
        acceptable = False
    return text, acceptable


def assert_card_redacted(text: str, reply: pb.InspectResponse) -> None:
    cards = [f for f in reply.findings if f.entity_type == "CREDIT_CARD"]
    assert cards, "the PII stage did not run, or missed the card"
    # Generated numbers may be card numbers too (Luhn-valid): ours must be among them.
    assert any(json.loads(f'"{text[f.start:f.end]}"') == CARD for f in cards)
    assert reply.decision == pb.MODIFY
    assert CARD not in reply.text


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(hostile_documents(), st.sampled_from(["any", "mixed"]))
def test_hostile_json_never_switches_a_stage_off(
        stub: pb_grpc.GuardrailStub, generated: tuple[str, bool], schema: str) -> None:
    text, acceptable = generated
    for tenant in ("open", "closed"):
        reply = complete(stub, text, schema, tenant)  # asserts no error.<stage>
        TALLY["hostile json (card redacted)"]["tried"] += 1
        assert_card_redacted(text, reply)
        TALLY["hostile json (card redacted)"]["caught"] += 1
        if acceptable:
            assert "json" not in {e.keyword for e in reply.schema_errors}
            json.loads(reply.text)  # still valid JSON after redaction
        else:
            assert [e.keyword for e in reply.schema_errors] == ["json"]


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\udfff\\ud800",
                                    "\\ud800\\u0041", "\\udbff\\udbff"])
def test_a_lone_surrogate_next_to_a_card_fails_open_without_skipping_pii(
        stub: pb_grpc.GuardrailStub, escape: str) -> None:
    text = f'{{"note": "pay {escape} {CARD} {escape}", "k{escape}": "<{escape}"}}'
    for schema in ("any", "mixed"):
        reply = complete(stub, text, schema, "open")
        assert_card_redacted(text, reply)
        redacted = json.loads(reply.text)
        assert redacted["note"] == json.loads(f'"pay {escape} <CREDIT_CARD> {escape}"')
    # The key's pointer comes back, well-formed (a raw surrogate could not be encoded).
    mixed = complete(stub, text, "mixed", "open")
    key = json.loads(f'"k{escape}"')
    assert "/" + well_formed(key) in {e.pointer for e in mixed.schema_errors}


# --- Nesting: one limit, honest, and everything within it validated ----------------

def nested(depth: int, leaf: str = "[]") -> str:
    """`depth` - 1 arrays around `leaf` (so `[]` and `[1]` make `depth` levels)."""
    return "[" * (depth - 1) + leaf + "]" * (depth - 1)


def depth_of(text: str) -> int:
    level = deepest = 0
    for char in text:  # no strings with brackets in these documents
        level += (char in "[{") - (char in "]}")
        deepest = max(deepest, level)
    return deepest


@pytest.mark.parametrize("schema", ["ref", "items", "dynamic"])
def test_recursive_schemas_validate_at_the_limit_and_beyond_it_the_limit_is_stated(
        stub: pb_grpc.GuardrailStub, schema: str) -> None:
    for tenant in ("open", "closed"):
        assert errors(complete(stub, nested(MAX_DEPTH), schema, tenant)) == []
        wrong = complete(stub, nested(MAX_DEPTH, "[true]"), schema, tenant)
        # anyOf fails as a whole at the top; items report the leaf itself.
        assert errors(wrong) == [("", "anyOf") if schema == "ref"
                                 else ("/0" * MAX_DEPTH, "type")]
        refused = complete(stub, nested(MAX_DEPTH + 1), schema, tenant)
        assert [e.message for e in refused.schema_errors] == [
            f"JSON nests deeper than {MAX_DEPTH} levels"]
        assert refused.decision == pb.BLOCK


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 3 * MAX_DEPTH), st.sampled_from(["ref", "items", "dynamic"]),
       st.sampled_from(["[]", "[1]", "[true]", '{"a": []}']))
def test_any_depth_gets_a_validation_or_the_stated_limit(
        stub: pb_grpc.GuardrailStub, depth: int, schema: str, leaf: str) -> None:
    text = nested(depth, leaf)
    reply = complete(stub, text, schema, "open")
    if depth_of(text) > MAX_DEPTH:
        assert [e.keyword for e in reply.schema_errors] == ["json"]
    else:
        assert "limit" not in {e.keyword for e in reply.schema_errors}
        assert "json" not in {e.keyword for e in reply.schema_errors}


def test_a_policy_cannot_raise_the_depth_limit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sidecar.cli import main

    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "t.json").write_text("{}")
    (tmp_path / "default.yaml").write_text(
        "name: default\nstructured_output:\n  max_depth: 999\n"
        "  schemas:\n    t: {file: schemas/t.json}\n")
    assert main(["policy", "check", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "structured_output.max_depth" in error and str(MAX_DEPTH) in error


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("schema", "text"), [
    ("branchy", '{"a": ' * 40 + "{}" + "}" * 40),
    ("chain", nested(MAX_DEPTH)),
])
def test_a_schema_that_cannot_finish_in_bounds_reports_a_limit_not_a_failure(
        stub: pb_grpc.GuardrailStub, schema: str, text: str) -> None:
    for tenant in ("open", "closed"):
        reply = complete(stub, text, schema, tenant)
        assert [e.keyword for e in reply.schema_errors] == ["limit"]
        assert reply.decision == pb.BLOCK  # on_invalid: block, not on_error


# --- Numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ('{"half": 1e999999}', "too large to represent"),
    ('{"half": -1e400}', "too large to represent"),
    ('{"half": ' + "9" * 5_000 + "}", "longer than 400"),
    ('{"half": ' + "1" * 400 + "}", "too large to represent"),
    ('{"half": -' + "2" * 309 + "}", "too large to represent"),
    ('{"half": NaN}', "NaN is not valid JSON"),
    ('{"half": -Infinity}', "-Infinity is not valid JSON"),
    ('{"half": 0.' + "0" * 500 + "1}", "longer than 400"),
])
def test_numbers_no_double_holds_get_a_clear_error(
        stub: pb_grpc.GuardrailStub, text: str, problem: str) -> None:
    for tenant in ("open", "closed"):
        reply = complete(stub, text, "numbers", tenant)
        assert [e.keyword for e in reply.schema_errors] == ["json"]
        assert problem in reply.schema_errors[0].message


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["half", "tiny", "huge", "three", "other"]),
       st.one_of(st.integers(-(10**308), 10**308),
                 st.floats(allow_nan=False, allow_infinity=False),
                 st.sampled_from([10**308, -(10**308) + 1, 1e-320, 5e-324, 1.7e308,
                                  int(1.7e308), 1e-999999])))
@example("half", 5500572311393153.0)  # a valid card number, as the clean-clone CI drew
def test_multiple_of_and_maximum_answer_for_extreme_numbers(
        stub: pb_grpc.GuardrailStub, field: str, number: float) -> None:
    # Which extreme numbers are multiples is jsonschema's float arithmetic; the promise
    # attacked is that it answers (an int beyond 1.8e308 used to raise OverflowError).
    reply = complete(stub, json.dumps({field: number}), "numbers", "closed")
    keywords = {e.keyword for e in reply.schema_errors}
    if "json" in keywords:
        # A number that reads as PII (5500572311393153.0 is a valid card number) is
        # inspected since round 12 and cannot be replaced inside a JSON number: the
        # redacted completion is no longer JSON, and on_invalid decides.
        assert reply.findings and "schema.redacted_invalid" in {
            v.rule_id for v in reply.violations}, reply
        keywords -= {"json"}
    assert keywords <= {"multipleOf", "maximum"}


def test_multiple_of_keeps_its_plain_answers(stub: pb_grpc.GuardrailStub) -> None:
    for document, invalid in (({"half": 10**308}, []), ({"half": 1e-320}, ["/half"]),
                              ({"three": 10**300 + 1}, ["/three"]),
                              ({"three": 3 * 10**300}, [])):
        reply = complete(stub, json.dumps(document), "numbers", "closed")
        assert [e.pointer for e in reply.schema_errors] == invalid


def test_schema_files_with_numbers_no_double_holds_are_refused(tmp_path: Path) -> None:
    for number in ("1e999", "1" * 400):
        (tmp_path / "s.json").write_text('{"multipleOf": ' + number + "}")
        with pytest.raises(PolicyError, match=r"s\.json: a number is too large"):
            SchemaStage(StructuredOutput(schemas={"s": OutputSchema(file="s.json")}),
                        tmp_path)


# --- uniqueItems -----------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize(("document", "unique"), [
    ([{"a": i, "b": [i, -i]} for i in range(20_000)], True),
    ([{"a": i} for i in range(20_000)] + [{"a": 19_999.0}], False),
    ([True, 1, False, 0, None, "1", [1], {"1": 1}], True),
    ([[1, {"b": [0]}], [1.0, {"b": [0.0]}]], False),
    ([{"a": 1, "b": 2}, {"b": 2, "a": 1}], False),
    ([{"a": True}, {"a": 1}], True),
])
def test_unique_items_is_exact_and_linear(
        stub: pb_grpc.GuardrailStub, document: list[Any], unique: bool) -> None:
    reply = complete(stub, json.dumps(document), "unique", "closed")
    assert errors(reply) == ([] if unique else [("", "uniqueItems")])


def test_the_jsonschema_patches_are_in_place_for_every_validator_class() -> None:
    from jsonschema import Draft7Validator, Draft202012Validator

    from sidecar.schemacompat import harden

    harden()
    # Even jsonschema's own classes (which it switches to for a built-in meta-schema)
    # now search with RE2 and compare unique items by hash.
    for cls in (Draft202012Validator, Draft7Validator):
        assert not cls({"pattern": "^(a|aa)+$"}).is_valid("a" * 80 + "b")
        assert not cls({"uniqueItems": True}).is_valid([{"a": i} for i in range(30_000)]
                                                       + [{"a": 0}])
