"""The policy file format, as pydantic models.

Every model forbids unknown fields: a typo such as `acton: block` must fail the load, not
be ignored and leave an entity unprotected. Fields for capabilities that are not built
yet are not accepted either, for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from sidecar.jsontext import MAX_DEPTH
from sidecar.regex import compile_re2

ENTITY_NAME = r"^[A-Z][A-Z0-9_]{0,63}$"
POLICY_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
Action = Literal["replace", "redact", "mask", "hash", "pseudonymize", "block", "allow"]
MAX_LIST = 10_000
# One list entry (a word, phrase, deny-list term, allowed value, context word).
MAX_ENTRY_CHARS = 256
Entry = Annotated[str, StringConstraints(max_length=MAX_ENTRY_CHARS)]


def _re2_patterns(patterns: list[str]) -> list[str]:
    """Every pattern compiles with RE2 (linear time), or a message naming which does not.

    RE2's own message quotes the offending part of the pattern; only its kind is kept
    ("missing )", "invalid escape sequence"), since errors never echo file content."""
    for index, pattern in enumerate(patterns):
        try:
            compile_re2(pattern)
        except ValueError as err:
            reason = str(err)
            kind = re.match(r"not a valid RE2 pattern \((.+?): ", reason)
            if kind:
                reason = (f"not a valid RE2 pattern ({kind.group(1)}); RE2 has no "
                          "lookaround or backreferences")
            raise ValueError(f"patterns[{index}]: {reason}") from None
    return patterns


def _view_patterns(patterns: list[str]) -> list[str]:
    """Content patterns that can match the view they run on (sidecar.policy.viewable):
    one that never can would leave the rule protecting nothing while looking fine. An
    empty pattern matches everywhere, never what its author meant."""
    from sidecar.policy.viewable import find_dead, why_dead

    for index, pattern in enumerate(patterns):
        if not pattern:
            raise ValueError(f"patterns[{index}]: empty pattern")
        dead = find_dead(pattern)
        if dead is not None:
            position, char = dead
            raise ValueError(
                f"patterns[{index}]: can never match the clean view of the text (lower "
                "case, accents dropped, look-alikes folded to Latin, Hangul as jamo): "
                f"character {position + 1} is {why_dead(char)}")
    return patterns


def _where(bad: list[int]) -> str:
    """Which entries are wrong, by position: errors never quote what a file says."""
    shown = ", ".join(f"[{index}]" for index in bad[:5])
    return shown + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")


def _number(value: object) -> object:
    """Numbers are written as numbers. YAML's `true` would otherwise be taken as 1
    (`min_score: true` switching an entity off) and `"1"` as 1: both are someone's
    mistake, and a mistake in a threshold silently weakens the policy."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number (written without quotes; true/false are not "
                         "numbers)")
    return value


Float = Annotated[float, BeforeValidator(_number)]
Int = Annotated[int, BeforeValidator(_number)]


# Tenant and app globs: matched case-insensitively (sidecar.policy.matching); blanks and
# control characters would only ever make a rule silently match nothing.
GLOB = r"^[^\s\x00-\x1f\x7f]{1,128}$"
Glob = Annotated[str, StringConstraints(pattern=GLOB)]
# Residency attribute values are words people write (`free trial`, `cc 1001`): blanks
# inside are fine (they fold to one space), control characters are not.
AttributeGlob = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,128}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityRule(_Strict):
    """What to do with one entity type."""

    action: Action
    # Findings scoring below this are ignored; defaults to `pii.min_score`.
    min_score: Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_number)] | None = None
    # replace: the text put in place of the value (default "<ENTITY_TYPE>").
    replacement: str | None = Field(default=None, max_length=256)
    # mask: how many trailing characters stay visible, and the masking character.
    keep_last: Int = Field(default=4, ge=0, le=64)
    masking_char: str = Field(default="*", min_length=1, max_length=1)
    # Trial run: findings are reported (shadow: true) but not acted on; the response's
    # would_block / would_modify say what enforcing would have done.
    shadow: bool = False

    @model_validator(mode="after")
    def _options_fit_action(self) -> EntityRule:
        if "replacement" in self.model_fields_set and self.action != "replace":
            raise ValueError(f"'replacement' only applies to action 'replace', not '{self.action}'")
        for option in ("keep_last", "masking_char"):
            if option in self.model_fields_set and self.action != "mask":
                raise ValueError(f"'{option}' only applies to action 'mask', not '{self.action}'")
        return self


