"""Normalised views of a text, for matching that Unicode tricks cannot slip past.

A view is a string plus, for each of its characters, the position of the original
character it came from, so a match in the view becomes a span of the text the app sent.

`clean` view, per character of the original:
- format characters (Unicode category Cf: zero-width spaces and joiners, bidi controls,
  tag characters) are dropped;
- compatibility decomposition (NFKD: fullwidth, ligatures, math alphabets, superscripts),
  then combining marks dropped (`bád` → `bad`), then case folding;
- homoglyphs folded to the Latin letter or digit they imitate (Cyrillic `а`, Greek `ο`,
  Cherokee `Ꭺ`...), from the Unicode confusables data shipped by `confusable-homoglyphs`;
- runs of whitespace become one space;
- separators between single characters are removed when at least three single
  characters are strung together that way: `b.a.d`, `b a d`, `b-a-d`, `b_a_d` → `bad`.

`skeleton` view: the clean view with common leetspeak folded (`0`→o, `1`/`l`/`!`/`|`→i,
`3`→e, `4`/`@`→a, `5`/`$`→s, `7`/`+`→t, `8`→b, `9`→g). It is a one-to-one map, applied
to the word lists too, so `k1ll`, `kiII` and `kill` share the skeleton `kiii`. A symbol
(`!|@$+`) is folded only when a letter or digit follows it: `kill!` must still end at
`kill`.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

# Characters that may separate the single letters of a spaced-out word.
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?:[ .\-_*·•/|+~:,'\"](?=[^\W_])[^\W_]){2,}(?![^\W_])")
_WHITESPACE_RUNS = re.compile(r"\s+")
_SEPARATORS = frozenset(" .-_*·•/|+~:,'\"")
_LEET = str.maketrans({"0": "o", "1": "i", "l": "i", "3": "e", "4": "a", "5": "s",
                       "7": "t", "8": "b", "9": "g"})
# Marks that render as nothing (variation selectors, the combining grapheme joiner).
_INVISIBLE_MARKS = frozenset(["\u034f", *map(chr, range(0xFE00, 0xFE10)),
                              *map(chr, range(0xE0100, 0xE01F0))])
_LEET_SYMBOLS = {"!": "i", "|": "i", "@": "a", "$": "s", "+": "t"}


@dataclass(frozen=True, slots=True)
class View:
    text: str
    # origin[i] is the index in the original text of the character view.text[i] came from.
    origin: Sequence[int]
    source: str
    # View positions where spaced-out letters were joined: `k i l l a` becomes `killa`,
    # and a word may still end between `l` and `a` (see `is_boundary`).
    joins: frozenset[int] = frozenset()

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of view characters [start, end) (end > start).

        It reaches over combining marks that follow the last character (`b́` is one
        letter on screen), so a redaction leaves no stray accent behind.
        """
        stop = self.origin[end - 1] + 1
        while stop < len(self.source) and unicodedata.category(self.source[stop]) in ("Mn", "Me"):
            stop += 1
        return self.origin[start], stop

    def is_boundary(self, position: int) -> bool:
        """Whether a word may start at `position` (or end just before it)."""
        text = self.text
        return (position <= 0 or position >= len(text) or position in self.joins
                or not (text[position - 1].isalnum() and text[position].isalnum()))


def original(text: str) -> View:
    """The text itself, as a view (for detectors of case-sensitive formats)."""
    return View(text, range(len(text)), text)


def visible(text: str) -> View:
    """The text with invisible characters removed and nothing else changed.

    For detectors of case-sensitive formats (API keys, tokens): a zero-width space or a
    tag character inside `AKIA…` must not hide it, but folding case or look-alikes would
    make such formats match where they should not. Removed: format characters (Unicode
    category Cf: zero-width spaces and joiners, bidi controls, tag characters) and
    variation selectors / the combining grapheme joiner, which render as nothing.
    """
    if text.isascii():
        return original(text)
    kept = [index for index, char in enumerate(text) if not _invisible(char)]
    if len(kept) == len(text):
        return original(text)
    return View("".join(text[index] for index in kept), tuple(kept), text)


def weigh(text: str, after_space: bool = False,
          limit: int | None = None) -> tuple[int, int, bool]:
    """How much of `text` counts towards the length of its clean view.

    A character weighs 1 unless the clean view drops it: invisible characters and
    combining marks weigh 0, and so does whitespace right after whitespace (a run of
    spaces reads as one). Streaming measures its hold-back with this, so that padding a
    word with a thousand zero-width or space characters cannot stretch it past the
    window that must see it whole. The weight of a character depends only on the text
    before it (`after_space`: whether that text ended in whitespace), so weighing a
    stream piece by piece gives the same total as weighing it at once.

    Returns (index, weight, after_space): with `limit`, `index` is where the prefix of
    weight `limit` ends (or len(text) if the text weighs less); otherwise len(text).
    """
    if limit is None and text.isascii():
        runs = _WHITESPACE_RUNS.findall(text)
        weight = len(text) - sum(len(run) - 1 for run in runs)
        if after_space and text[:1].isspace():
            weight -= 1
        return len(text), weight, (text[-1].isspace() if text else after_space)
    weight = 0
    for index, char in enumerate(text):
        if limit is not None and weight >= limit:
            return index, weight, after_space
        if char.isascii():
            space = char.isspace()
        elif _invisible(char) or unicodedata.category(char) in ("Mn", "Me"):
            continue
        else:
            space = char.isspace()
        if not (space and after_space):
            weight += 1
        after_space = space
    return len(text), weight, after_space


