"""PII stage: Presidio finds sensitive data, the policy decides what happens to it.

Per entity type the policy picks an action: replace (`<EMAIL_ADDRESS>`), redact (remove),
mask (keep the last N characters), hash (keyed HMAC-SHA256), pseudonymize (a stable
placeholder per conversation, `<PERSON_1>`), block (the whole request), or allow
(report only). Compiled once per policy revision; the spaCy model is loaded only when
the policy asks for an NER entity, and then with the `ner` component alone.

Pseudonyms depend on a conversation's history, which lives in the server process: this
stage marks those edits pending (and, with `pseudonyms.restore`, marks the placeholders
it sees in a completion), and sidecar.pseudonyms finishes them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sidecar import abandon
from sidecar.errors import PolicyError, PolicyIssue
from sidecar.pii.disguise import undisguise
from sidecar.policy.model import EntityRule, PiiConfig
from sidecar.types import (
    Direction,
    Edit,
    Explanation,
    Finding,
    Inspection,
    Prior,
    StageResources,
    StageResult,
    Violation,
)
from sidecar.wellformed import well_formed

PROTECTIVE = frozenset({"replace", "redact", "mask", "hash", "pseudonymize", "block"})
# What the vault issues: <ENTITY_TYPE_N>. Anything of this shape in a completion is a
# candidate; only placeholders issued in the conversation are ever restored.
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]{0,63})_([1-9][0-9]{0,8})>")
# (entity type, start, end, score): one analyzer finding.
Found = tuple[str, int, int, float]


class PiiStage:
    name = "pii"
    # Its result for a message depends on that message alone (sidecar.cache).
    per_message = True

    def __init__(self, config: PiiConfig, resources: StageResources) -> None:
        from sidecar.pii.entities import NER_ENTITIES, known_entities

        self.config = config
        self.resources = resources
        custom = {spec.entity for spec in config.recognizers}
        known = known_entities(config.language) | custom
        unknown = sorted(set(config.entities) - known)
        if unknown:
            raise PolicyError([
                PolicyIssue("", f"pii.entities.{name}",
                            f"unknown entity type '{name}': not a Presidio entity for "
                            f"'{config.language}' and no recognizer in this policy detects it")
                for name in unknown])
        unused = sorted(custom - set(config.entities))
        if unused:
            index = next(i for i, s in enumerate(config.recognizers) if s.entity == unused[0])
            raise PolicyError([PolicyIssue(
                "", f"pii.recognizers[{index}].entity",
                f"recognizer detects '{unused[0]}' but pii.entities has no rule for it")])
        self.rules: dict[str, EntityRule] = dict(config.entities)
        self.thresholds = {
            name: rule.min_score if rule.min_score is not None else config.min_score
            for name, rule in self.rules.items()}
        self.needs_ner = bool(NER_ENTITIES & set(self.rules))
        self._analyzer: Any = None
        self._timeouts: Any = None  # sidecar.pii.internals.PatternTimeouts, once prepared
        self._anonymizer: Any = None
        self._operators: dict[str, Any] = {}
        self._entities = list(self.rules)
        self._lowest_threshold = min(self.thresholds.values(), default=0.0)
        self._allow = list(config.allow) or None
        from sidecar.pii.precision import PrecisionRules

        self._precision = PrecisionRules(config.precision.disable, config.precision.not_names,
                                         config.precision.names)
        self._prepare_lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def prepare(self) -> None:
        """Build the Presidio engines (loads the spaCy pipeline once per process)."""
        if self._analyzer is not None or not self.active:
            return
        with self._prepare_lock:
            if self._analyzer is not None:
                return
            from presidio_analyzer import AnalyzerEngine
            from presidio_anonymizer import AnonymizerEngine
            from presidio_anonymizer.entities import OperatorConfig

            from sidecar.offline import enforce_offline
            from sidecar.pii.internals import check as check_library_internals
            from sidecar.pii.internals import pattern_timeouts
            from sidecar.pii.nlp import LeanSpacyEngine
            from sidecar.pii.operators import KeyedHash, MaskKeepLast
            from sidecar.pii.recognizers import BisectContextEnhancer, build_registry

            enforce_offline()
            check_library_internals()  # the fast paths' assumptions, before they run
            self._timeouts = pattern_timeouts()
            language = self.config.language
            nlp_engine = LeanSpacyEngine(self.resources.spacy_model, self.needs_ner, language)
            nlp_engine.load()
            anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]
            anonymizer.add_anonymizer(KeyedHash)
            anonymizer.add_anonymizer(MaskKeepLast)
            operators = {}
            for name, rule in self.rules.items():
                if rule.action == "replace":
                    operators[name] = OperatorConfig(
                        "replace", {"new_value": rule.replacement or f"<{name}>"})
                elif rule.action == "redact":
                    operators[name] = OperatorConfig("redact", {})
                elif rule.action == "mask":
                    operators[name] = OperatorConfig(
                        "mask_keep_last",
                        {"keep_last": rule.keep_last, "masking_char": rule.masking_char})
                elif rule.action == "hash":
                    operators[name] = OperatorConfig(
                        "keyed_hash", {"key": self.resources.hash_key, "entity_type": name})
            self._anonymizer = anonymizer
            self._operators = operators
            self._nlp = nlp_engine.get_nlp(language)
            self._nlp_engine = nlp_engine
            self._analyzer = AnalyzerEngine(
                registry=build_registry(language, list(self.config.recognizers), self.rules),
                nlp_engine=nlp_engine,
                supported_languages=[language],
                context_aware_enhancer=BisectContextEnhancer(),
            )

    def run(self, inspection: Inspection, prior: Prior = ()) -> StageResult:
        return self.run_many([(inspection, prior)])[0]

    def run_many(self, items: list[tuple[Inspection, Prior]]) -> list[StageResult]:
        """Analyse every message of every request, with one spaCy pass over all of them."""
        results = [StageResult() for _ in items]
        if not self.active:
            return results
        self.prepare()
        # spaCy, RE2 and the hash operator encode to UTF-8, which a lone surrogate makes
        # raise (a JSON completion can carry `"\\ud800"`): analyse and edit a copy with
        # U+FFFD in their place. Same length, so every offset holds for the original.
        texts = [(item, index, well_formed(message.content))
                 for item, (inspection, _) in enumerate(items)
                 for index, message in enumerate(inspection.messages) if message.content]
        restoring = [self.config.pseudonyms.restore
                     and inspection.direction is Direction.COMPLETION
                     for inspection, _ in items]
        # Only requests that ask for explanations pay for them (sidecar.pii.explain).
        explaining = [items[item][0].explain for item, _, _ in texts]
        explained: list[dict[Found, Explanation]] = [{} for _ in texts]
        # Detectors read each text without the characters that would hide a value from
        # them (sidecar.pii.disguise); findings are mapped back onto the text as sent.
        readings = [undisguise(text) for *_, text in texts]
        analyzed = self._analyze([text if reading is None else reading.text
                                  for (*_, text), reading in zip(texts, readings, strict=True)],
                                 explaining if any(explaining) else None, explained)
        for (item, index, text), found, why, reading in zip(texts, analyzed, explained,
                                                            readings, strict=True):
            if reading is None:
                self._apply(index, text, found, results[item], restoring[item], explained=why)
                continue
            self._apply(index, text, [(entity, *reading.span(start, end), score)
                                      for entity, start, end, score in found],
                        results[item], restoring[item],
                        explained={(entity, *reading.span(start, end), score): explanation
                                   for (entity, start, end, score), explanation in why.items()})
        return results

    def _analyze(self, texts: list[str], explaining: list[bool] | None = None,
                 explained: list[dict[Found, Explanation]] | None = None
                 ) -> list[list[Found]]:
        """Presidio findings per text, above each entity's threshold; for the texts
        `explaining` marks, each finding's Explanation goes into `explained`."""
        from sidecar.pii.nlp import NLP_LOCK, LazyArtifacts, for_tokenizer, memory_zone

        language = self.config.language
        # memory_zone frees the strings spaCy interns for these texts once we are done with
        # the Docs; without it a long-running sidecar's vocabulary grows with every request.
        with NLP_LOCK, memory_zone(self._nlp):
            artifacts: list[Any]
            if self.needs_ner:  # NER reads every text: one batched pass
                artifacts = [pair[1] for pair in self._nlp_engine.process_batch(
                    [for_tokenizer(text) for text in texts], language,
                    batch_size=max(1, len(texts)))]
            else:  # tokens only serve context words: tokenize a text only if a finding asks
                artifacts = [LazyArtifacts(self._nlp_engine, for_tokenizer(text), language)
                             for text in texts]
            out = []
            for number, (text, nlp_artifacts) in enumerate(zip(texts, artifacts, strict=True)):
                abandon.check()
                explain = explaining is not None and explaining[number]
                skipped = self._timeouts.count()
                raw = self._analyzer.analyze(
                    text=text, language=language, entities=self._entities,
                    score_threshold=self._lowest_threshold, nlp_artifacts=nlp_artifacts,
                    allow_list=self._allow, return_decision_process=explain,
                )
                if self._timeouts.count() != skipped:  # a finding may be missing: say so
                    raise PatternTimedOut("a Presidio pattern's regex timed out and was "
                                          "skipped")
                raw = self._precision.apply(text, raw)
                kept = [r for r in raw if r.score >= self.thresholds[r.entity_type]]
                out.append([(r.entity_type, r.start, r.end, float(r.score)) for r in kept])
                if explain and explained is not None:
                    from sidecar.pii.explain import explanation_of

                    explained[number] = {
                        (r.entity_type, r.start, r.end, float(r.score)):
                        explanation_of(r, text, self.resources.spacy_model) for r in kept}
        return out

    def _apply(self, index: int, text: str, found: list[Found],
               result: StageResult, restoring: bool = False, *,
               explained: dict[Found, Explanation] | None = None) -> None:
        """Turn one message's findings into findings, violations and edits."""
        rules = self.rules
        why = _explainer(explained)
        shadowed = [f for f in found if rules[f[0]].shadow]
        if shadowed:  # reported, never acted on; say what enforcing them would do
            result.would_block |= any(rules[f[0]].action == "block" for f in shadowed)
            result.would_edit |= any(rules[f[0]].action in PROTECTIVE for f in shadowed)
            found = [f for f in found if not rules[f[0]].shadow]
            for entity, start, end, score in sorted(shadowed, key=lambda f: (f[1], f[2])):
                result.findings.append(Finding(entity, start, end, score, rules[entity].action,
                                               index, shadow=True,
                                               explanation=why(entity, start, end, score)))
        blocking = [f for f in found if rules[f[0]].action == "block"]
        if blocking:
            result.blocked = True
            for entity, start, end, score in sorted(found, key=lambda f: (f[1], f[2])):
                result.findings.append(Finding(entity, start, end, score,
                                               rules[entity].action, index,
                                               explanation=why(entity, start, end, score)))
            for entity, start, end, _ in sorted(blocking, key=lambda f: (f[1], f[2])):
                result.violations.append(Violation(
                    f"pii.{entity}", "pii", f"{entity} is not allowed by policy",
                    start, end, index))
            return
        # Placeholders to restore are not PII: findings never cover them.
        tokens = [Edit(m.start(), m.end(), m.group(), pending="restore", value=m.group())
                  for m in PLACEHOLDER.finditer(text)] if restoring else []
        kept = _resolve_overlaps(found, rules, [(t.start, t.end) for t in tokens])
        for entity, start, end, score in kept:
            result.findings.append(Finding(entity, start, end, score,
                                           rules[entity].action, index,
                                           explanation=why(entity, start, end, score)))
        edits = list(tokens)
        pseudonymizing = [(entity, start, _without_possessive(text, start, end), score)
                          for entity, start, end, score in kept
                          if rules[entity].action == "pseudonymize"]
        edits.extend(Edit(start, end, f"<{entity}>", pending="pseudonym", entity=entity,
                          value=text[start:end]) for entity, start, end, _ in pseudonymizing)
        acting = [f for f in kept if rules[f[0]].action in PROTECTIVE
                  and rules[f[0]].action != "pseudonymize"]
        if acting:
            from presidio_analyzer import RecognizerResult

            anonymized = self._anonymizer.anonymize(
                text=text,
                analyzer_results=[RecognizerResult(e, s, t, sc) for e, s, t, sc in acting],
                operators=self._operators,
                merge_entities_with_spaces=False,
            )
            # `acting` is disjoint and sorted, so the n-th replaced item (by its position in
            # the new text) is the n-th acting span: report it as an edit on the original.
            replaced = sorted(anonymized.items, key=lambda item: item.start)
            edits.extend(Edit(start, end, item.text) for (_, start, end, _), item
                         in zip(acting, replaced, strict=True))
        if edits:
            result.edits[index] = sorted(edits, key=lambda e: e.start)