class CustomRecognizer(_Strict):
    """A policy-defined detector: RE2 patterns and/or a deny-list of literal terms."""

    entity: str = Field(pattern=ENTITY_NAME)
    patterns: list[str] = Field(default_factory=list, max_length=100)
    deny_list: list[Entry] = Field(default_factory=list, max_length=MAX_LIST)
    # Words near a match that raise its score (as Presidio's context enhancement does).
    context: list[Entry] = Field(default_factory=list, max_length=100)
    score: Float = Field(default=0.6, gt=0.0, le=1.0)

    @field_validator("patterns")
    @classmethod
    def _patterns_are_re2(cls, patterns: list[str]) -> list[str]:
        return _re2_patterns(patterns)

    @field_validator("deny_list", "context")
    @classmethod
    def _no_blank_terms(cls, terms: list[str]) -> list[str]:
        if any(not term.strip() for term in terms):
            raise ValueError("terms must not be empty or blank")
        return terms

    @model_validator(mode="after")
    def _detects_something(self) -> CustomRecognizer:
        if not self.patterns and not self.deny_list:
            raise ValueError("a recognizer needs at least one of 'patterns' or 'deny_list'")
        return self


class Pseudonyms(_Strict):
    """The `pseudonymize` action: stable placeholders per conversation, kept in a vault."""

    # Put the original values back into completions of the same conversation.
    restore: bool = False
    # How long a conversation's mapping lives after its last new value (then forgotten).
    ttl_seconds: Int = Field(default=86400, ge=1, le=90 * 86400)


class Precision(_Strict):
    """Rules that drop findings which are almost never personal data (sidecar.pii.precision)."""

    # Rule ids to switch off: ner_shape, ner_stop_words, ip_not_host, phone_shape,
    # date_vague.
    disable: list[Literal["ner_shape", "ner_stop_words", "ip_not_host", "phone_shape",
                          "date_vague"]] = Field(default_factory=list, max_length=5)
    # Words never taken for a person or a place (added to the built-in stop-list) ...
    not_names: list[Entry] = Field(default_factory=list, max_length=MAX_LIST)
    # ... and words the stop-list must not drop ("Will", if your users are called Will).
    names: list[Entry] = Field(default_factory=list, max_length=MAX_LIST)


class PiiConfig(_Strict):
    language: Literal["en"] = "en"
    # Default minimum score for every entity that does not set its own.
    min_score: Float = Field(default=0.4, ge=0.0, le=1.0)
    entities: dict[str, EntityRule] = Field(default_factory=dict, max_length=500)
    recognizers: list[CustomRecognizer] = Field(default_factory=list, max_length=100)
    # Exact values that are never treated as PII (e.g. the company's support address).
    allow: list[Entry] = Field(default_factory=list, max_length=MAX_LIST)
    pseudonyms: Pseudonyms = Field(default_factory=Pseudonyms)
    precision: Precision = Field(default_factory=Precision)

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, entities: dict[str, EntityRule]) -> dict[str, EntityRule]:
        names = list(entities)
        bad = [i for i, name in enumerate(names) if not re.fullmatch(ENTITY_NAME, name)]
        if bad:
            raise ValueError(f"entity names must be UPPER_SNAKE_CASE (the entities at "
                             f"positions {_where(bad)} are not)")
        return entities


RULE_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
Direction = Literal["prompt", "completion"]
DIRECTIONS: tuple[Direction, ...] = ("prompt", "completion")
# Security teams paste in long lists; matching cost does not grow with their size, but
# compiling them does (about 15 µs a term), so lists are bounded here and all the lists
# of a directory together by sidecar.policy.loader.MAX_TOTAL_NODES.
MAX_TERMS = 100_000


