"""Replacing spans of a text when several stages each want to change some of it.

Every stage looks at the text the app sent and reports its changes as edits on that
text, so offsets in findings and violations always point into the original, whatever
other stages did. The pipeline applies all edits at the end: an edit from an earlier
stage (or earlier in a stage's list) keeps its span; a later one that overlaps it is
trimmed to the characters nobody covered yet (possibly split in two), never dropped,
so every character some stage wanted gone is gone.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable

from sidecar.types import Edit


class Coverage:
    """Disjoint spans claimed so far; claiming a span returns the parts nobody had.

    Spans are kept sorted, so a claim costs O(log n) plus the spans it touches: trimming
    thousands of findings in a long text stays near-linear (it was quadratic).
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def claim(self, start: int, end: int) -> list[tuple[int, int]]:
        if start >= end:
            return []
        # Claimed spans that may overlap [start, end): from the last one starting before it.
        index = max(0, bisect.bisect_right(self._starts, start) - 1)
        pieces: list[tuple[int, int]] = []
        cursor = start
        while index < len(self._starts) and self._starts[index] < end:
            if self._ends[index] > cursor:
                if self._starts[index] > cursor:
                    pieces.append((cursor, self._starts[index]))
                cursor = max(cursor, self._ends[index])
            index += 1
        if cursor < end:
            pieces.append((cursor, end))
        for piece_start, piece_end in pieces:
            at = bisect.bisect_left(self._starts, piece_start)
            self._starts.insert(at, piece_start)
            self._ends.insert(at, piece_end)
        return pieces


def resolve(edits: Iterable[Edit]) -> list[Edit]:
    """Disjoint edits sorted by position; earlier edits in `edits` take precedence.

    A pending edit that loses part of its span to an earlier one is no longer about one
    whole value: a placeholder to restore is dropped (its remains stay as they were),
    a value to pseudonymize keeps its placeholder on its first piece and its other
    pieces are removed.
    """
    coverage = Coverage()
    kept: list[Edit] = []
    for edit in edits:
        pieces = coverage.claim(edit.start, edit.end)
        if pieces == [(edit.start, edit.end)]:
            kept.append(edit)
        elif edit.pending == "restore":
            continue
        elif edit.pending:
            kept.append(dataclasses.replace(edit, start=pieces[0][0], end=pieces[0][1]))
            kept.extend(Edit(start, end, "") for start, end in pieces[1:])
        else:
            kept.extend(Edit(start, end, edit.replacement) for start, end in pieces)
    return sorted(kept, key=lambda e: e.start)


def apply_resolved(text: str, edits: Iterable[Edit], offset: int = 0) -> str:
    """`text` with disjoint, sorted edits applied; `offset` is where `text` starts in
    the coordinates of the edits (a stream releases part of a window)."""
    out: list[str] = []
    position = 0
    for edit in edits:
        out.append(text[position:edit.start - offset])
        out.append(edit.replacement)
        position = edit.end - offset
    out.append(text[position:])
    return "".join(out)


def apply(text: str, edits: Iterable[Edit]) -> str:
    """`text` with every edit applied (see `resolve` for overlaps)."""
    return apply_resolved(text, resolve(edits))
