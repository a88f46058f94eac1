"""The text as PII detectors should read it: without the disguises that hide a value.

Presidio's recognizers and our finders match ASCII shapes (`4111 1111 1111 1111`,
`jane@example.org`, `DE89 3704 ...`). One character a reader never sees, or a digit
from another block, hides a value from them while the value stays usable to whoever
reads the text (a model, a person, a JSON parser):

- characters that render as nothing: format characters (Cf: zero-width spaces and
  joiners, the soft hyphen, the word joiner, bidi controls, tag characters) and control
  characters that are not whitespace (NUL, ESC, DEL, C1 controls), dropped;
- digits of any script (fullwidth U+FF14, Arabic-Indic U+0664, mathematical U+1D7D2),
  read as the ASCII digit; fullwidth ASCII forms (U+FF20 for `@`) and the ideographic
  space, read as their ASCII form;
- JSON's `\\uXXXX` escapes (a tool call's arguments carry `jane\\u0040example.org`),
  decoded (surrogate pairs too; an escape of an invisible character is dropped).

`undisguise` returns None when the text holds none of these (the common case costs one
regex scan), else the reading and a map from its offsets to the text's, so findings
land on the characters the app sent: a span covers the disguise inside it.
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

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of text[start:end] (end > start): it covers every disguise
        inside, and the whole of a disguise it reaches into."""
        return self._position(start, False), self._position(end - 1, True)

    @functools.cached_property
    def _starts(self) -> list[int]:
        return [mark[0] for mark in self.marks]

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


@functools.cache
def _pattern() -> re.Pattern[str]:
    """Every disguise, as one character class of ranges (a class of single characters, or
    `\\d` tried at each position, costs 3-4x more on non-ASCII text) or an escape."""
    # Format characters and other scripts' digits live in planes 0, 1 and 14 only (~50 ms
    # to list, once a process: sidecar.pii.warm).
    codes = [code for code in itertools.chain(range(0x20000), range(0xE0000, 0xE1000))
             if _hidden(chr(code)) or (code > 0x7F and unicodedata.category(chr(code)) == "Nd")]
    codes += [*range(0xFF01, 0xFF5F), 0x3000]
    ranges: list[tuple[int, int]] = []
    for code in sorted(set(codes)):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    members = "".join(re.escape(chr(low)) if low == high
                      else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
                      for low, high in ranges)
    return re.compile(f"[{members}]"
                      r"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
                      r"|\\u[0-9a-fA-F]{4}")


def _reads_as(disguise: str) -> str:
    if disguise.startswith("\\u"):
        units = [int(disguise[i + 2:i + 6], 16) for i in range(0, len(disguise), 6)]
        if len(units) == 2:
            char = chr(0x10000 + ((units[0] - 0xD800) << 10) + (units[1] - 0xDC00))
        elif 0xD800 <= units[0] <= 0xDFFF:
            return disguise  # a lone surrogate reads as nothing better: keep it
        else:
            char = chr(units[0])
        return "" if _hidden(char) else _plain(char)
    return "" if _hidden(disguise) else _plain(disguise)


def _hidden(char: str) -> bool:
    category = unicodedata.category(char)
    return category == "Cf" or (category == "Cc" and not char.isspace())


def _plain(char: str) -> str:
    code = ord(char)
    if 0xFF01 <= code <= 0xFF5E:
        return chr(code - 0xFEE0)
    if code == 0x3000:
        return " "
    if not char.isascii() and unicodedata.category(char) == "Nd":
        return str(unicodedata.decimal(char))
    return char


def undisguise(text: str) -> Reading | None:
    """The reading of `text` for detectors, or None when it is the text itself."""
    if text.isascii() and "\\u" not in text and not _ASCII_HIDDEN.search(text):
        return None
    pieces: list[str] = []
    marks: list[tuple[int, int, int, int]] = []
    length = last = 0
    for match in _pattern().finditer(text):
        start, end = match.span()
        reading = _reads_as(match.group())
        if reading == match.group():
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
    return Reading("".join(pieces), tuple(marks))


_ASCII_HIDDEN = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