class ContentRule(_Strict):
    """One blocked-content rule: word/phrase lists, RE2 patterns and/or a builtin."""

    id: str = Field(pattern=RULE_ID)
    # What kind of content this is (reported in violations); builtins default to their name.
    category: str | None = Field(default=None, pattern=RULE_ID)
    action: Literal["block", "redact", "flag"]
    on: list[Direction] = Field(default_factory=lambda: list(DIRECTIONS), min_length=1)
    # Whole-word, case-insensitive, matched on the normalised view (see README).
    words: list[Entry] = Field(default_factory=list, max_length=MAX_TERMS)
    phrases: list[Entry] = Field(default_factory=list, max_length=MAX_TERMS)
    # RE2 only; matched on the normalised (lower-case) view.
    patterns: list[str] = Field(default_factory=list, max_length=1000)
    builtin: Literal["secrets", "prompt_injection"] | None = None
    # redact: what replaces the matched characters.
    replacement: str | None = Field(default=None, max_length=256)
    # Trial run: matches are reported (shadow: true), not acted on (see would_block).
    shadow: bool = False

    @field_validator("words")
    @classmethod
    def _single_words(cls, words: list[str]) -> list[str]:
        for index, word in enumerate(words):
            if not word.strip():
                raise ValueError(f"words[{index}]: empty or blank")
            if len(word.split()) > 1:
                raise ValueError(f"words[{index}]: contains a space; put it under 'phrases'")
        return words

    @field_validator("phrases")
    @classmethod
    def _no_blank_phrases(cls, phrases: list[str]) -> list[str]:
        for index, phrase in enumerate(phrases):
            if not phrase.strip():
                raise ValueError(f"phrases[{index}]: empty or blank")
        return phrases

    @field_validator("patterns")
    @classmethod
    def _patterns_are_re2(cls, patterns: list[str]) -> list[str]:
        _re2_patterns(patterns)
        return _view_patterns(patterns)

    @model_validator(mode="after")
    def _complete(self) -> ContentRule:
        if not (self.words or self.phrases or self.patterns or self.builtin):
            raise ValueError("a rule needs at least one of 'words', 'phrases', 'patterns' "
                             "or 'builtin'")
        if self.category is None and self.builtin is None:
            raise ValueError("'category' is required (only builtin rules default it)")
        if self.replacement is not None and self.action != "redact":
            raise ValueError(f"'replacement' only applies to action 'redact', not "
                             f"'{self.action}'")
        return self

    @property
    def kind(self) -> str:
        return self.category or self.builtin or ""


class ContentConfig(_Strict):
    rules: list[ContentRule] = Field(default_factory=list, max_length=1000)

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[ContentRule]) -> list[ContentRule]:
        seen: set[str] = set()
        for index, rule in enumerate(rules):
            if rule.id in seen:
                raise ValueError(f"rules[{index}].id: '{rule.id}' is used by another rule")
            seen.add(rule.id)
        return rules


class OutputSchema(_Strict):
    """A JSON Schema (Draft 2020-12) that completions can be asked to satisfy."""

    # Path relative to the policy file, e.g. schemas/ticket.schema.json.
    file: str = Field(min_length=1, max_length=512)

    @field_validator("file")
    @classmethod
    def _inside(cls, file: str) -> str:
        return _relative_path(file)
    # What an invalid completion gets: refused, or reported and let through.
    on_invalid: Literal["block", "flag"] = "block"


class StructuredOutput(_Strict):
    # Schema id (what apps send as `output_schema`) → schema file.
    schemas: dict[str, OutputSchema] = Field(default_factory=dict, max_length=1000)
    # $ref URLs are never fetched: a prefix listed here is read from a local directory
    # (relative to the policy file) instead, e.g. "https://schemas.acme.example/": "schemas/".
    ref_mirrors: dict[str, str] = Field(default_factory=dict, max_length=100)
    # Deeper JSON is invalid output. A policy may lower the limit, never raise it: the
    # parser and the validator recurse, and MAX_DEPTH (128) is what they can take.
    max_depth: Int = Field(default=MAX_DEPTH, ge=1, le=MAX_DEPTH)

    @field_validator("schemas")
    @classmethod
    def _schema_ids(cls, schemas: dict[str, OutputSchema]) -> dict[str, OutputSchema]:
        names = list(schemas)
        bad = [i for i, name in enumerate(names) if not re.fullmatch(RULE_ID, name)]
        if bad:
            raise ValueError(f"schema ids must be lower-case words (the schemas at "
                             f"positions {_where(bad)} are not)")
        return schemas

    @field_validator("ref_mirrors")
    @classmethod
    def _mirrors_inside(cls, mirrors: dict[str, str]) -> dict[str, str]:
        for directory in mirrors.values():
            _relative_path(directory)
        return mirrors