def _invisible(char: str) -> bool:
    return unicodedata.category(char) == "Cf" or char in _INVISIBLE_MARKS


def clean(text: str) -> View:
    if text.isascii():
        folded = text.lower()
        origin: list[int] = list(range(len(text)))
        # Control characters in ASCII are not Cf; only whitespace needs collapsing.
    else:
        table = _char_table()
        out: list[str] = []
        origin = []
        for index, char in enumerate(text):
            mapped = table.get(char)
            if mapped is None:
                mapped = table[char] = _fold_char(char)
            if mapped:
                out.append(mapped)
                origin.extend([index] * len(mapped))
        folded = "".join(out)
    folded, origin = _collapse_whitespace(folded, origin)
    return _collapse_spacing(folded, origin, text)


def skeleton(view: View) -> View:
    text = view.text.translate(_LEET)
    if any(symbol in text for symbol in _LEET_SYMBOLS):
        chars = list(text)
        for index, char in enumerate(chars[:-1]):
            if char in _LEET_SYMBOLS and (chars[index + 1].isalnum()
                                          or chars[index + 1] in _LEET_SYMBOLS):
                chars[index] = _LEET_SYMBOLS[char]
        text = "".join(chars)
    return View(text, view.origin, view.source, view.joins)


def skeleton_of(term: str) -> str:
    """The skeleton of a list entry, for matching against `skeleton(clean(text))`."""
    return skeleton(clean(term)).text.strip()


def _fold_char(char: str) -> str:
    """The clean form of one character of a text that is not all ASCII.

    Invariant (tests/redteam/test_evasion.py checks it for every character and in any
    text): an ASCII character folds to its lower case and nothing else, so what the rest
    of the text holds can never change how a plain word reads. The look-alike table only
    ever applies to non-ASCII characters: once it was consulted after case folding, `ſ`
    (which folds to `s`) put `s → f` into the table and every ASCII `s` of a text with one
    accent in it read as `f`.
    """
    if char.isascii():
        return char.lower()
    if _invisible(char):
        return ""
    homoglyphs = _homoglyphs()
    out = []
    for part in unicodedata.normalize("NFKD", char):
        if unicodedata.category(part) in ("Mn", "Me"):
            continue
        if part.isascii():
            out.append(part.lower())
            continue
        target = homoglyphs.get(part)  # the look-alike of this very character (`Η` → h)
        if target is not None:
            out.append(target)
            continue
        for folded in part.casefold():
            out.append(folded if folded.isascii() else homoglyphs.get(folded, folded))
    return "".join(out)


def _collapse_whitespace(text: str, origin: list[int]) -> tuple[str, list[int]]:
    if "  " not in text and not any(c.isspace() and c != " " for c in text):
        return text, origin
    out: list[str] = []
    kept: list[int] = []
    previous_space = False
    for char, where in zip(text, origin, strict=True):
        space = char.isspace()
        if space and previous_space:
            continue
        previous_space = space
        out.append(" " if space else char)
        kept.append(where)
    return "".join(out), kept


def _collapse_spacing(text: str, origin: list[int], source: str) -> View:
    drop: set[int] = set()
    for match in _SPACED.finditer(text):
        drop.update(i for i in range(match.start(), match.end()) if text[i] in _SEPARATORS)
    if not drop:
        return View(text, tuple(origin), source)
    out: list[str] = []
    kept: list[int] = []
    joins: set[int] = set()
    for index, char in enumerate(text):
        if index in drop:
            joins.add(len(out))
        else:
            out.append(char)
            kept.append(origin[index])
    return View("".join(out), tuple(kept), source, frozenset(joins))


@functools.cache
def _char_table() -> dict[str, str]:
    """Memo of per-character folds (grows with the characters seen, bounded by Unicode)."""
    return {}


@functools.cache
def _homoglyphs() -> dict[str, str]:
    """Non-ASCII character → the lower-case ASCII letter or digit it imitates.

    confusables.json maps a character to the characters it can be confused with; we keep,
    for each non-ASCII character, a confusable that is a single ASCII letter (preferred) or
    digit, following one intermediate character where the data goes through one
    (Greek `α` → Latin `ɑ` → `a`). Keys are never ASCII (see `_fold_char`).
    """
    data = json.loads(resources.files("confusable_homoglyphs")
                      .joinpath("confusables.json").read_text(encoding="utf-8"))

    def direct(char: str) -> str | None:
        targets = [entry["c"] for entry in data.get(char, ())]
        letters = [t for t in targets if len(t) == 1 and t.isascii() and t.isalpha()]
        digits = [t for t in targets if len(t) == 1 and t.isascii() and t.isdigit()]
        choice = (letters or digits or [None])[0]
        return choice.lower() if choice else None

    table: dict[str, str] = {}
    for char, entries in data.items():
        if char.isascii() or len(char) != 1:
            continue
        target = direct(char)
        if target is None:
            for entry in entries:
                if len(entry["c"]) == 1 and not entry["c"].isascii():
                    target = direct(entry["c"])
                    if target:
                        break
        if target:
            table[char] = target
    return table
