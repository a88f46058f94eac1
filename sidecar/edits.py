"""Replacing spans of a text when several stages each want to change some of it.

Every stage looks at the text the app sent and reports its changes as edits on that
text, so offsets in findings and violations always point into the original, whatever
other stages did. The pipeline applies all edits at the end: an edit from an earlier
stage (or earlier in a stage's list) keeps its span; a later one that overlaps it is
trimmed to the characters nobody covered yet (possibly split in two), never dropped,
so every character some stage wanted gone is gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.types import Edit


def resolve(edits: Iterable[Edit]) -> list[Edit]:
    """Disjoint edits sorted by position; earlier edits in `edits` take precedence."""
    kept: list[Edit] = []
    for edit in edits:
        if edit.start >= edit.end:
            continue  # no stage inserts text; an empty edit must not split another
        pieces = [(edit.start, edit.end)]
        for other in kept:
            pieces = [part for start, end in pieces
                      for part in ((start, min(end, other.start)), (max(start, other.end), end))
                      if part[0] < part[1]]
        kept.extend(Edit(start, end, edit.replacement) for start, end in pieces)
    return sorted(kept, key=lambda e: e.start)


def apply(text: str, edits: Iterable[Edit]) -> str:
    """`text` with every edit applied (see `resolve` for overlaps)."""
    out: list[str] = []
    position = 0
    for edit in resolve(edits):
        out.append(text[position:edit.start])
        out.append(edit.replacement)
        position = edit.end
    out.append(text[position:])
    return "".join(out)
