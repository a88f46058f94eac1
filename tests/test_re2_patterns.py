"""Presidio's URL patterns on RE2 (sidecar.pii.re2_patterns): the same findings as
Presidio's own engine, on generated texts and the corpora, in time linear in the text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from presidio_analyzer.predefined_recognizers import UrlRecognizer

from sidecar.pii.re2_patterns import Re2Finder
from sidecar.pii.recognizers import predefined_recognizers
from sidecar.pipeline import Limits, Pipeline
from sidecar.policy.store import compile_directory
from sidecar.types import Inspection
from tests.conftest import DETECTION_RESOURCES, REPO

# Pieces of URLs, and the characters where RE2 and Presidio's `regex` differ unless
# translated: Unicode digits (Arabic-Indic, Garay, newer than RE2's tables) and spaces
# (NBSP, em space, ideographic), İ under IGNORECASE, Kelvin and long s, accents.
PIECES = st.sampled_from([
    "www", "www1", "www٣", "http://", "https://", "HTTPS://", ".com", ".co.uk", ".org", ".io",
    ".xyz", ".museum", ".notatld", "example", "a", "ab", "-", ".", "/", "/path", "?q=1", "#x",
    "'", '"', "(", ")", "<", ">", " ", "\n", "\u00a0", "\u2003", "\u3000", "\U00010d41", "٣",
    "İ", "i", "\u212a", "\u017f", "é", "@", "a.", "COM", "Www.", "1", "x" * 30])


@pytest.fixture(scope="module")
def ours() -> Any:
    return next(r for r in predefined_recognizers("en") if isinstance(r, UrlRecognizer))


def _found(recognizer: Any, text: str) -> list[tuple[int, int, float]]:
    return sorted((r.start, r.end, r.score) for r in recognizer.analyze(text, ["URL"], None))


def test_every_url_pattern_runs_on_re2(ours: Any) -> None:
    assert all(isinstance(pattern.compiled_regex, Re2Finder) for pattern in ours.patterns)


TRICKY = st.sampled_from(["\u00a0", "\u2003", "\u3000", "\u0085", "٣", "\U00010d41", "İ",
                          "\u212a", "\u017f", "é", " ", "'", "(", "<", "\n"])


@st.composite
def url_shaped(draw: st.DrawFn) -> str:
    """A URL as Presidio's patterns read one (scheme, www with digits, labels, a TLD, a
    path), with a character where the engines could differ put anywhere in it."""
    parts = [draw(st.sampled_from(["", "http://", "https://", "HTTP://"])),
             draw(st.sampled_from(["", "www.", "www1.", "www٣.", "wwwİ."])),
             draw(st.sampled_from(["example", "a-b", "xn--d1a", "İnfo", "mail.example"])),
             draw(st.sampled_from([".com", ".co.uk", ".org", ".museum", ".İo", ".notatld"])),
             draw(st.sampled_from(["", "/", "/path", "/a?b=1", "/x\u00a0y", "/p\u2003q"]))]
    url = "".join(parts)
    at = draw(st.integers(0, len(url)))
    url = url[:at] + draw(TRICKY) + url[at:] if draw(st.booleans()) else url
    return draw(st.sampled_from(["", "see ", "'", "(", "\u00a0"])) + url + draw(
        st.sampled_from(["", " now", "'", ")", "\u00a0tail", "٣"]))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(url_shaped() | PIECES, max_size=12).map("".join))
def test_re2_finds_what_presidio_finds(ours: Any, text: str) -> None:
    assert _found(ours, text) == _found(UrlRecognizer(), text)


def test_re2_finds_what_presidio_finds_on_the_corpus(ours: Any) -> None:
    texts = [json.loads(line)["text"]
             for line in (REPO / "bench" / "data" / "prompts.jsonl").open(encoding="utf-8")]
    presidio = UrlRecognizer()
    differ = [text for text in texts if _found(ours, text) != _found(presidio, text)]
    assert differ == []
    assert sum(bool(_found(ours, text)) for text in texts) > 20  # the corpora hold URLs


def test_crafted_text_costs_a_worker_no_minute(tmp_path: Path) -> None:
    """`"a@" + "a." * n` took Presidio's engine ~1.1 ms a character ("Non schema URL"):
    100 KB held a worker until its 60 s regex timeout, and the stage then failed. On
    RE2 the text is read once (counted here by the outcome, not timed: the timeout's
    failure is what the old engine gave)."""
    (tmp_path / "default.yaml").write_text("name: default\npii:\n  entities:\n"
                                           "    URL: {action: replace}\n")
    pipeline = Pipeline(compile_directory(tmp_path, DETECTION_RESOURCES),
                        Limits(1 << 20, 64, 64))
    verdict = pipeline.run(Inspection.of_text("a@" + "a." * 50_000 + "a.com"))
    assert not [v.rule_id for v in verdict.violations]
    assert [f.entity_type for f in verdict.findings] == ["URL"]
