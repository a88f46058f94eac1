"""Overlapping findings: every character any finding covers stays covered."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.model import EntityRule
from sidecar.stages.pii import _resolve_overlaps

RULES = {"A": EntityRule(action="replace"), "B": EntityRule(action="mask"),
         "C": EntityRule(action="allow")}
findings = st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 40), st.integers(1, 20),
                              st.floats(0, 1)).map(lambda t: (t[0], t[1], t[1] + t[2], t[3])),
                    max_size=8)


def covered(spans: list[tuple[str, int, int, float]], protective_only: bool) -> set[int]:
    return {i for kind, start, end, _ in spans
            if not protective_only or RULES[kind].action != "allow" for i in range(start, end)}


@given(found=findings)
def test_resolution_is_disjoint_and_uncovers_nothing(
        found: list[tuple[str, int, int, float]]) -> None:
    kept = _resolve_overlaps(found, RULES)
    for (_, _, end, _), (_, start, _, _) in itertools.pairwise(kept):
        assert end <= start
    assert covered(kept, False) == covered(found, False)
    assert covered(kept, True) == covered(found, True)  # allow never shields protected text


def test_partial_overlap_is_trimmed_not_dropped() -> None:
    kept = _resolve_overlaps([("A", 0, 10, 0.9), ("B", 5, 15, 0.5)], RULES)
    assert kept == [("A", 0, 10, 0.9), ("B", 10, 15, 0.5)]
