"""The hand-labelled corpus (bench/data) is well-formed: the benchmark's figures are only
as good as its labels, and a span that drifted off its text would score silently wrong."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DATA = Path(__file__).resolve().parent.parent / "bench" / "data"


@pytest.fixture(scope="module")
def labelled() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labelled", DATA / "labelled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("labelled", module)
    spec.loader.exec_module(module)
    return module


def test_every_span_lies_inside_its_text_with_a_known_label(labelled: ModuleType) -> None:
    items = labelled.load()
    assert len(items) >= 300
    assert len({item["id"] for item in items}) == len(items)
    for item in items:
        text = item["text"]
        assert item["category"] in labelled.CATEGORIES, item["id"]
        previous_end = 0
        for span in item["spans"]:
            assert span["label"] in labelled.LABELS, item["id"]
            assert 0 <= previous_end <= span["start"] < span["end"] <= len(text), item["id"]
            value = text[span["start"]:span["end"]]
            assert value == value.strip() and value, item["id"]  # no padding in a span
            assert "⟦" not in value and "⟧" not in value, item["id"]
            previous_end = span["end"]
        assert "⟦" not in text and "⟧" not in text, item["id"]


def test_stored_corpus_is_what_its_source_builds(labelled: ModuleType) -> None:
    """prompts.jsonl is generated from source/*.txt: an edit to one without the other
    would make the benchmark read labels nobody reviewed."""
    assert labelled.dumps(list(labelled.records())) == \
        (DATA / "prompts.jsonl").read_text(encoding="utf-8")


def test_corpus_covers_what_the_issue_asks_for(labelled: ModuleType) -> None:
    items = labelled.load()
    clean = [item for item in items if not item["spans"]]
    assert 0.15 <= len(clean) / len(items) <= 0.3  # about a fifth without PII
    for label in ("STREET_ADDRESS", "PHONE_NUMBER"):
        countries = {span.get("country") for item in items for span in item["spans"]
                     if span["label"] == label}
        assert len(countries - {None}) >= 12, label
    assert {item["category"] for item in items} == set(labelled.CATEGORIES)
