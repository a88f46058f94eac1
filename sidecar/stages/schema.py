"""Structured-output stage: a completion must be JSON that satisfies a JSON Schema.

Runs first for completions that name an `output_schema`. Every error is reported with
the JSON Pointer of the failing value and the failing keyword; the policy's `on_invalid`
decides between block and flag. The string values of the document are then handed to
the content and PII stages as separate texts (a `Projection`), so they inspect values,
not JSON syntax, and their redactions keep the document valid JSON; the redacted
document is validated again.

Schemas are read and checked when the policy loads: a schema that is not itself valid
Draft 2020-12 fails the load, not a request. `$ref`s are never fetched from the network:
relative references resolve to files next to the schema, and absolute URLs only through
the policy's `ref_mirrors` (URL prefix → local directory). Every reference is resolved
at load, so a request never reads a file, and the files it reaches are part of the
revision.

A completion is hostile input, so validating it must cost time linear in its size
whatever the schema says: every `pattern` and `patternProperties` regex (also where
`additionalProperties` and `unevaluatedProperties` use them) runs on RE2, and one RE2
cannot compile (lookaround, backreferences) fails the load with the file and JSON
Pointer of the pattern; `format` is an annotation only (no format is asserted, so no
format checker runs); every keyword evaluation counts against a budget proportional to
the document's size (sidecar.schemacompat). A document that exhausts the budget, or
that a schema recurses over too deeply for Python's stack, gets a `limit` error: it is
invalid, never skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy.model import OutputSchema, StructuredOutput
from sidecar.regex import MAX_PATTERN_LENGTH
from sidecar.types import (
    Inspection,
    Prior,
    Projection,
    SchemaError,
    StageResult,
    Violation,
)
from sidecar.wellformed import well_formed

MAX_SCHEMA_FILE_BYTES = 4 * 1024 * 1024
MAX_ERRORS = 100
# Keyword evaluations allowed per document: BUDGET_BASE + BUDGET_PER_CHAR per character.
# Ordinary schemas spend well under one per character (an array of 20,000 objects with
# four constraints: 0.24); a schema that re-validates subtrees for each branch (`anyOf`
# of recursive branches with `unevaluatedProperties`) would spend 2^depth. One costs
# 10-14 µs here, so the base is ~0.6 s and a 1 MiB document's whole budget ~25 s of one
# core: about what the PII stage spends on 1 MiB of text.
BUDGET_BASE = 50_000
BUDGET_PER_CHAR = 2
# Applicators whose values are subschemas: what the load-time walk descends into.
_SUBSCHEMA = ("additionalProperties", "propertyNames", "items", "contains", "not", "if",
              "then", "else", "unevaluatedItems", "unevaluatedProperties", "contentSchema")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs",
                   "definitions")
# Schemas are always validated as Draft 2020-12; one that declares an older draft would
# mean something else there, so it is refused. (A custom meta-schema built on 2020-12
# is accepted.)
OTHER_DRAFTS = frozenset({
    "http://json-schema.org/draft-03/schema", "http://json-schema.org/draft-04/schema",
    "http://json-schema.org/draft-06/schema", "http://json-schema.org/draft-07/schema",
    "https://json-schema.org/draft/2019-09/schema"})


@dataclass(frozen=True)
class _Schema:
    validator: Any  # jsonschema.Draft202012Validator
    on_invalid: str


class SchemaStage:
    name = "schema"

    def __init__(self, config: StructuredOutput, policy_dir: Path) -> None:
        self.config = config
        self.policy_dir = policy_dir.resolve()
        self.schemas: dict[str, _Schema] = {}
        digests: dict[str, str] = {}
        issues: list[PolicyIssue] = []
        for schema_id, spec in config.schemas.items():
            try:
                self.schemas[schema_id], digests[schema_id] = self._load(spec)
            except ValueError as err:
                issues.append(PolicyIssue("", f"structured_output.schemas.{schema_id}.file",
                                          str(err)))
        for prefix, directory in config.ref_mirrors.items():
            if not (self.policy_dir / directory).resolve().is_dir():
                issues.append(PolicyIssue("", f"structured_output.ref_mirrors.{prefix}",
                                          f"'{directory}' is not a directory"))
        if issues:
            raise PolicyError(issues)
        # Schema files are part of what the policy decides: their content is in the revision.
        self.digest = hashlib.sha256(
            json.dumps(digests, sort_keys=True).encode()).hexdigest() if digests else ""

    @property
    def active(self) -> bool:
        return bool(self.schemas)

    def _load(self, spec: OutputSchema) -> tuple[_Schema, str]:
        from jsonschema_specifications import REGISTRY as SPECIFICATIONS  # type: ignore[import-untyped]
        from referencing.jsonschema import DRAFT202012

        from sidecar.schemacompat import bounded_validator

        path = self._inside(spec.file)
        raw = self._read(path)
        schema = _json_document(raw, spec.file)
        _check_document(schema, spec.file)
        documents = _Documents()
        documents.own(schema, spec.file)
        registry = self._registry(path.parent, documents)
        root = SPECIFICATIONS.combine(registry).resolver_with_root(
            DRAFT202012.create_resource(schema))
        _walk(schema, root, documents)
        documents.frozen = True  # requests never read a file
        validator = bounded_validator()(schema, registry=registry)
        digest = hashlib.sha256(raw)
        for uri, content in sorted(documents.raw.items()):
            digest.update(f"\0{uri}\0".encode() + hashlib.sha256(content).digest())
        return _Schema(validator, spec.on_invalid), digest.hexdigest()

    def _inside(self, relative: str) -> Path:
        path = (self.policy_dir / relative).resolve()
        if not path.is_relative_to(self.policy_dir):
            raise ValueError(f"'{relative}' is outside the policy directory")
        return path

    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            if path.stat().st_size > MAX_SCHEMA_FILE_BYTES:
                raise ValueError(f"{path.name}: larger than {MAX_SCHEMA_FILE_BYTES} bytes")
            return path.read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read '{path.name}': {err.strerror}") from None

    def _registry(self, base_dir: Path, documents: _Documents) -> Any:
        from referencing import Registry, Resource
        from referencing.exceptions import NoSuchResource
        from referencing.jsonschema import DRAFT202012

        mirrors = sorted(self.config.ref_mirrors.items(), key=lambda kv: -len(kv[0]))

        def retrieve(uri: str) -> Any:
            loaded = documents.resources.get(uri)
            if loaded is not None:
                return loaded
            if documents.frozen:  # every reference was resolved at load
                raise NoSuchResource(ref=uri)  # type: ignore[call-arg]
            target: Path | None = None
            for prefix, directory in mirrors:
                if uri.startswith(prefix):
                    target = (self.policy_dir / directory / uri[len(prefix):]).resolve()
                    break
            else:
                if "://" not in uri and not uri.startswith("urn:"):
                    target = (base_dir / uri).resolve()
            if target is None or not target.is_relative_to(self.policy_dir) \
                    or not target.is_file():
                raise NoSuchResource(ref=uri)  # type: ignore[call-arg]
            name = str(target.relative_to(self.policy_dir))
            raw = self._read(target)
            contents = _json_document(raw, name)
            _check_document(contents, name)
            documents.own(contents, name)
            resource = Resource.from_contents(contents, default_specification=DRAFT202012)
            documents.resources[uri] = resource
            documents.raw[uri] = raw
            return resource

        return Registry(retrieve=retrieve)  # type: ignore[call-arg]

    def ids(self) -> list[str]:
        return sorted(self.schemas)

    def run(self, inspection: Inspection, prior: Prior = ()) -> StageResult:
        from sidecar import jsontext

        result = StageResult()
        schema_id = inspection.output_schema
        if not schema_id:
            return result
        schema = self.schemas[schema_id]
        text = inspection.messages[0].content
        try:
            parsed = jsontext.parse(text, self.config.max_depth)
        except jsontext.JsonProblem as problem:
            errors = [SchemaError("", "json", str(problem))]
        else:
            errors = self.validate(schema_id, parsed.data, len(text))
            # The string values, decoded, long numbers (a card number as a JSON number),
            # and then the rest of the completion: a caller naming a schema must not
            # switch inspection off for what lies outside the values.
            outside = jsontext.outside_strings(text, (*parsed.strings, *parsed.numbers))
            strings = (*parsed.strings, *jsontext.inspected_numbers(parsed),
                       *((outside,) if jsontext.worth_inspecting(outside) else ()))
            result.projection = Projection(0, strings, schema_id, schema.on_invalid)
        if errors:
            result.schema_errors = errors
            result.violations.append(Violation(
                "schema.invalid", "schema",
                f"completion does not satisfy schema '{schema_id}' ({len(errors)} "
                f"error{'s' if len(errors) > 1 else ''}; on_invalid={schema.on_invalid})"))
            result.blocked = schema.on_invalid == "block"
        return result

    def validate(self, schema_id: str, data: Any, size: int) -> list[SchemaError]:
        """The document's errors (at most MAX_ERRORS), in work bounded by its `size`."""
        from sidecar.schemacompat import BudgetExceeded, errors_within

        validator = self.schemas[schema_id].validator
        budget = BUDGET_BASE + BUDGET_PER_CHAR * size
        try:
            found = errors_within(validator, data, budget, MAX_ERRORS)
        except BudgetExceeded:
            return [SchemaError("", "limit", f"validation needs more than {budget} keyword "
                                "evaluations for a document of this size (the schema "
                                "re-checks parts of it for each branch): treated as invalid")]
        except RecursionError:
            # Within MAX_DEPTH only a schema whose $refs chain many times per level of the
            # document gets here: Python's stack, not the document, ran out.
            return [SchemaError("", "limit", "the schema recurses too deeply over this "
                                "document for it to be validated: treated as invalid")]
        errors = [SchemaError(_pointer(error.absolute_path), str(error.validator),
                              _describe(error), _pointer(error.absolute_schema_path))
                  for error in found]
        return sorted(errors, key=lambda e: (e.pointer, e.schema_path))

    def recheck(self, schema_id: str, text: str) -> list[SchemaError]:
        """Validate a redacted completion again (redaction must not break the contract)."""
        from sidecar import jsontext

        try:
            parsed = jsontext.parse(text, self.config.max_depth)
        except jsontext.JsonProblem as problem:
            return [SchemaError("", "json", str(problem))]
        return self.validate(schema_id, parsed.data, len(text))


