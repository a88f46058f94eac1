"""The text as PII detectors should read it: without the disguises that hide a value.

Presidio's recognizers and our finders match ASCII shapes (`4111 1111 1111 1111`,
`jane@example.org`, `DE89 3704 ...`). One character a reader never sees, or a digit
from another block, hides a value from them while the value stays usable to whoever
reads the text (a model, a person, a JSON parser):

- characters that render as nothing (sidecar.content.normalize.renders_as_nothing:
  format characters such as zero-width spaces, joiners, the soft hyphen and bidi
  controls; control characters that are not whitespace; variation selectors, Hangul
  fillers, the blank Braille pattern), dropped; and combining marks (the diacritical
  blocks) on a character that is or reads as ASCII (`4\u0332`), dropped;
- digits of any script (fullwidth U+FF14, Arabic-Indic U+0664, mathematical U+1D7D2),
  read as the ASCII digit; every dash and the minus sign as `-`; ideographic and Arabic
  decimal stops as `.`; letters, punctuation and symbols whose compatibility form is
  one ASCII character (fullwidth U+FF20 for `@`, small forms, mathematical letters);
- JSON's `\\uXXXX` escapes (a tool call's arguments carry `jane\\u0040example.org`),
  decoded when their backslash is not itself escaped (surrogate pairs too).

Left as they are, because reading them as ASCII made ordinary text lose words or hid
values (trial 20): super- and subscript and circled digits (a footnote `¹` after a card
number would join it), and the spaces that write thousands (French writes
`1\u202f234\u202f567\u202f890 €`: no phone number); ideographic and em spaces read as a
space (a card typed in full-width mode: trial 21).

`undisguise` returns None when the text holds none of these (ASCII text costs three C
scans, other text one regex scan), else the reading and a map from its offsets to the
text's, so findings land on the characters the app sent: a span covers the disguise
inside it.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    """`text` as detectors read it; `marks` map its offsets back (see `span`)."""

    text: str
    # (offset in `text`, start and end in the original, length of what it reads as)
    # for every disguise, in order.
    marks: tuple[tuple[int, int, int, int], ...]
    # (start, end) in the original of each combining mark read as nothing: one right
    # after a span belongs to its last character.
    attached: tuple[tuple[int, int], ...] = ()

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of text[start:end] (end > start): it covers every disguise
        inside, the whole of a disguise it reaches into, and the combining marks on its
        last character (one must not dangle after the placeholder: trial 20; other
        characters read as nothing stay outside, such as the bidi control that closes
        an override around the value)."""
        stop = self._position(end - 1, True)
        while stop in self._dropped_at:
            stop = self._dropped_at[stop]
        return self._position(start, False), stop

    @functools.cached_property
    def _starts(self) -> list[int]:
        return [mark[0] for mark in self.marks]

    @functools.cached_property
    def _dropped_at(self) -> dict[int, int]:
        """Original start -> end of each combining mark read as nothing."""
        return dict(self.attached)

    def _position(self, offset: int, end: bool) -> int:
        """Where the character at `offset` starts in the original (or, with `end`, where
        it ends)."""
        index = bisect.bisect_right(self._starts, offset) - 1
        if index < 0:
            return offset + end
        at, original_start, original_end, length = self.marks[index]
        if offset < at + length:  # a character some disguise reads as
            return original_end if end else original_start
        return original_end + (offset - at - length) + end


# Spaces that write thousands (no-break, narrow no-break, thin, figure, punctuation
# space): read as a space they would make French and SI numbers phone numbers.
_THOUSANDS_SEPARATORS = frozenset("\u00a0\u202f\u2009\u2007\u2008")


@functools.cache
def _table() -> dict[str, str]:
    """What each disguising character reads as ("" for nothing): invisible characters
    (sidecar.content.normalize's set: format and control characters, variation
    selectors, Hangul fillers, the blank Braille pattern...); every dash and the minus
    sign as `-`; ideographic full stops as `.`; a decimal digit of another script as
    that digit; and a letter, punctuation or symbol whose compatibility form (NFKC) is
    one printable ASCII character (fullwidth and small forms, mathematical letters).
    Left as they are (trial 20): super- and subscript and circled digits (category No:
    a footnote mark `¹` after a card number would join it, 17 digits, no card), and
    the spaces that write thousands (_THOUSANDS_SEPARATORS: French writes
    `1\u202f234\u202f567\u202f890 €`, which would read as a phone number); other spaces
    (ideographic, em) read as a space. Planes
    0, 1 and 14 only (~60 ms once a process: sidecar.pii.warm)."""
    from sidecar.content.normalize import renders_as_nothing

    table: dict[str, str] = {}
    for code in itertools.chain(range(0x20000), range(0xE0000, 0xE1000)):
        char = chr(code)
        category = unicodedata.category(char)
        if renders_as_nothing(char):
            table[char] = ""
        elif char.isascii() or category == "No" or char in _THOUSANDS_SEPARATORS:
            continue
        elif category == "Zs":
            table[char] = " "  # an ideographic or em space between a card's groups
        elif category == "Pd" or char in "\u2212\u30fb\uff65":
            table[char] = "-"
        elif char in "\u3002\uff61\u066b":  # ideographic, halfwidth, Arabic decimal
            table[char] = "."
        elif category == "Nd":
            table[char] = str(unicodedata.decimal(char))
        else:
            folded = unicodedata.normalize("NFKC", char)
            if len(folded) == 1 and folded.isascii() and folded.isprintable():
                table[char] = folded
    return table


