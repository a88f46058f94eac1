"""Recognizers: Presidio's predefined set, the policy's own, and two faster equivalents.

`FastPhoneRecognizer` and `BisectContextEnhancer` return exactly what Presidio's
`PhoneRecognizer` and `LemmaContextAwareEnhancer` return (tests compare them on a
corpus); they only skip work that cannot change the result.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

import re2
from presidio_analyzer import (
    AnalysisExplanation,
    LocalRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

from sidecar.policy.model import CustomRecognizer
from sidecar.regex import compile_re2

# A phone number holds at least two digits (phonenumbers' shortest national number);
# most prompts hold none, and the eight per-region scans are then pure cost.
_TWO_DIGITS = re.compile(r"\d\D*?\d", re.DOTALL)


class FastPhoneRecognizer(PhoneRecognizer):
    """Presidio's PhoneRecognizer, minus scans that cannot find anything new.

    Presidio scans the whole text once per region in ("US", "GB", "DE", "FR", "IL",
    "IN", "CA", "BR"), and the phonenumbers matcher is most of its cost. A scan is
    redundant, and skipped, when an earlier region shares its calling code ("CA" and
    "US" are both +1: a national-form number parses to the same number under both and is
    validated against its own region either way), or when the region is unknown to
    phonenumbers (then only "+..." numbers parse, the same under any region). It also
    skips texts with fewer than two digits. Tests compare it with Presidio's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.supported_regions = effective_regions(self.supported_regions)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if not _TWO_DIGITS.search(text):
            return []
        return super().analyze(text, entities, nlp_artifacts)


def effective_regions(regions: Any) -> list[str]:
    """The regions whose scans can each find a number no earlier scan finds."""
    import phonenumbers

    kept: list[str] = []
    codes: set[int] = set()
    for region in regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            continue
        code = phonenumbers.country_code_for_region(region)
        if code not in codes:
            kept.append(region)
            codes.add(code)
    return kept or list(regions)[:1]


class BisectContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer made near-linear: token lookup by bisection, keyword
    membership in a set.

    Presidio scans every token for every finding, which makes long texts with many
    findings quadratic. Tokens are sorted and disjoint, so the first token that ends after
    `start` (or begins at it) is found by bisection: the same index, found faster.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keyword_list: list[str] | None = None
        self._keyword_set: frozenset[str] = frozenset()

    def _add_n_words(self, index: int, n_words: int, lemmas: list[str],  # type: ignore[override]
                     lemmatized_filtered_keywords: list[str],
                     is_backward: bool) -> list[str]:
        """Presidio's loop, with membership tested in a set instead of a list.

        Presidio checks each nearby lemma against the list of every keyword lemma of the
        text: O(text) per check, so a 100 KB text spent a second here. The list is built
        once per analysis and not changed while findings are enhanced, so its set is
        built once too (keyed by identity) and the answers are the same.
        """
        if self._keyword_list is not lemmatized_filtered_keywords:
            self._keyword_list = lemmatized_filtered_keywords
            self._keyword_set = frozenset(lemmatized_filtered_keywords)
        keywords = self._keyword_set
        i = index
        context_words = []
        remaining = n_words + 1
        while 0 <= i < len(lemmas) and remaining > 0:
            lower_lemma = lemmas[i].lower()
            if lower_lemma in keywords:
                context_words.append(lower_lemma)
                remaining -= 1
            i = i - 1 if is_backward else i + 1
        return context_words

    @staticmethod
    def _find_index_of_match_token(word: str, start: int, tokens: Any,
                                   tokens_indices: list[int]) -> int:
        index = bisect.bisect_right(tokens_indices, start) - 1
        if index < 0:
            index = 0
        elif tokens_indices[index] != start and start >= tokens_indices[index] + len(tokens[index]):
            index += 1
        if index >= len(tokens_indices):
            raise ValueError("match lies beyond the last token")
        return index


class Re2Recognizer(LocalRecognizer):
    """A policy's custom recognizer: RE2 patterns and a deny-list, linear-time by design."""

    def __init__(self, spec: CustomRecognizer, index: int, language: str = "en") -> None:
        self.spec = spec
        self.label = f"policy.recognizers[{index}].{spec.entity}"
        self._patterns = [compile_re2(p) for p in spec.patterns]
        if spec.deny_list:
            alternation = "|".join(re2.escape(term) for term in spec.deny_list)
            self._patterns.append(compile_re2(rf"\b(?:{alternation})\b", ignore_case=True))
        super().__init__(
            supported_entities=[spec.entity],
            supported_language=language,
            context=list(spec.context),
            name=self.label,
        )

    def load(self) -> None:
        """Patterns are compiled in __init__, when the policy loads."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        results = []
        for pattern in self._patterns:
            for match in pattern.finditer(text):
                start, end = match.span()
                if start == end:
                    continue
                results.append(RecognizerResult(
                    entity_type=self.spec.entity, start=start, end=end, score=self.spec.score,
                    analysis_explanation=AnalysisExplanation(
                        recognizer=self.label, original_score=self.spec.score),
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.label,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                ))
        return results


_predefined: dict[str, list[Any]] = {}


def predefined_recognizers(language: str) -> list[Any]:
    """Presidio's predefined recognizers for `language`, built once per process.

    They are stateless after construction, so every policy shares the same instances.
    """
    if language not in _predefined:
        registry = RecognizerRegistry(supported_languages=[language])
        registry.load_predefined_recognizers(languages=[language])
        recognizers: list[Any] = []
        for recognizer in registry.recognizers:
            if type(recognizer) is PhoneRecognizer:
                recognizers.append(FastPhoneRecognizer(supported_language=language))
            else:
                recognizers.append(recognizer)
        _predefined[language] = recognizers
    return _predefined[language]


def build_registry(language: str, custom: list[CustomRecognizer]) -> Any:
    registry = RecognizerRegistry(supported_languages=[language])
    for recognizer in predefined_recognizers(language):
        registry.add_recognizer(recognizer)
    for index, spec in enumerate(custom):
        registry.add_recognizer(Re2Recognizer(spec, index, language))
    return registry


def known_entities(language: str) -> set[str]:
    """Entity types Presidio can detect for `language` without policy recognizers."""
    found: set[str] = set()
    for recognizer in predefined_recognizers(language):
        found.update(recognizer.supported_entities)
    return found
