"""A Presidio recognizer over a plain function that finds spans, for our recognizers
beyond Presidio (phones, e-mails, SSNs, cards; addresses predate it).

Each of those modules exposes `find(text) -> [(start, end, score, pattern_name)]`, pure
and linear-time, so it can be tested and measured without Presidio; this adapter turns
the spans into RecognizerResults. The scores are final (each module weighs its own
context words), so the results are marked as already enhanced: Presidio's context
enhancer must not raise them a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult

Span = tuple[int, int, float, str]


class FinderRecognizer(LocalRecognizer):
    """`find` as a recognizer of `entity`, skipped at once when `entity` is not asked."""

    def __init__(self, entity: str, name: str, find: Callable[[str], list[Span]],
                 supported_language: str = "en") -> None:
        self._find = find
        self._label = name
        super().__init__(supported_entities=[entity], supported_language=supported_language,
                         name=name, context=[])

    def load(self) -> None:
        """Patterns are compiled on first use, in each module."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        entity = self.supported_entities[0]
        if entity not in entities:
            return []
        return [RecognizerResult(
            entity_type=entity, start=start, end=end, score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=self._label, original_score=score, pattern_name=pattern),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self._label,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY: True,
            }) for start, end, score, pattern in self._find(text)]