def _relative_path(path: str) -> str:
    """A path inside the policy directory, by its look alone (the schema stage checks
    where it resolves, and reads only the validated copy): relative, no `..`."""
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or ".." in parts or "\0" in path:
        raise ValueError("must be a path inside the policy directory (relative, "
                         "without '..')")
    return path


NAME = r"^[A-Za-z0-9*?][A-Za-z0-9_.*?-]{0,63}$"


class ResidencyCondition(_Strict):
    """Facts a residency rule requires; every listed fact must hold (globs allowed).

    Tenants, apps, regions and attributes (names and values) match case-insensitively;
    region globs are plain ASCII region names (`eu-*`, `eu-west-1`)."""

    tenants: list[Glob] = Field(default_factory=list, max_length=1000)
    apps: list[Glob] = Field(default_factory=list, max_length=1000)
    user_regions: list[Annotated[str, StringConstraints(pattern=NAME)]] = Field(
        default_factory=list, max_length=1000)
    # Any of these data classes found in the request (see `data_classes`).
    data_classes: list[str] = Field(default_factory=list, max_length=100)
    # Request attribute → accepted values (globs). Values are words people write
    # (`free trial`, `cc 1001`): blanks inside fold to one space on both sides.
    attributes: dict[Glob, list[AttributeGlob]] = Field(default_factory=dict, max_length=64)

    @field_validator("attributes")
    @classmethod
    def _attribute_values(cls, attributes: dict[str, list[str]]) -> dict[str, list[str]]:
        """A blank value, or one holding what the residency stage refuses in a request
        (an invisible or control character...), could never be met: the rule would be
        dead while looking fine."""
        from sidecar.policy.matching import fold_words
        from sidecar.stages.residency import disguised_text

        for position, values in enumerate(attributes.values()):
            bad = [i for i, value in enumerate(values)
                   if not fold_words(value) or disguised_text(fold_words(value))]
            if bad:
                raise ValueError(
                    f"attributes (the attribute at position [{position}]): the values at "
                    f"positions {_where(bad)} are blank or hold an invisible character, a "
                    "combining mark on nothing or a look-alike letter of another script "
                    "inside a word: no request could ever match them")
        return attributes


class ResidencyRule(_Strict):
    id: str = Field(pattern=RULE_ID)
    # No `when`: the default rule, which must come last.
    when: ResidencyCondition | None = None
    residency: str = Field(pattern=NAME)
    # Regions the request may be processed in (globs: "eu-*", "*").
    allowed_regions: list[str] = Field(min_length=1, max_length=100)
    # Trial run: a disallowed target region is reported, not blocked.
    shadow: bool = False

    @field_validator("allowed_regions")
    @classmethod
    def _region_names(cls, regions: list[str]) -> list[str]:
        bad = [i for i, r in enumerate(regions) if not re.fullmatch(NAME, r)]
        if bad:
            raise ValueError(f"region names are letters, digits and - _ . * ? (the regions "
                             f"at positions {_where(bad)} are not)")
        return regions