class _Documents:
    """The schema documents one schema id reaches: who owns each JSON object, and where.

    The load-time walk uses it to name the file and JSON Pointer of what it refuses, and
    to tell the policy's documents (which it checks and may edit) from jsonschema's
    built-in meta-schemas (fixed, shared, never edited).
    """

    def __init__(self) -> None:
        self.where: dict[int, tuple[str, str]] = {}  # id(object) -> (file, JSON Pointer)
        self.keep: list[Any] = []  # the documents themselves, so ids stay theirs
        self.resources: dict[str, Any] = {}  # retrieved URI -> referencing.Resource
        self.raw: dict[str, bytes] = {}  # retrieved URI -> file content (for the digest)
        self.frozen = False

    def own(self, document: Any, name: str) -> None:
        self.keep.append(document)
        stack: list[tuple[Any, str]] = [(document, "")]
        while stack:  # iterative: a document may nest MAX_DEPTH levels
            node, pointer = stack.pop()
            if isinstance(node, dict):
                self.where[id(node)] = (name, pointer)
                stack.extend((value, f"{pointer}/{_escape(key)}") for key, value in node.items())
            elif isinstance(node, list):
                self.where[id(node)] = (name, pointer)
                stack.extend((value, f"{pointer}/{index}") for index, value in enumerate(node))


