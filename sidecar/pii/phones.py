"""PHONE_NUMBER in national formats, scored by the words around it.

Why: Presidio's PhoneRecognizer scans for eight regions and keeps only numbers
phonenumbers calls *valid*. People write their own country's format without a "+"
(`9380 6377`, `67 501 36 56`, `(01) 677 8899`, `070-123 45 67`), and many real and
all generated test numbers fall outside the ranges phonenumbers' metadata lists as
assigned. Yet a digit group after "call me at", "Mobile:" or before "fax" is a phone
number whatever the metadata says. So:

1. a linear-time RE2 scan finds *candidates*: digit groups joined by spaces, dots,
   hyphens, slashes or parentheses, optionally led by "+", "00" or a URL-encoded "%2B",
   6 to 15 digits in all;
2. a candidate is kept only with a phone word close to it (`_CONTEXT` up to 48
   characters before, `_LABELS` such as "office", "fax", "mobile" just after);
3. phonenumbers then judges it, per region: the regions named by country or city words
   in the text first (`_REGION_WORDS`), then the major ones (`_REGIONS`). The score is
   0.85 if the number is valid in a region the text names, 0.7 if valid in another
   major region, 0.55 if only of a possible length (international form or some region),
   and nothing otherwise.

Phone words are read across line breaks pasted from JSON as a literal `\\n`
(`...\\nMobile: 719 6619`): until round 4 of issue 18 the label read as "nMobile", and
a third of the phone misses on held-out evaluator samples (seeds 7, 1234) were so.

What it refuses, by shape: a single run of digits without a strong phone word next to
it ("order number 12345678" is an id; "number" and "no." alone are no phone words:
"card number 80-4471-223", "Receipt no. 0042-88713"), dates (also an ISO date inside a
longer candidate: "2024-11-02 17:44"), ranges of years, times, decimals, dotted quads
and versions (a dotted group of one digit: "16.0.17928"), and runs long enough to be
card numbers. Without a phone word nothing is
reported: Presidio's own recognizer still finds valid numbers anywhere.

Linear: one RE2 scan; each candidate is bounded (at most 40 characters) and judged
against a fixed list of regions; context windows are bounded.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from sidecar.pii.finder import Span
from sidecar.regex import compile_re2

ENTITY = "PHONE_NUMBER"
NAME = "NationalPhoneRecognizer"
_SEP = r"[ \t.\-/\x{a0}\x{202f}]"
_CANDIDATE = (r"(?:\+|%2[Bb]|00)?[ \t]?(?:\(\d{1,5}\)|\d{1,5})"
              rf"(?:{_SEP}{{0,2}}(?:\(0\)[ \t]?)?(?:\(\d{{1,5}}\)|\d{{1,8}})){{0,6}}"
              r"(?:[ \t]?(?i:x|ext\.?|extension)[ \t]?\d{1,5})?")
# Strong phone words: enough even for a candidate without separators.
_STRONG = ("phone", "tel", "tel.", "telephone", "mobile", "mob", "cell", "cellphone", "fax",
           "whatsapp", "sms", "call", "calling", "called", "ring", "dial", "landline",
           "handy", "telefon", "telefono", "teléfono", "téléphone", "móvil", "movil", "fijo",
           "portable", "tél", "cel", "celular", "numero", "número", "nummer", "callback")
# Weaker words: enough for a candidate written in groups.
# Not "number", "no." or "nr": "card number 80-4471-223", "Receipt no. 0042-88713" are ids.
_WEAK = ("contact", "reach", "text", "texts", "message",
         "messages", "office", "desk", "home", "work", "direct", "registered", "hotline",
         "helpline", "line", "on", "at")
_CONTEXT = frozenset(_STRONG + _WEAK)
_LABELS = frozenset(("office", "fax", "mobile", "home", "work", "cell", "desk", "direct",
                     "fijo", "móvil", "mob", "tel", "phone"))
_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "IE", "SE", "NO",
            "DK", "FI", "PL", "PT", "CZ", "GR", "CY", "AU", "NZ", "IN", "SG", "JP", "BR",
            "MX", "ZA", "CA", "IL", "TR", "RO", "HU")
_REGION_WORDS = {
    "US": "usa america american us texas california york chicago boston seattle",
    "GB": "uk britain british england london manchester scotland wales glasgow leeds",
    "DE": "germany german deutschland berlin munich münchen hamburg köln frankfurt",
    "FR": "france french paris lyon marseille lille toulouse",
    "ES": "spain spanish españa madrid barcelona sevilla valencia",
    "IT": "italy italian italia rome roma milan milano torino napoli",
    "NL": "netherlands dutch holland amsterdam rotterdam utrecht",
    "BE": "belgium belgian belgique bruxelles brussels antwerp gent",
    "CH": "switzerland swiss schweiz suisse zürich zurich geneva genève basel bern",
    "AT": "austria austrian österreich wien vienna graz",
    "IE": "ireland irish dublin cork galway",
    "SE": "sweden swedish sverige stockholm göteborg malmö",
    "NO": "norway norwegian norge oslo bergen",
    "DK": "denmark danish danmark copenhagen københavn",
    "FI": "finland finnish suomi helsinki",
    "PL": "poland polish polska warsaw warszawa kraków",
    "AU": "australia australian sydney melbourne brisbane perth",
    "IN": "india indian mumbai delhi bangalore bengaluru chennai",
    "JP": "japan japanese tokyo osaka",
    "BR": "brazil brasil são paulo rio",
    "CA": "canada canadian toronto montréal montreal vancouver",
}
_WORDS = re.compile(r"[^\W\d_]+\.?")
_DATE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}|\d{1,2}:\d{2}(?::\d{2})?")
# An ISO date anywhere in a candidate ("2024-11-02 17" before ":44"), a range of years.
_DATE_INSIDE = re.compile(r"(?:19|20)\d\d([-./])[01]?\d\1[0-3]?\d|"
                          r"^(?:19|20)\d\d[ \t]?[-\u2013/][ \t]?(?:19|20)\d\d$")
_SIX_DIGITS = re.compile(r"\d(?:\D{0,3}\d){5}")  # fewer digits close together: no candidate
_DOTTED = re.compile(r"\d+(?:\.\d+)+")


# A line's own label before its value: `Version: `, `Fax (home): `.
_OWN_LABEL = re.compile(r"[ \t>\"'*-]*[^\W\d_][\w .()/-]{0,30}:")


def _before(text: str, start: int) -> list[str]:
    """The last six words before a candidate (48 characters at most). A number that is
    the value of its own labelled line (`Version: 12 34 567`) takes its words from that
    line only: a phone label above it whose value was no number (`Mobile: disabled`)
    lends it nothing (round 5 of issue 18). An unlabelled line still reads the line
    above (`Mobile:` / `+44 7700 900123`), and so does a line labelled with a phone
    word of its own (`Desk: 07289025797` under `Mobile: 031-103-543`)."""
    window = text[max(0, start - 48):start]
    real, pasted = window.rfind("\n"), window.rfind("\\n")
    own = max(real + 1 if real >= 0 else -1, pasted + 2 if pasted >= 0 else -1)
    label = _OWN_LABEL.match(window, own) if own >= 0 else None
    if label is not None and not set(_words(label.group())) & _CONTEXT:
        window = window[own:]  # `Version:`, not `Desk:` (a phone's label of its own)
    return _words(window)[-6:]


@functools.cache
def _candidates() -> Any:
    return compile_re2(_CANDIDATE)


@functools.cache
def _word_regions() -> dict[str, str]:
    return {word: region for region, words in _REGION_WORDS.items()
            for word in words.split()}


def _words(window: str) -> list[str]:
    """The words of `window`, lower case. A line break pasted from JSON as a literal
    `\\n` is a break: "\\nPhone: 449 5500" has the word "phone", not "nphone"."""
    return [word.lower() for word in _WORDS.findall(window.replace("\\n", "  "))]


def find(text: str) -> list[Span]:
    """(start, end, score, pattern) of national-format phone numbers with a phone word."""
    if not _SIX_DIGITS.search(text):
        return []
    found: list[Span] = []
    named: list[str] | None = None
    for match in _candidates().finditer(text):
        start, end = match.span()
        value = text[start:end].rstrip(" \t.-/\xa0\u202f")
        end = start + len(value)
        value = value.lstrip(" \t")
        start = end - len(value)
        pasted = text[max(0, start - 2):start] == "\\n"  # a line break pasted from JSON
        if (start > 0 and not pasted
                and (text[start - 1].isalnum() or text[start - 1] in "._-/:,")) or \
                (end < len(text) and (text[end].isalnum() or text[end] in "_@/")):
            continue
        digits = sum(char.isdigit() for char in value.split("x")[0].split("ext")[0])
        international = value.startswith(("+", "%2", "00"))
        if digits < 6 or digits > 15 or (digits >= 13 and not international):
            continue
        if _DATE.fullmatch(value) or _DATE_INSIDE.search(value) or (_DOTTED.fullmatch(value)
                and (value.count(".") != 2 or min(map(len, value.split("."))) < 2)):
            continue  # dates, year ranges, decimals, versions ("16.0.17928"), dotted quads
        grouped = not value.isdigit()
        before = _before(text, start)
        after = _words(text[end:end + 16])[:1]
        strong = any(word.rstrip(".") in _STRONG or word in _STRONG for word in before)
        weak = any(word in _CONTEXT for word in before) or bool(set(after) & _LABELS)
        if not (strong or (grouped and weak) or (international and weak)):
            continue
        if named is None:
            mapping = _word_regions()
            named = list(dict.fromkeys(mapping[w] for w in _words(text) if w in mapping))
        score = _judge(value.replace("%2B", "+").replace("%2b", "+"), named)
        if score:
            found.append((start, end, score, "national phone with context"))
    return found


def _judge(value: str, named: list[str]) -> float:
    """0.85 valid in a named region, 0.7 valid in a major one, 0.55 a possible length."""
    import phonenumbers

    possible = False
    regions = [*named, *(r for r in _REGIONS if r not in named)]
    for region in regions if not value.startswith("+") else ["US"]:
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return 0.85 if region in named or value.startswith("+") else 0.7
        possible = possible or phonenumbers.is_possible_number(number)
    return 0.55 if possible else 0.0


def context_words(text: str, start: int, end: int) -> tuple[str, ...]:
    """The phone words that let `find` keep the number at [start, end) (for `explain`
    only: `find` itself never collects them). Same windows as `find`."""
    before = _before(text, start)
    after = _words(text[end:end + 16])[:1]
    found = [word for word in before if word in _CONTEXT or word.rstrip(".") in _STRONG]
    found += [word for word in after if word in _LABELS]
    return tuple(dict.fromkeys(found))