class ResidencyConfig(_Strict):
    # Entity type (PERSON) or content category (secrets) → data class. Merged over the
    # built-in defaults (sidecar.stages.residency.DEFAULT_DATA_CLASSES).
    data_classes: dict[str, str] = Field(default_factory=dict, max_length=1000)
    # First match wins; the last rule has no `when` and always matches.
    rules: list[ResidencyRule] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _default_rule_last(self) -> ResidencyConfig:
        if not self.rules:
            return self
        defaults = [i for i, rule in enumerate(self.rules) if rule.when is None]
        if not defaults or defaults[0] != len(self.rules) - 1:
            raise ValueError("rules: exactly one rule has no 'when' (the default) and it "
                             "comes last, so every request gets tags")
        ids = [rule.id for rule in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError("rules: rule ids must be unique")
        for position, value in enumerate(self.data_classes.values()):
            if not re.fullmatch(RULE_ID, value):
                raise ValueError(f"data_classes: class names are lower-case words (the "
                                 f"class at position [{position}] is not)")
        return self


class RetentionDays(_Strict):
    """How long audit records are kept, by decision (days)."""

    allow: Int = Field(default=30, ge=1, le=36500)
    modify: Int = Field(default=90, ge=1, le=36500)
    block: Int = Field(default=365, ge=1, le=36500)


class AuditConfig(_Strict):
    # What the encrypted payload holds: nothing, the text as it left the sidecar
    # (redacted), or the text as the app sent it. Metadata is recorded in every case.
    payload: Literal["none", "redacted", "original"] = "redacted"
    retention_days: RetentionDays = Field(default_factory=RetentionDays)


class Match(_Strict):
    """Which requests a policy applies to. Shell-style globs: `support-*`. Case does not
    matter (`ACME` is `acme`; see sidecar.policy.matching)."""

    tenants: list[Glob] = Field(default_factory=lambda: ["*"], min_length=1, max_length=1000)
    apps: list[Glob] = Field(default_factory=lambda: ["*"], min_length=1, max_length=1000)


class OnBlock(_Strict):
    """How the HTTP gateway answers what this policy blocks (gRPC callers always get the
    verdict itself). `error`: HTTP 400 with a `guardrail_blocked` error object, or a final
    error event mid-stream. `refusal`: a normal chat completion (streamed or not) whose
    text is `refusal_text`, finish_reason `content_filter`, for chat UIs that show any
    error as a crash; the audit record says BLOCK either way."""

    respond: Literal["error", "refusal"] = "error"
    refusal_text: str = Field(default="Sorry, I can't help with that.", min_length=1,
                              max_length=2000)


class GatewayConfig(_Strict):
    """What the HTTP gateway may forward without reading it. By default a Responses API
    item or content part it cannot inspect (an image, audio, a file, a generated image,
    a screenshot, or an item type it does not know) is refused with HTTP 400 (or, in an
    upstream's answer, 502): never passed on blind. Types listed here pass: their
    blobs uninspected, every other string in them still inspected as text."""

    pass_items: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("pass_items")
    @classmethod
    def _item_types(cls, value: list[str]) -> list[str]:
        for kind in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", kind):
                raise ValueError(f"pass_items: {kind[:80]!r} is not an item or part type "
                                 "(lower case letters, digits and _)")
        return value


class Policy(_Strict):
    name: str = Field(pattern=POLICY_NAME)
    description: str = ""
    # Always computed from the content; accepted so files can say so explicitly.
    revision: Literal["auto"] = "auto"
    # Inherit everything but name, description and match from this policy (by name);
    # mappings merge key by key, lists are replaced whole.
    extends: str | None = Field(default=None, pattern=POLICY_NAME)
    # A base for `extends` only: never selected for a request, needs no match.
    abstract: bool = False
    # No `match`: this is the default policy, used when no other policy matches.
    match: Match | None = None
    # shadow: every stage runs and reports what it would do (would_block, would_modify),
    # but the decision is always ALLOW and the text untouched. For trials on live traffic.
    mode: Literal["enforce", "shadow"] = "enforce"
    # What to do when a stage fails: fail closed (block) or open (allow, text untouched).
    on_error: Literal["block", "allow"] = "block"
    # How the HTTP gateway answers a block: an error (default) or a refusal text.
    on_block: OnBlock = Field(default_factory=OnBlock)
    # What the HTTP gateway may forward uninspected (see GatewayConfig).
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    # Runs before PII: a block here means the NER model never sees the request.
    content: ContentConfig = Field(default_factory=ContentConfig)
    structured_output: StructuredOutput = Field(default_factory=StructuredOutput)
    residency: ResidencyConfig = Field(default_factory=ResidencyConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)

    @property
    def is_default(self) -> bool:
        return self.match is None

    def revision_hash(self) -> str:
        """sha256 of the canonical content: formatting and comments do not change it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                               separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()