class PatternTimedOut(RuntimeError):
    """Presidio skipped a pattern whose regex timed out (sidecar.pii.internals
    .PatternTimeouts): the analysis is incomplete, so the stage fails by `on_error`
    rather than answer (and cache) fewer findings than the text holds."""


def _explainer(explained: dict[Found, Explanation] | None
               ) -> Callable[[str, int, int, float], Explanation | None]:
    """The explanation of a finding: of the analyzer's finding it is, or (trimmed by
    _resolve_overlaps) the one of that type and score that contains it; None when the
    request did not ask."""
    if not explained:
        return lambda entity, start, end, score: None

    def why(entity: str, start: int, end: int, score: float) -> Explanation | None:
        exact = explained.get((entity, start, end, score))
        if exact is not None:
            return exact
        return next((explanation for (e, s, t, sc), explanation in explained.items()
                     if e == entity and sc == score and s <= start and end <= t), None)

    return why


def _without_possessive(text: str, start: int, end: int) -> int:
    """Where a pseudonymized value ends without a trailing possessive (`Jane Doe's`).

    spaCy's entity spans keep the `'s`, so `Jane Doe's` got a placeholder of its own,
    different from `Jane Doe`'s, and restoring it wrote `Dear Jane Doe's`. The `'s`
    stays in the text, after the placeholder (`<PERSON_1>'s`), where the model keeps it.
    """
    if end - start > 2 and text[end - 2] in "'\u2019" and text[end - 1] in "sS":
        return end - 2
    return end


def _resolve_overlaps(found: list[tuple[str, int, int, float]],
                      rules: dict[str, EntityRule],
                      reserved: Sequence[tuple[int, int]] = ()
                      ) -> list[tuple[str, int, int, float]]:
    """Make findings disjoint without uncovering a single character.

    Stronger findings keep their span; a weaker one that overlaps them is trimmed to the
    parts they do not cover (possibly split in two), never dropped: dropping it would
    leave its uncovered characters in the clear. Protective actions rank above `allow`
    (an allowed DATE_TIME must not shield a phone number), then higher scores, then
    longer spans.
    """
    from sidecar.edits import Coverage

    ranked = sorted(found, key=lambda f: (rules[f[0]].action in PROTECTIVE, f[3], f[2] - f[1]),
                    reverse=True)
    coverage = Coverage()
    for start, end in reserved:  # spans no finding may cover (placeholders to restore)
        coverage.claim(start, end)
    kept = [(entity, piece_start, piece_end, score) for entity, start, end, score in ranked
            for piece_start, piece_end in coverage.claim(start, end)]
    return sorted(kept, key=lambda f: (f[1], f[2]))
