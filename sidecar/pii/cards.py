"""CREDIT_CARD with the separators Presidio's card pattern misses.

Why: Presidio's CreditCardRecognizer allows a space or a hyphen between digit groups.
Card numbers are also written `4111.1111.1111.1111`, `4111/1111/1111/1111`, or with a
no-break space (U+00A0, U+202F, U+2009) that word processors and web forms insert --
a text pasted from them keeps it, and the number then went through in the clear.

A candidate is four digit groups or more (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners
4-6-4) joined by one of `.`, `/`, a no-break or thin space, a space or a hyphen, the
same separator throughout; its 13-19 digits must start like a card (an issuer
prefix: 2-6) and pass the Luhn checksum, as Presidio's own validation requires. Score
1.0 like Presidio's validated cards: the checksum is what makes it a card number.

One RE2 scan over the text, constant work per candidate: linear time.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from sidecar.pii.finder import Span
from sidecar.regex import compile_re2

ENTITY = "CREDIT_CARD"
NAME = "SeparatedCardRecognizer"
_S = r"[./ \-\x{a0}\x{202f}\x{2009}]"
_CANDIDATE = rf"\d{{4}}{_S}\d{{4,6}}{_S}\d{{4,5}}(?:{_S}\d{{1,4}}){{0,2}}"
_SEPARATORS = re.compile(r"\D")
# Two groups of four digits around one separator: without it no candidate can match, and
# one C-level search is cheaper than handing the text to RE2 (which encodes it first).
_PREFILTER = re.compile(r"\d{4}\D\d{4}")


@functools.cache
def _pattern() -> Any:
    return compile_re2(_CANDIDATE)


def luhn(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def find(text: str) -> list[Span]:
    """(start, end, score, pattern) of separated card numbers that pass Luhn."""
    found: list[Span] = []
    if not _PREFILTER.search(text):
        return found
    for match in _pattern().finditer(text):
        start, end = match.span()
        if (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "./-")) or \
                (end < len(text) and (text[end].isalnum()
                                      or (text[end] in "./-" and text[end + 1:end + 2].isdigit()))):
            continue
        value = match.group()
        if len(set(_SEPARATORS.findall(value))) != 1:
            continue  # one separator throughout: "2024-01-05 1234" is not a card
        digits = _SEPARATORS.sub("", value)
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn(digits):
            found.append((start, end, 1.0, "separated card number"))
    return found
