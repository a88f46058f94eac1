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
the policy's `ref_mirrors` (URL prefix → local directory).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy.model import OutputSchema, StructuredOutput
from sidecar.types import (
    Inspection,
    Prior,
    Projection,
    SchemaError,
    StageResult,
    Violation,
)

MAX_SCHEMA_FILE_BYTES = 4 * 1024 * 1024
MAX_ERRORS = 100
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
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError as InvalidSchema

        path = self._inside(spec.file)
        raw = self._read(path)
        schema = _json_document(raw, spec.file)
        declared = schema.get("$schema", "") if isinstance(schema, dict) else ""
        if isinstance(declared, str) and declared.rstrip("#") in OTHER_DRAFTS:
            raise ValueError(f"{spec.file}: only Draft 2020-12 schemas are supported "
                             f"($schema is {declared[:100]})")
        try:
            Draft202012Validator.check_schema(schema)
        except InvalidSchema as err:
            where = _pointer(err.absolute_path)
            raise ValueError(f"{spec.file}: not a valid Draft 2020-12 schema at "
                             f"'{where or '/'}': {err.message[:200]}") from None
        validator = Draft202012Validator(schema, registry=self._registry(path.parent))
        return _Schema(validator, spec.on_invalid), hashlib.sha256(raw).hexdigest()

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

    def _registry(self, base_dir: Path) -> Any:
        from referencing import Registry, Resource
        from referencing.exceptions import NoSuchResource
        from referencing.jsonschema import DRAFT202012

        mirrors = sorted(self.config.ref_mirrors.items(), key=lambda kv: -len(kv[0]))

        def retrieve(uri: str) -> Any:
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
            contents = _json_document(self._read(target), target.name)
            return Resource.from_contents(contents, default_specification=DRAFT202012)

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
            errors = self.validate(schema_id, parsed.data)
            if parsed.strings:
                result.projection = Projection(0, parsed.strings, schema_id,
                                               schema.on_invalid)
        if errors:
            result.schema_errors = errors
            result.violations.append(Violation(
                "schema.invalid", "schema",
                f"completion does not satisfy schema '{schema_id}' ({len(errors)} "
                f"error{'s' if len(errors) > 1 else ''}; on_invalid={schema.on_invalid})"))
            result.blocked = schema.on_invalid == "block"
        return result

    def validate(self, schema_id: str, data: Any) -> list[SchemaError]:
        validator = self.schemas[schema_id].validator
        errors = []
        for error in validator.iter_errors(data):
            errors.append(SchemaError(_pointer(error.absolute_path), str(error.validator),
                                      _describe(error), _pointer(error.absolute_schema_path)))
            if len(errors) >= MAX_ERRORS:
                break
        return sorted(errors, key=lambda e: (e.pointer, e.schema_path))

    def recheck(self, schema_id: str, text: str) -> list[SchemaError]:
        """Validate a redacted completion again (redaction must not break the contract)."""
        from sidecar import jsontext

        try:
            return self.validate(schema_id, jsontext.parse(text, self.config.max_depth).data)
        except jsontext.JsonProblem as problem:
            return [SchemaError("", "json", str(problem))]


def _json_document(raw: bytes, name: str) -> Any:
    from sidecar import jsontext

    try:
        return jsontext.parse(raw.decode("utf-8"), max_depth=512).data
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not UTF-8") from None
    except jsontext.JsonProblem as problem:
        raise ValueError(f"{name}: {problem}") from None


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _describe(error: Any) -> str:
    """The constraint that failed, from the schema; never the instance's value."""
    keyword = str(error.validator)
    value = error.validator_value
    shown = json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, dict) or len(shown) > 120:
        return f"fails '{keyword}'"
    return f"fails '{keyword}': {shown}"
