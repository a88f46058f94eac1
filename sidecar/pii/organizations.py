"""ORGANIZATION names that end in a legal form (`Thyrocare Technologies Ltd`, `Seven Oaks
Acquisition Corp.`, `Fred. Olsen Energy ASA`, `Britvic Plc`).

Why: the NER model finds organisations by how sentences around them read, so it misses
most of those on a line of their own (signatures, address blocks), in capitals, or with
words it does not know; it often keeps only part of the name (`Syntex Ltd` for `AYM
Syntex Ltd`) or runs a person's name on the line before into it. A legal form is what
says "this is a company" whatever the sentence: `Ltd`, `Inc.`, `PLC`, `GmbH`, `S.A.`,
`ASA`, `Oyj`, `Pty`, and the like, also glued to the last word (`HOLDINGSInc.`).

A finding is the legal form and the words before it that can be part of a name: those
that start with a capital or a digit, and the connectors `&`, `-`, `of`, `and`, `de`
between them; at most eight words, never across a line break, a comma, a colon or a
sentence end, and without a leading article or greeting (`The`, `Dear`, `at`). `Co` counts
only as `Co.` or `& Co` (`Denver CO` is a state), and a legal form alone is nothing.
Weaker endings that also name other things (`Group`, `Holdings`, `Trust`, `Fund`,
`Bancorp`) score lower (0.55) than legal forms (0.7).

One regular-expression pass over the words, and a walk back of at most eight words from
each legal form (a finding takes at most two more forms after its first): linear time.
"""

from __future__ import annotations

import re

from sidecar.pii.finder import Span

ENTITY = "ORGANIZATION"
NAME = "LegalFormOrganizationRecognizer"
_LEGAL = frozenset((
    "ltd", "limited", "inc", "incorporated", "corp", "corporation", "plc", "llc", "llp",
    "l.l.c", "gmbh", "ag", "a.g", "sa", "s.a", "spa", "s.p.a", "nv", "n.v", "bv", "b.v",
    "asa", "oyj", "oy", "pty", "sarl", "s.a.r.l", "srl", "s.r.l", "ltda", "bhd", "tbk",
    "kgaa", "co.ltd", "co.,ltd", "hf", "ehf", "a/s", "aps", "kft", "zrt", "sdn", "s.l",
    "sl", "lp", "l.p", "company"))
_WEAK = frozenset(("group", "holdings", "trust", "fund", "bancorp", "bancorporation"))
_GLUED = re.compile(r"^(?P<name>[A-Z][A-Z&]{2,})(?P<form>Inc\.?|INC\.?|Ltd\.?|LTD\.?)$")
# Words: runs of non-space, also split at a literal "\\n" (texts pasted from JSON).
_WORD = re.compile(r"(?:(?!\\n)\S)+")
_ALNUM = re.compile(r"[^\W_]")
# Not "of" or "and": "Ross Marin of AYM Syntex Ltd", "Acme and Globex Ltd".
_CONNECTORS = frozenset(("&", "-", "+", "de", "du", "la", "der", "von", "van"))
_LEADING = frozenset((
    "the", "a", "an", "at", "in", "on", "for", "from", "with", "by", "to", "of", "and",
    "dear", "hi", "hello", "hey", "contact", "email", "call", "our", "my", "your", "this",
    "that", "these", "those", "thanks", "via", "per", "cc", "re", "fwd", "attn"))
_MAX_WORDS = 8
# Every legal form as a whole word (after a space, the start, or a literal "\\n"), and the
# glued `...Inc.`: a text without any is not tokenized at all.
_PREFILTER = re.compile(
    r"(?i:inc|ltd|(?:(?<![^\W_])|(?<=\\n))(?:"
    + "|".join(re.escape(form) for form in sorted(_LEGAL | _WEAK | {"co"}, key=len,
                                                  reverse=True))
    + r")(?![^\W_]))")


def _form(word: str, before: str) -> tuple[float, str] | None:
    """(score, word without trailing punctuation) when `word` ends a company name."""
    bare = word.rstrip(",;:!?)\"'").removesuffix("'s").removesuffix("\u2019s")
    while bare.endswith(".."):
        bare = bare[:-1]
    key = bare.casefold().rstrip(".")
    if key in _LEGAL:
        return 0.7, bare
    if key == "co" and (bare.endswith(".") or before == "&"):
        return 0.7, bare
    if key in _WEAK and word[:1].isupper():
        return 0.55, bare
    if _GLUED.match(bare):
        return 0.7, bare
    return None


def _name_word(word: str) -> bool:
    """Can `word` be inside a company name (before its legal form)?"""
    if word in _CONNECTORS:
        return True
    first = _ALNUM.search(word)
    if first is None or word.endswith((",", ":", ";", "!", "?")):
        return False
    if word.endswith(".") and not (len(word) <= 5 and word[:-1].isalpha()):
        return False  # a sentence ends here; short abbreviations ("Fred.", "Bros.") stay
    head = word[first.start()]
    return head.isupper() or head.isdigit()


def find(text: str) -> list[Span]:
    """(start, end, score, pattern) of organisation names ending in a legal form."""
    if not _PREFILTER.search(text):
        return []
    words = []
    for match in _WORD.finditer(text):
        start, end = match.span()
        if start and text[start - 1] == "\\" and text[start] == "n":
            start += 1  # the n of a literal "\\n" before the word
        if start < end:
            words.append((start, end, text[start:end]))
    found: list[Span] = []
    taken = 0  # end of the last finding: names never overlap
    grown = 0  # legal forms the last finding took after its first ("Pty Ltd", "Fund Inc.")
    for index, (start, _, word) in enumerate(words):
        form = _form(word, words[index - 1][2] if index else "")
        if form is None:
            continue
        score, bare = form
        if found and index and words[index - 1][1] == taken and grown < 2 \
                and "\n" not in text[taken:start] and "\\n" not in text[taken:start]:
            # "... Total Return Fund Inc.": one name, the finding grows to the last form.
            begin, _, earlier, pattern = found.pop()
            found.append((begin, start + len(bare), max(score, earlier), pattern))
            taken = start + len(bare)
            grown += 1
            continue
        grown = 0
        first = index
        while first > 0 and index - first < _MAX_WORDS:
            prev_start, prev_end, prev = words[first - 1]
            gap = text[prev_end:words[first][0]]
            if "\n" in gap or "\\n" in gap or prev_start < taken or not _name_word(prev):
                break
            first -= 1
        while first < index and (words[first][2].casefold() in _LEADING
                                 or words[first][2] in _CONNECTORS):
            first += 1
        if not _GLUED.match(bare) and all(_form(w, "") for _, _, w in words[first:index]):
            continue  # legal forms alone ("Ltd", "Co. Ltd") name no one
        head = _ALNUM.search(words[first][2])
        begin = words[first][0] + (head.start() if head else 0)
        found.append((begin, start + len(bare), score, "name ending in a legal form"))
        taken = start + len(bare)
    return found
