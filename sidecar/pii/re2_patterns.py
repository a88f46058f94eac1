"""Presidio's own patterns, matched by RE2 where its backtracking engine can be made slow.

Presidio's predefined recognizers match with the `regex` module, a backtracking engine,
bounded only by a 60 s timeout per pattern. `UrlRecognizer`'s "Non schema URL" pattern
costs ~1.1 ms of a worker per character of crafted text (`"a@" + "a." * n`: 8,000
characters 9 s through the pipeline, found at the end of round 8), so one ~60 KB
request held a worker for a minute. RE2 runs the same patterns in time linear in the
text (200 KB of that text in 0.3 ms).

The match must be the one Presidio's engine finds, so a pattern is translated, not
rewritten: RE2 takes these patterns as they are (no lookaround, no backreference) and
picks the same leftmost-first match a backtracking engine does; what differs is
Unicode: `regex`'s `\\d` and `\\s` are Unicode classes of its own Unicode version (RE2's
`\\d`, `\\s` are ASCII, its `\\p{Nd}` an older table), so both are written out as the
exact sets `regex` matches, read from `regex` itself; and under IGNORECASE `regex` lets
U+0130 (İ) match `i`, which RE2 does not, so RE2 reads the text with İ as `i` (one
character for one: offsets hold). A pattern holding anything else this module has not
checked (a word boundary, `\\w`, an anchor, lookaround) is refused, and the worker
refuses to start naming it (sidecar.pii.recognizers), as for any other changed private
detail. `tests/test_re2_patterns.py` checks the results equal Presidio's on generated
URL-shaped texts and on the hand-labelled corpus.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from typing import Any

from sidecar.regex import compile_re2

# Recognizers whose patterns RE2 runs (by class name); measured slow on crafted text.
ON_RE2 = frozenset({"UrlRecognizer"})
_UNCHECKED = re.compile(r"\\[bBwWAZzG]|\(\?[=!<]|\\[1-9]")


def _every_character() -> str:
    """Every code point but the surrogates (which no analysed text holds)."""
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))


@functools.cache
def _class_of(escape: str) -> str:
    """The code points `regex` matches with `escape` (`\\d`, `\\s`), as RE2 class ranges
    (read once per process and escape: ~0.1 s each)."""
    import regex  # type: ignore[import-untyped]

    points = sorted({ord(ch) for ch in regex.findall(escape, _every_character())})
    ranges: list[tuple[int, int]] = []
    for point in points:
        if ranges and point == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return "".join(f"\\x{{{low:x}}}-\\x{{{high:x}}}" if high > low else f"\\x{{{low:x}}}"
                   for low, high in ranges)


def translate(pattern: str) -> str:
    """`pattern` (Presidio's, for `regex` with IGNORECASE | MULTILINE | DOTALL) for RE2.

    Raises ValueError for a construct this translation has not been checked for."""
    found = _UNCHECKED.search(pattern)
    if found:
        raise ValueError(f"unchecked construct {found.group()!r}")
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escape = pattern[index:index + 2]
            if escape in ("\\d", "\\s"):
                ranges = _class_of(escape)
                out.append(ranges if in_class else f"[{ranges}]")
            else:
                out.append(escape)
            index += 2
            continue
        if char in "^$" and not in_class:
            raise ValueError(f"unchecked construct {char!r}")  # an anchor (MULTILINE)
        if char == "[" and not in_class:
            in_class = True
            if pattern[index + 1:index + 2] == "^":  # a negated class, not an anchor
                out.append("[^")
                index += 2
                continue
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        index += 1
    return "(?ims)" + "".join(out)


class Re2Finder:
    """What Presidio's PatternRecognizer calls on a compiled pattern (`finditer`), on RE2."""

    def __init__(self, pattern: str) -> None:
        self._compiled = compile_re2(translate(pattern), max_length=1 << 20)

    def finditer(self, text: str, timeout: float | None = None) -> Iterator[Any]:
        del timeout  # linear time: nothing to time out
        return iter(self._compiled.finditer(text.replace("\u0130", "i")))


def match_with_re2(recognizer: Any) -> bool:
    """Have `recognizer` (a Presidio PatternRecognizer) match its patterns with RE2;
    False, leaving it untouched, when one of them is not one this module can translate
    (the caller then refuses to start: the slow engine is not an option to fall back to)."""
    try:
        finders = [Re2Finder(pattern.regex) for pattern in recognizer.patterns]
    except ValueError:
        return False
    # Copies: a recognizer class's PATTERNS are shared by all its instances (a test's
    # reference recognizer, built to compare with Presidio's engine, among them).
    recognizer.patterns = [copy.copy(pattern) for pattern in recognizer.patterns]
    for pattern, finder in zip(recognizer.patterns, finders, strict=True):
        # Presidio compiles a pattern again only when the flags it is called with differ
        # from `compiled_with_flags` (sidecar.pii.internals: PatternRecognizer's
        # __analyze_patterns, fingerprinted), and it is always called with these.
        pattern.compiled_regex = finder
        pattern.compiled_with_flags = recognizer.global_regex_flags
    return True
