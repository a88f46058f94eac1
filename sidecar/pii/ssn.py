"""US_SSN written as nine digits without separators, next to a word that names it.

Why: Presidio's UsSsnRecognizer finds `123-45-6789` and friends; nine bare digits it
scores so low (0.05) that a policy's threshold drops them, because nine digits are as
often an order id, a zip+4 or an account number. Next to "SSN", "social security"
or "SS#" they are a social security number, and a leaked one is the worst kind.

So: nine digits (contiguous, or grouped 3-2-4 with spaces or dots, which Presidio's
patterns also miss), not part of a longer number, that pass the SSA's rules for
numbers ever issued (area not 000, 666 or 9xx; group not 00; serial not 0000), with a
naming word within `_WINDOW` characters before them (or within a few characters after,
"123456789 (SSN)"). Score 0.85 -- above the default policy's 0.5 for US_SSN, since the
naming word is what Presidio's context boost would have supplied. Without a naming
word nothing is reported.

One RE2 scan; each context window is bounded: linear time.
"""

from __future__ import annotations

import functools
from typing import Any

from sidecar.pii.finder import Span
from sidecar.regex import compile_re2

ENTITY = "US_SSN"
NAME = "BareSsnRecognizer"
_WINDOW = 40
_NAMING = ("ssn", "ss#", "ss #", "ss no", "social security", "soc sec", "soc. sec",
           "social sec", "tin/ssn", "ssn/tin", "sozialversicherungsnummer")
_CANDIDATE = r"\d{9}|\d{3}[ .]\d{2}[ .]\d{4}"


@functools.cache
def _pattern() -> Any:
    return compile_re2(_CANDIDATE)


def issued(digits: str) -> bool:
    """The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" \
        and serial != "0000"


def find(text: str) -> list[Span]:
    """(start, end, score, pattern) of bare SSNs with a naming word next to them."""
    lowered = text.lower()
    if not any(word in lowered for word in ("ss", "social", "soc")):
        return []
    found: list[Span] = []
    for match in _pattern().finditer(text):
        start, end = match.span()
        if (start > 0 and (text[start - 1].isdigit() or text[start - 1] in "-.")) or \
                (end < len(text) and (text[end].isalnum() or text[end] == "-"
                                      or (text[end] == "." and text[end + 1:end + 2].isdigit()))):
            continue
        value = match.group()
        digits = value.replace(" ", "").replace(".", "")
        if value[3:4] == "." and value[6:7] != ".":
            continue  # mixed separators are not an SSN's grouping
        if not issued(digits):
            continue
        window = lowered[max(0, start - _WINDOW):start] + " " + lowered[end:end + 12]
        if any(word in window for word in _NAMING):
            found.append((start, end, 0.85, "nine digits named as an SSN"))
    return found


def context_words(text: str, start: int, end: int) -> tuple[str, ...]:
    """The naming words that let `find` keep the SSN at [start, end) (for `explain`
    only). Same window as `find`."""
    lowered = text.lower()
    window = lowered[max(0, start - _WINDOW):start] + " " + lowered[end:end + 12]
    return tuple(word for word in _NAMING if word in window)
