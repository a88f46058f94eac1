"""Utf8Text: RE2 over one encoding of a text gives the spans the wrapper gives on the str."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.regex import Utf8Text, compile_re2

PATTERNS = [compile_re2(p) for p in (
    r"\d+", r"\p{Lu}\p{Ll}+", r"[^\x00-\x7f]+", r"(?i:st|straße)\b", r"$", r"", r"\s*",
    r"\d{1,5}[ \t]+\p{Lu}[\p{L}\p{M}]*")]
texts = st.text(alphabet=st.sampled_from(
    [*"ab Z9\n\t.,", "é", "ß", "Ø", "😀", "\u0301", "中", "\u200b", "\U0001d7d8"]),
    max_size=60)


@settings(max_examples=400, deadline=None)
@given(texts, st.data())
def test_searches_and_matches_at_any_position_equal_the_wrappers(text: str,
                                                                  data: st.DataObject) -> None:
    utf8 = Utf8Text(text)
    # Several positions in any order: conversions reuse what earlier ones learnt.
    for _ in range(4):
        pattern = data.draw(st.sampled_from(PATTERNS))
        pos = data.draw(st.integers(0, len(text)))
        found = pattern.search(text, pos)
        assert utf8.search(pattern, pos) == (found.span() if found else None)
        anchored = pattern.match(text, pos)
        assert utf8.match(pattern, pos) == (anchored.span() if anchored else None)
