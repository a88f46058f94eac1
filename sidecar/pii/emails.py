"""EMAIL_ADDRESS written to dodge scrapers, or on a domain that is not public.

Why: Presidio's EmailRecognizer wants a literal "@" and a top-level domain from the
public suffix list. People write `jane[at]example[dot]com`, `jane (at) example (dot)
com` or `jane dot doe at gmail dot com` precisely so that a machine does not read the
address -- it is still theirs -- and company addresses live on private domains
(`jane@acme.internal`, `ops@build.corp`, `bob@fileserver.lan`).

Three shapes, each RE2 (linear time):

- `@`-form on any domain: a local part, "@", dot-separated labels, the last one
  alphabetic (2-24 letters). Score 0.8 (Presidio scores public ones 1.0 and both
  findings then overlap harmlessly).
- bracketed: "at" and "dot" inside (), [], {} or <>, or "@" with a bracketed dot:
  `jane[at]example[dot]com`, `jane(at)example.com`. Score 0.85: nobody brackets
  "at" for anything else.
- spelled out: `jane dot doe at gmail dot com`. Words joined by " dot ", then " at ",
  then a domain of at least two labels joined by " dot ", the last one a common
  top-level domain (`_TLDS`). Score 0.6. Prose such as "look at this dot com bubble"
  is refused by requiring that no word be a function word (`_FUNCTION`).
"""

from __future__ import annotations

import functools
from typing import Any

from sidecar.pii.finder import Span
from sidecar.regex import compile_re2

ENTITY = "EMAIL_ADDRESS"
NAME = "ObfuscatedEmailRecognizer"
_LOCAL = r"[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_AT = r"(?:[ \t]*[\[({<][ \t]*(?i:at)[ \t]*[\])}>][ \t]*|[ \t]*@[ \t]*)"
_DOT = r"(?:[ \t]*[\[({<][ \t]*(?i:dot)[ \t]*[\])}>][ \t]*|\.)"
_TLDS = ("com org net edu gov mil int io co uk de fr es it nl be ch at se no dk fi pl pt "
         "ie eu us ca au nz in jp cn br mx ru info biz me tv app dev ai")
_FUNCTION = frozenset([
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "is", "are", "was",
    "be", "to", "of", "in", "on", "at", "for", "by", "with", "and", "or", "but", "not", "my",
    "your", "our", "their", "his", "her", "me", "you", "we", "they", "he", "she", "i",
    "look", "looking"])
_PLAIN = rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,24}}"
_BRACKETED = rf"{_LOCAL}{_AT}{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}[A-Za-z]{{2,24}}"
_W = r"[A-Za-z0-9][A-Za-z0-9_\-]{0,40}"
_SPELLED = (rf"{_W}(?:[ \t]+(?i:dot)[ \t]+{_W}){{0,3}}[ \t]+(?i:at)[ \t]+{_W}"
            rf"(?:[ \t]+(?i:dot)[ \t]+{_W}){{0,3}}[ \t]+(?i:dot)[ \t]+"
            rf"(?i:{_TLDS.replace(' ', '|')})")


@functools.cache
def _patterns() -> tuple[Any, Any, Any]:
    return compile_re2(_PLAIN), compile_re2(_BRACKETED), compile_re2(_SPELLED)


def _bounded(text: str, start: int, end: int) -> bool:
    return not (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._%+-")) \
        and not (end < len(text) and (text[end].isalnum() or text[end] in "_-"))


def find(text: str) -> list[Span]:
    """(start, end, score, pattern) of e-mail addresses Presidio's pattern misses."""
    lowered = text.lower()
    if "@" not in text and " at " not in lowered and "at]" not in lowered \
            and "at)" not in lowered and "at}" not in lowered and "at>" not in lowered:
        return []
    plain, bracketed, spelled = _patterns()
    found: list[Span] = []
    if "@" in text:
        found.extend((m.start(), m.end(), 0.8, "e-mail on any domain")
                     for m in plain.finditer(text) if _bounded(text, m.start(), m.end()))
    for m in bracketed.finditer(text):
        value = m.group()
        if ("[" in value or "(" in value or "{" in value or "<" in value) and \
                _bounded(text, m.start(), m.end()):
            found.append((m.start(), m.end(), 0.85, "bracketed e-mail"))
    if " at " in lowered or "\tat\t" in lowered:
        for m in spelled.finditer(text):
            words = m.group().lower().split()
            if _bounded(text, m.start(), m.end()) and not any(
                    word in _FUNCTION for word in words if word not in ("dot", "at")):
                found.append((m.start(), m.end(), 0.6, "spelled-out e-mail"))
    return found