def _check_document(document: Any, name: str) -> None:
    """A schema file (or one it references) must be Draft 2020-12 and valid as such."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError as InvalidSchema

    declared = document.get("$schema", "") if isinstance(document, dict) else ""
    if isinstance(declared, str) and declared.rstrip("#") in OTHER_DRAFTS:
        raise ValueError(f"{name}: only Draft 2020-12 schemas are supported "
                         f"($schema is {declared[:100]})")
    try:
        # No format checker: the meta-schema's only format that matters is `regex`,
        # which means ECMA-262 there and Python's `re` in jsonschema; _walk checks every
        # pattern with RE2 instead, the engine that will run it.
        Draft202012Validator.check_schema(document, format_checker=None)
    except InvalidSchema as err:
        where = _pointer(err.absolute_path)
        raise ValueError(f"{name}: not a valid Draft 2020-12 schema at "
                         f"'{where or '/'}': {err.message[:200]}") from None
    except RecursionError:
        raise ValueError(f"{name}: nests too deeply to be checked against the "
                         "Draft 2020-12 meta-schema") from None


def _walk(root: Any, resolver: Any, documents: _Documents) -> None:
    """Check, at load, everything the validator will evaluate, reached as it reaches it.

    Follows every subschema and every `$ref` / `$dynamicRef` (retrieving referenced
    files now, so requests never do): each pattern must compile with RE2, every
    reference must resolve, no embedded resource may declare another draft. `$schema`
    is removed from the policy's schema objects once checked: jsonschema switches to its
    stock validator class for a subschema that declares a known meta-schema, and that
    class has neither the RE2 patterns' guarantee nor the work budget.
    """
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    stack: list[tuple[Any, Any]] = [(root, resolver)]
    seen: set[int] = set()
    while stack:
        schema, resolver = stack.pop()
        if not isinstance(schema, dict) or id(schema) in seen:
            continue
        seen.add(id(schema))
        place = documents.where.get(id(schema))
        if place is None:  # a built-in meta-schema: fixed and trusted
            continue
        name, pointer = place
        resolver = resolver.in_subresource(DRAFT202012.create_resource(schema))
        declared = schema.pop("$schema", None)
        if isinstance(declared, str) and declared.rstrip("#") in OTHER_DRAFTS:
            raise ValueError(f"{name}: only Draft 2020-12 schemas are supported ($schema "
                             f"at '{pointer or '/'}' is {declared[:100]})")
        if isinstance(schema.get("pattern"), str):
            _check_pattern(schema["pattern"], name, f"{pointer}/pattern")
        patterns = schema.get("patternProperties")
        if isinstance(patterns, dict):
            for key in patterns:
                _check_pattern(key, name, f"{pointer}/patternProperties/{_escape(key)}")
            if len(patterns) > 1:  # additionalProperties runs them as one alternation
                _check_pattern("|".join(patterns), name, f"{pointer}/patternProperties",
                               joined=True)
        for keyword in ("$ref", "$dynamicRef"):
            reference = schema.get(keyword)
            if not isinstance(reference, str):
                continue
            try:
                resolved = resolver.lookup(reference)
            except Unresolvable as err:
                cause = err.__cause__
                if isinstance(cause, ValueError):  # a referenced file we refused
                    raise ValueError(str(cause)) from None
                raise ValueError(f"{name}: cannot resolve the {keyword} at "
                                 f"'{pointer}/{keyword}' (only files in the policy "
                                 "directory and ref_mirrors are read)") from None
            stack.append((resolved.contents, resolved.resolver))
        stack.extend((schema[keyword], resolver) for keyword in _SUBSCHEMA
                     if keyword in schema)
        for keyword in _SUBSCHEMA_LISTS:
            if isinstance(schema.get(keyword), list):
                stack.extend((item, resolver) for item in schema[keyword])
        for keyword in _SUBSCHEMA_MAPS:
            if isinstance(schema.get(keyword), dict):
                stack.extend((item, resolver) for item in schema[keyword].values())


def _check_pattern(pattern: str, name: str, pointer: str, joined: bool = False) -> None:
    from sidecar.regex import compile_re2

    try:
        compile_re2(pattern, max_length=1 << 24 if joined else MAX_PATTERN_LENGTH)
    except ValueError as err:
        what = "the patternProperties together" if joined else "the pattern"
        raise ValueError(f"{name}: {what} at '{pointer}' cannot run in linear time: "
                         f"{err} (schema patterns run on RE2)") from None


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _json_document(raw: bytes, name: str) -> Any:
    from sidecar import jsontext

    try:
        return jsontext.parse(raw.decode("utf-8"), jsontext.MAX_DEPTH).data
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not UTF-8") from None
    except jsontext.JsonProblem as problem:
        raise ValueError(f"{name}: {problem}") from None


def _pointer(parts: Any) -> str:
    # Keys are the model's: a lone surrogate in one could not be sent back (UTF-8).
    return well_formed("".join("/" + _escape(str(p)) for p in parts))


def _describe(error: Any) -> str:
    """The constraint that failed, from the schema; never the instance's value."""
    keyword = str(error.validator)
    value = error.validator_value
    shown = json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, dict) or len(shown) > 120:
        return f"fails '{keyword}'"
    return well_formed(f"fails '{keyword}': {shown}")
