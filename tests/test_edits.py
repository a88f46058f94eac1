"""Edits from several stages: every covered character goes, every other one stays, in order."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sidecar.edits import apply, resolve
from sidecar.types import Edit


@st.composite
def text_and_edits(draw: st.DrawFn) -> tuple[str, list[Edit]]:
    text = draw(st.text(alphabet="abcdé ", max_size=40))
    edits = []
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, len(text)))
        edits.append(Edit(start, end, draw(st.text(alphabet="XYZ", max_size=4))))
    return text, edits


@given(text_and_edits())
def test_covered_characters_go_and_the_rest_stay_in_order(case: tuple[str, list[Edit]]) -> None:
    text, edits = case
    covered = {i for e in edits for i in range(e.start, e.end)}
    out = apply(text, edits)
    kept = "".join(ch for ch in out if ch not in "XYZ")
    assert kept == "".join(ch for i, ch in enumerate(text) if i not in covered)


@given(text_and_edits())
def test_resolved_edits_are_disjoint_and_the_first_edit_keeps_its_span(
        case: tuple[str, list[Edit]]) -> None:
    _, edits = case
    resolved = resolve(edits)
    assert all(a.end <= b.start for a, b in itertools.pairwise(resolved))
    first = next((e for e in edits if e.start < e.end), None)
    if first is not None:
        assert first in resolved


def test_a_later_overlapping_edit_is_trimmed_not_dropped() -> None:
    text = "call John Smith now"
    out = apply(text, [Edit(5, 9, "[X]"), Edit(5, 15, "<PERSON>")])
    assert out == "call [X]<PERSON> now"
