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

`EmailRecognizer`'s one pattern holds `\\b` and `\\w`, which RE2 cannot read as `regex`
does, and its backtracking is quadratic in a run of the characters a local part may
hold before an "@" with no dotted domain after it (`"=0" * n + "@9"`: 16 KB took 17 s;
a 16 KB base64 blob then "@bob" 5.9 s; found by a generated search in round 9). There
RE2 only finds where the next match starts (`StartsOnRe2`), which it can do exactly,
and Presidio's own compiled pattern reads the match at that start: the same match
objects, each start read once.
"""

from __future__ import annotations

import bisect
import copy
import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

from sidecar.regex import Utf8Text, compile_re2
from sidecar.wellformed import well_formed

# Presidio's PatternRecognizer flags (its `global_regex_flags` default).
PRESIDIO_FLAGS = 2 | 8 | 16  # regex.IGNORECASE | regex.MULTILINE | regex.DOTALL
# Recognizers whose patterns RE2 runs (by class name); measured slow on crafted text.
ON_RE2 = frozenset({"UrlRecognizer", "EmailRecognizer"})
_UNCHECKED = re.compile(r"\\[bBwWAZzG]|\(\?[=!<]|\\[1-9]")


def _every_character() -> str:
    """Every code point but the surrogates (which no analysed text holds)."""
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))


# What the translations below read from `regex`: (escape, flags) pairs.
_READ = ((r"\d", 0), (r"\s", 0), (r"\w", PRESIDIO_FLAGS), (r"[!#$%&'*+\-/=?^_`{|}~\.]",
                                                          PRESIDIO_FLAGS))


# A set of code points as sorted, disjoint (first, last) ranges: `\w` is ~700 of them,
# where its 162,226 code points as a set of ints kept ~15 MB in every worker.
Ranges = tuple[tuple[int, int], ...]


def _as_ranges(points: Iterable[int], *, adding: Ranges = ()) -> Ranges:
    """`points`, with the ranges `adding`, as Ranges."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted([*adding, *((point, point) for point in points)]):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return tuple(merged)


def _runs(ascending: Iterable[int]) -> Ranges:
    """Code points given in ascending order (as `regex.findall` over every code point
    finds them) as Ranges, in one pass."""
    merged: list[list[int]] = []
    for point in ascending:
        if merged and point == merged[-1][1] + 1:
            merged[-1][1] = point
        else:
            merged.append([point, point])
    return tuple((low, high) for low, high in merged)


def _points(ranges: Ranges) -> Iterator[int]:
    for low, high in ranges:
        yield from range(low, high + 1)


def _holds(ranges: Ranges, point: int) -> bool:
    index = bisect.bisect_right(ranges, (point, 0x110000)) - 1
    return index >= 0 and ranges[index][0] <= point <= ranges[index][1]


def _format(ranges: Ranges) -> str:
    """`ranges` as the inside of an RE2 character class."""
    return "".join(f"\\x{{{low:x}}}-\\x{{{high:x}}}" if high > low else f"\\x{{{low:x}}}"
                   for low, high in ranges)


@functools.cache
def _read_classes(pairs: tuple[tuple[str, int], ...] = _READ) -> dict[tuple[str, int], Ranges]:
    """The code points `regex` matches with each (escape, flags) of `pairs`, read in one
    pass over every code point (~0.3 s once per process, while the recognizers are
    built; the 4.4 MB text is dropped after, the ranges kept are a few KB)."""
    import regex  # type: ignore[import-untyped]

    every = _every_character()
    return {(escape, flags): _runs(map(ord, regex.findall(escape, every, flags=flags)))
            for escape, flags in pairs}


def _ranges_of(escape: str, flags: int = 0) -> Ranges:
    """The code points `regex` matches with `escape` under `flags`."""
    read = _read_classes()
    if (escape, flags) in read:
        return read[escape, flags]
    import regex

    return _runs(map(ord, regex.findall(escape, _every_character(), flags=flags)))


@functools.cache
def _class_of(escape: str, flags: int = 0) -> str:
    """`_ranges_of(escape, flags)` as the inside of an RE2 class."""
    return _format(_ranges_of(escape, flags))


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
        # RE2 reads UTF-8, which cannot carry a lone surrogate: U+FFFD stands in for it
        # (one character for one; no URL pattern tells the two apart).
        return iter(self._compiled.finditer(well_formed(text).replace("\u0130", "i")))


# Presidio's EMAIL_ADDRESS pattern, the one `StartsOnRe2` was derived for (below).
EMAIL_PATTERN = (r"\b((([!#$%&'*+\-/=?^_`{|}~\w])|([!#$%&'*+\-/=?^_`{|}~\w]"
                 r"[!#$%&'*+\-/=?^_`{|}~\.\w]{0,}[!#$%&'*+\-/=?^_`{|}~\w]))[@]\w+(?:-+\w+)*"
                 r"(?:\.\w+(?:-+\w+)*)+)\b")
_LOCAL = r"[!#$%&'*+\-/=?^_`{|}~\w]"  # any character of a local part but its dots
_LOCAL_OR_DOT = r"[!#$%&'*+\-/=?^_`{|}~\.\w]"
_SYMBOLS = _READ[3][0]  # the characters the local-part classes name besides \w