# Combining marks any script may carry (diacritical mark blocks, not a script's own
# vowel signs): on an ASCII character they disguise it (`4\u0332`, `e\u0301`).
_GENERIC_MARKS = ((0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF),
                  (0xFE20, 0xFE2F))
_ESCAPE = (r"(?<!\\)(?:\\\\)*(?P<escape>\\u[dD][89abAB][0-9a-fA-F]{2}"
           r"\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4})")


@functools.cache
def _pattern(escapes: bool, astral: bool = True) -> re.Pattern[str]:
    """Every disguising character, as ONE class of ranges (alternatives or `\\d` tried
    at each position cost 3-4x more on non-ASCII text); with `escapes` (only for texts
    holding `\\u`), also a `\\uXXXX` escape whose backslash is not itself escaped
    (`\\\\u0040` is a backslash and the text `u0040`). Without `astral` (a text with
    no character beyond U+FFFF), the class keeps to the BMP: Python's `re` then tests a
    bitmap, not a list of ranges (1 KB of accented prose: ~40 against ~120 us)."""
    codes = {*map(ord, _table()), *(code for low, high in _GENERIC_MARKS
                                   for code in range(low, high + 1))}
    members = f"[{_members(_runs(sorted(c for c in codes if astral or c <= 0xFFFF)))}]"
    return re.compile(f"{members}|{_ESCAPE}" if escapes else members)


def _runs(codes: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return ranges


def _members(ranges: list[tuple[int, int]]) -> str:
    return "".join(re.escape(chr(low)) if low == high
                   else f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in ranges)


def _reads_as(disguise: str) -> str:
    if disguise.startswith("\\u"):
        units = [int(disguise[i + 2:i + 6], 16) for i in range(0, len(disguise), 6)]
        if len(units) == 2:
            char = chr(0x10000 + ((units[0] - 0xD800) << 10) + (units[1] - 0xDC00))
        elif 0xD800 <= units[0] <= 0xDFFF:
            return disguise  # a lone surrogate reads as nothing better: keep it
        else:
            char = chr(units[0])
        return _table().get(char, char)
    return _table().get(disguise, "")  # "": a generic mark (see undisguise)


def undisguise(text: str) -> Reading | None:
    """The reading of `text` for detectors, or None when it is the text itself."""
    if text.isascii() and "\\u" not in text and not _ASCII_HIDDEN.search(text):
        return None
    pieces: list[str] = []
    marks: list[tuple[int, int, int, int]] = []
    length = last = 0
    escapes = "\\u" in text
    run_end, base_ascii = -1, False  # the run of marks and invisible characters so far
    attached: list[tuple[int, int]] = []
    for match in _pattern(escapes, max(text) > "\uffff").finditer(text):
        # An escape's match starts with the escaped backslashes before it (`\\\\`),
        # which read as themselves.
        start, end = match.span("escape") if escapes and match.group("escape") \
            else match.span()
        disguise = text[start:end]
        mark = disguise not in _table() and len(disguise) == 1  # a generic mark
        if mark or _table().get(disguise) == "":
            # Marks and invisible characters come in runs; what the run sits on is
            # looked at once (walking back from every mark made `ж` and 40,000 marks
            # take 79 s: trial 20).
            if start != run_end:
                base_ascii = start > 0 and (text[start - 1].isascii()
                                            or bool(_table().get(text[start - 1])))
            run_end = end
            if mark and not base_ascii:
                continue  # a generic mark on a letter of another script: part of it
            if mark:
                attached.append((start, end))
        reading = _reads_as(disguise)
        if reading == disguise:
            continue
        pieces.append(text[last:start])
        length += start - last
        marks.append((length, start, end, len(reading)))
        pieces.append(reading)
        length += len(reading)
        last = end
    if not marks:
        return None
    pieces.append(text[last:])
    return Reading("".join(pieces), tuple(marks), tuple(attached))


_ASCII_HIDDEN = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")