class StartsOnRe2:
    """Presidio's EMAIL_ADDRESS pattern, each match read by Presidio's own engine at the
    start RE2 finds for it.

    A backtracking `finditer` tries every position in turn and, at the first where the
    pattern can match, takes the match its order of alternatives gives. So the matches
    are: s = the leftmost position at or after the last match's end where the pattern
    matches at all; `regex`'s match anchored at s (which reads the character before s
    for `\\b`, as `finditer` does); and again from its end. Only "where can it match"
    is slow for `regex` (it walks a whole run for each start), and that question does
    not depend on the order of alternatives, so RE2 answers it with the pattern
    rewritten for existence:

    - `\\w` and the two local-part classes become the exact code-point sets `regex`
      matches under Presidio's flags (so IGNORECASE needs nothing more);
    - the leading `\\b` holds at s when the character before s (none at the start of
      the text) is not a word character and the one at s is, or the other way round;
      every character a match starts with is a word character or one of the local
      part's symbols, so the search reads the character before s too: at the text's
      start, `\\A` then a word character; elsewhere, a non-word character then a word
      character, or a word character then a symbol; the group after it is s;
    - the trailing `\\b` is dropped: a match's domain ends with `\\w+`, which can
      always grow to the end of its word, where `\\b` holds; this needs `\\b`'s word
      characters to be `\\w`'s, which tests/test_re2_patterns.py checks for the
      installed `regex` (read at run time it would cost each worker 0.6 s).

    The local part cannot hold "@" and a match holds one, so each anchored match reads
    at most the stretch up to its "@" and its domain: linear in the text.
    """

    def __init__(self, pattern: str, flags: int) -> None:
        import regex

        if pattern != EMAIL_PATTERN:
            raise ValueError("not the EMAIL_ADDRESS pattern this finder was derived for")
        words = _ranges_of(r"\w", flags)
        # The classes' other characters (found among the symbols they name, in one scan):
        # which of them each class matches is asked of `regex` itself.
        others = [chr(point) for point in _points(_ranges_of(_SYMBOLS, flags))
                  if not _holds(words, point)]
        symbols = [ord(ch) for ch in others if regex.fullmatch(_LOCAL, ch, flags=flags)]
        dots = [ord(ch) for ch in others if regex.fullmatch(_LOCAL_OR_DOT, ch, flags=flags)]
        word = _format(words)
        local = _format(_as_ranges(symbols, adding=words))
        rest = (f"(?:[{_format(_as_ranges(dots, adding=words))}]*[{local}])?@[{word}]+"
                f"(?:-+[{word}]+)*(?:\\.[{word}]+(?:-+[{word}]+)*)+")
        self._at_text_start = compile_re2(f"[{word}]{rest}", max_length=1 << 22)
        self._elsewhere = compile_re2(
            f"[^{word}]([{word}]){rest}|[{word}]([{_format(_as_ranges(symbols))}]){rest}",
            max_length=1 << 22)
        self._exact = regex.compile(pattern, flags=flags)
        list(self.finditer("warm a@b.co"))  # RE2 builds its automaton lazily: ~18 ms, here

    def finditer(self, text: str, timeout: float | None = None) -> Iterator[Any]:
        # RE2 reads UTF-8, which cannot carry a lone surrogate; U+FFFD stands in for it
        # (one character for one, and like it neither a word nor a local-part character).
        encoded = Utf8Text(well_formed(text))
        position = 0
        while position < len(text):
            start = self._next_start(encoded, position)
            if start is None:
                return
            found = self._exact.match(text, start, timeout=timeout)
            if found is None:  # RE2 and regex disagree: regex has the last word, move on
                position = start + 1
                continue
            yield found
            position = max(found.end(), start + 1)

    def _next_start(self, encoded: Utf8Text, position: int) -> int | None:
        """The leftmost position >= `position` where the pattern matches."""
        if position == 0 and self._at_text_start.match(encoded.data, 0) is not None:
            return 0
        # The character before the start is part of the search (see the class docstring).
        found = self._elsewhere.search(encoded.data, encoded.to_byte(max(position - 1, 0)))
        if found is None:
            return None
        byte = found.start(1) if found.start(1) >= 0 else found.start(2)
        return encoded.to_char(byte)


def match_with_re2(recognizer: Any) -> bool:
    """Have `recognizer` (a Presidio PatternRecognizer) match its patterns with RE2;
    False, leaving it untouched, when one of them is not one this module can translate
    (the caller then refuses to start: the slow engine is not an option to fall back to)."""
    try:
        finders: list[Re2Finder | StartsOnRe2] = [
            StartsOnRe2(pattern.regex, recognizer.global_regex_flags)
            if type(recognizer).__name__ == "EmailRecognizer" else Re2Finder(pattern.regex)
            for pattern in recognizer.patterns]
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
    _refuse_other_flags(recognizer)
    return True


def _refuse_other_flags(recognizer: Any) -> None:
    """Make `recognizer.analyze` refuse `regex_flags` other than its own.

    Called with other flags, Presidio compiles the pattern again on its backtracking
    engine and keeps that for every later call: the slow engine back for good, silently
    (outside trial 11: one call with IGNORECASE alone, then `"=0" * 4000 + "@9"` took
    7 s again). The sidecar never passes them; whoever does is told at once."""
    analyze = recognizer.analyze
    flags = recognizer.global_regex_flags

    def analyze_on_re2(text: str, entities: list[str], nlp_artifacts: Any = None,
                       regex_flags: int | None = None) -> Any:
        if regex_flags is not None and regex_flags != flags:
            raise ValueError("this recognizer's patterns run on RE2, checked for its own "
                             "flags only (sidecar.pii.re2_patterns)")
        return analyze(text, entities, nlp_artifacts)

    recognizer.analyze = analyze_on_re2
