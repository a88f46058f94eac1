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

import bisect
import functools
import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

# Three or more single letters or digits, each from the next by one to three characters
# that are neither (`b o m b`, `b.o.m.b`, `b, o, m, b`, `b - o - m - b`, `b💣o💣m💣b`).
# Leet symbols that stand for letters (`@ $ !`) are not separators, and invisible
# characters (_MARK) are part of the word: `x\u200ba\u200bb` shows as one word, `xab`.
_SPACED = re.compile(
    r"(?<![^\W_]|\u2063)[^\W_](?:(?:[^\w@$!\u2063]|_){1,3}(?=[^\W_])[^\W_]){2,}"
    r"(?![^\W_]|\u2063)")
_WHITESPACE_RUNS = re.compile(r"\s+")
# What an invisible character folds to until the views drop it: a format character, so
# that no folded character of a text can be mistaken for it.
_MARK = "\u2063"
_TOKENS = re.compile(r"[^\W_]+")
# Words that are numbers, not leetspeak: a number, a model number (one letter and a
# number: `A55`, `B52`), a number with a unit (`80mb`, `5g`, `4k`).
_NUMBER_LIKE = re.compile(
    r"[a-z]?\d+|\d+(?:kb|mb|gb|tb|pb|kib|mib|gib|ms|us|ns|mm|cm|km|kg|mg|hz|khz|mhz|ghz|"
    r"px|pt|em|mp|fps|dpi|bps|kbps|mbps|gbps|st|nd|rd|th|am|pm|k|m|b|g|x|s|h|d|v|w|a|p)")
_DIGITS_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t",
                              "8": "b", "9": "g"})
_LETTERS_LEET = str.maketrans({"l": "i"})
# Characters that render as nothing: Unicode's Default_Ignorable_Code_Point ranges
# (assigned or not: a browser draws an unassigned one in them as nothing too), plus
# the blank Braille pattern and the musical null notehead; format characters (Cf) in
# general are added by `_invisible`.
_INVISIBLE_RANGES = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
                     (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
                     (0x2060, 0x206F), (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F),
                     (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
                     (0x1BCA0, 0x1BCA3), (0x1D159, 0x1D159), (0x1D173, 0x1D17A),
                     (0xE0000, 0xE0FFF))
_INVISIBLE_MARKS = frozenset(chr(code) for low, high in _INVISIBLE_RANGES
                             for code in range(low, high + 1))
# ASCII control characters that are not whitespace (Python's isspace() counts \x1c-\x1f):
# they render as nothing, so `gren\x00ade` reads `grenade` (C1 controls, U+0080-U+009F,
# are handled by `_invisible` with the rest of category Cc).
_ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
# Look-alikes the confusables data leaves out because they differ a little in shape,
# but which read as the Latin letter in running text and are used to evade filters
# (Cyrillic and Greek lower case, kra, and the like).
_EXTRA_LOOK_ALIKES = {
    "к": "k", "ҡ": "k", "ќ": "k", "κ": "k", "ĸ": "k", "м": "m", "в": "b", "ь": "b",
    "т": "t", "н": "h", "г": "r", "п": "n", "и": "u", "ш": "w", "ԁ": "d", "ɡ": "g",
    "€": "e", "¡": "i", "ø": "o", "ꞏ": ".",
}
# Unicode names of decorated Latin letters that neither NFKD nor the confusables data
# bring back to the letter: small capitals (`ʙᴏᴍʙ`), letters with a stroke or hook
# (`ø ł đ ɓ`), squared and parenthesised letters (`🅱 ⒝`), regional indicators (`🇧`).
_LETTER_NAME = re.compile(
    r"(?:[A-Z]+ )*?LATIN (?:CAPITAL |SMALL )?LETTER (?:SMALL CAPITAL |BARRED )?([A-Z])"
    r"(?: WITH [A-Z ]+)?|REGIONAL INDICATOR SYMBOL LETTER ([A-Z])")
_LEET_SYMBOLS = {"!": "i", "|": "i", "@": "a", "$": "s", "+": "t"}
# Leet symbols read as part of a word, not as a separator, by _SPACED and by marks.
_WORDLIKE_SYMBOLS = frozenset("@$!")


@dataclass(frozen=True, slots=True)
class View:
    text: str
    # origin[i] is the index in the original text of the character view.text[i] came from.
    origin: Sequence[int]
    source: str
    # View positions where spaced-out letters were joined: `k i l l a` becomes `killa`,
    # and a word may still end between `l` and `a` (see `is_boundary`).
    joins: frozenset[int] = frozenset()
    # View positions where invisible characters stood between two letters or digits
    # (`make\u200bmeth`): the text shows one word there, so no word ends there, but
    # the words of a phrase may be split there (`make\u200bmeth\u200bnow`).
    gaps: frozenset[int] = frozenset()

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of view characters [start, end) (end > start).

        It reaches over combining marks that follow the last character (`b́` is one
        letter on screen), so a redaction leaves no stray accent behind.
        """
        stop = self.origin[end - 1] + 1
        while stop < len(self.source) and unicodedata.category(self.source[stop]) in ("Mn", "Me"):
            stop += 1
        return self.origin[start], stop

    def may_end(self, position: int, ends: Callable[[int], bool] | None = None,
                particles: int = 3) -> bool:
        """Whether a word may end just before `position`: at a boundary (or where `ends`
        says a word ends), or where up to three Korean particles, or standalone jamo
        (`ㅋㅋ`, `ㅠㅠ`: chat laughter and tears written onto a word), follow it and
        then the word ends."""
        if self.is_boundary(position) or (ends is not None and ends(position)):
            return True
        if particles <= 0:
            return False
        loose = _loose_jamo(self.text, position)
        if loose > position and self.may_end(loose, ends, particles - 1):
            return True
        return any(self.text.startswith(particle, position)
                   and self.may_end(position + len(particle), ends, particles - 1)
                   for particle in _PARTICLES)

    def is_boundary(self, position: int) -> bool:
        """Whether a word may start at `position` (or end just before it). Next to a
        character of a script written without spaces (Chinese, Japanese, Thai...) every
        position is one: `炸弹` is a word inside `如何制造炸弹`."""
        text = self.text
        return (position <= 0 or position >= len(text) or position in self.joins
                or not (text[position - 1].isalnum() and text[position].isalnum())
                or _unspaced(text[position - 1]) or _unspaced(text[position]))


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
    if text.isascii() and not _ASCII_CONTROLS.search(text):
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
    if limit is None and text.isascii() and not _ASCII_CONTROLS.search(text):
        runs = _WHITESPACE_RUNS.findall(text)
        weight = len(text) - sum(len(run) - 1 for run in runs)
        if after_space and text[:1].isspace():
            weight -= 1
        return len(text), weight, (text[-1].isspace() if text else after_space)
    weight = 0
    for index, char in enumerate(text):
        if limit is not None and weight >= limit:
            return index, weight, after_space
        if char.isascii() and not _ASCII_CONTROLS.match(char):
            space = char.isspace()
        elif _invisible(char) or unicodedata.category(char) in ("Mn", "Me"):
            continue
        else:
            space = char.isspace()
        if not (space and after_space):
            weight += 1
        after_space = space
    return len(text), weight, after_space


# Scripts written without spaces between words: Thai, Lao, Tibetan, Myanmar, Khmer,
# Hiragana, Katakana, the CJK ideographs (with their extensions and compatibility forms).
_UNSPACED_RANGES = ((0x0E00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF),
                    (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
                    (0x20000, 0x3FFFF))
# Korean puts spaces between words but attaches particles to a word's end (`폭탄을` is
# `폭탄` and a particle): a word may end where one or two particles follow it and then
# the word ends; never inside a word (`사기` is not in `복사기`, `칼` not in `칼로리`:
# trial 20). The views hold Hangul as jamo (NFKD), so the particles are kept that way.
_KOREAN_PARTICLES = (
    "을 를 이 가 은 는 에 의 도 로 으로 와 과 에서 에게 한테 만 까지 부터 처럼 보다 이나 나 "
    "랑 이랑 께 께서 이다 였다 이었다 야 아 요 이요 라도 이라도 마저 조차 밖에 뿐 에는 에도 "
    "에서는 에서도 으로는 로는 으로도 로도 와는 과는 하고 입니다 이에요 예요 이었어요 였어요 "
    "이라고 라고 이라는 라는 으로서 로서 으로써 로써 에게서 한테서 같이 들 이니까 니까 인데 "
    "이지만 지만 이고 고 이며 며 이면 면 이죠 죠 이네 네")
_PARTICLES = tuple(sorted({unicodedata.normalize("NFKD", particle)
                           for particle in _KOREAN_PARTICLES.split()}, key=len, reverse=True))
_UNSPACED_STARTS = tuple(low for low, _ in _UNSPACED_RANGES)


def _unspaced(char: str) -> bool:
    code = ord(char)
    if code < 0x0E00:
        return False
    low, high = _UNSPACED_RANGES[bisect.bisect_right(_UNSPACED_STARTS, code) - 1]
    return low <= code <= high


def _loose_jamo(text: str, position: int) -> int:
    """The end of a run of Hangul jamo from `position` that forms no syllable (no
    leading consonant followed by a vowel): `ㅋㅋ` and `ㅠㅠ` as the views hold them
    (NFKD); `position` itself when there is none."""
    end = position
    while end < len(text) and 0x1100 <= ord(text[end]) <= 0x11FF:
        if 0x1100 <= ord(text[end]) <= 0x1112 and end + 1 < len(text) \
                and 0x1161 <= ord(text[end + 1]) <= 0x1175:
            return position  # a syllable starts: the run is a word, not jamo
        end += 1
    return end


def renders_as_nothing(char: str) -> bool:
    """Whether a character shows as nothing (the views drop it): format and control
    characters that are not whitespace, variation selectors, Hangul fillers, the blank
    Braille pattern... (sidecar.pii.disguise reads PII through the same set)."""
    return _invisible(char)


def _invisible(char: str) -> bool:
    category = unicodedata.category(char)
    return category == "Cf" or char in _INVISIBLE_MARKS or (category == "Cc"
                                                              and not char.isspace())


def has_markup(plain: View) -> bool:
    """Whether a text whose plain clean view is `plain` may hold markup or escapes that
    `clean(text, unmark=True)` reads differently (so the second reading is worth it).

    Read on the folded text, not the raw one: the fold makes markup of look-alikes
    (fullwidth `＜`, `％`). Loose on purpose (any `*`, `~` or backquote, `<x`), strict
    enough that `100% sure` and `a & b` cost nothing. Joining spaced-out letters may have
    eaten the markup (`a**a<i>` joins into `aai>`): a view with joins always says yes,
    and such texts are rare. tests/redteam/test_evasion.py checks that whenever the
    unmarked reading differs, this says so.
    """
    return bool(plain.joins) or (any(marker in plain.text for marker in _MARKUP_MARKERS)
                                 and _MARKUP_HINT.search(plain.text) is not None)


def clean(text: str, *, unmark: bool = False, join: bool = True,
          loose_ends: bool = False) -> View:
    """The clean view (module docstring). With `unmark`, markup and escapes are read as a
    reader would see them first (see _MARKUP): a second view of the same text, for the
    rules that read wording, used alongside the plain one (so hiding a word inside
    something tag-like hides it from neither). Without `join`, spaced-out letters stay
    apart: the view for tokens (secrets), whose punctuation is part of their value.

    With `loose_ends`, a spaced-out run is not joined across punctuation followed by
    whitespace: `i.n.s.t.r.u.c.t.i.o.n.s: 0:0` reads `instructions: 0:0`, where the
    plain view reads `instructions00` (which way the writer meant it, no view can
    know: the rules that read wording read both)."""
    if text.isascii() and not _ASCII_CONTROLS.search(text):
        folded = text.lower()
        origin: list[int] = list(range(len(text)))
    else:
        table = _char_table()
        out: list[str] = []
        origin = []
        for index, char in enumerate(text):
            mapped = table.get(char)
            if mapped is None:
                mapped = table[char] = _fold_char(char)
            if mapped == _MARK and out and out[-1] == _MARK:
                continue  # a run of invisible characters is one separator
            if mapped:
                out.append(mapped)
                origin.extend([index] * len(mapped))
        folded = "".join(out)
    if unmark:
        folded, origin = _unmark(folded, origin)
    folded, origin = _collapse_whitespace(folded, origin)
    if not join:
        return _collapse_spacing(folded, origin, text, join=False)
    return _collapse_spacing(folded, origin, text, loose_ends=loose_ends)


# What a reader never sees of a text: HTML tags and comments, Markdown emphasis inside a
# word (`bo**mb**`, `k*i*ll`, `bomb_count`), and escapes that stand for one character
# (`\u006d`, `\n`, `&#111;`, `&#x6f;`, `%6f`). Read on the lower-cased clean view.
_ESCAPES = re.compile(
    r"\\u(?P<u>[0-9a-f]{4})|\\(?P<ws>[ntr])|&#(?P<dec>\d{1,7});|&#x(?P<hex>[0-9a-f]{1,6});"
    r"|%(?P<pct>[46][0-9a-f]|[57][0-9a]|20)")
_MARKUP = re.compile(r"<!--.{0,2000}?-->|</?[a-z][a-z0-9]{0,20}(?:\s[^<>]{0,200})?/?>"
                     r"|(?<=[^\W_]|[\u2063@$!])[*~`]{1,3}(?=[^\W_]|[\u2063@$!])", re.S)
_MARKUP_MARKERS = "<*~`\\&%"
_MARKUP_HINT = re.compile(r"<[a-z!/]|[*~`]|\\[untr]|&#|%[0-9a-f]{2}")


def _unmark(text: str, origin: list[int]) -> tuple[str, list[int]]:
    """Decode escapes, then drop markup (see _ESCAPES, _MARKUP) in a folded text, before
    whitespace and spacing are collapsed. Dropped markup becomes an invisible mark, so
    between two letters it is a gap (`ki<i>ll</i>` reads `kill`) and elsewhere it is
    nothing; a decoded escape keeps the origin of its backslash, ampersand or percent
    sign, so a finding still covers the escape in the text as sent."""
    if not any(marker in text for marker in _MARKUP_MARKERS):
        return text, origin
    return _replaced(*_replaced(text, origin, _ESCAPES, _decoded), _MARKUP, _hidden)


# Tags that break a line or a block: they separate words rather than hide inside one.
_BREAKING_TAGS = frozenset({"br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "table", "hr",
                            "pre", "blockquote", "section", "article", "header", "footer",
                            "h1", "h2", "h3", "h4", "h5", "h6", "dt", "dd", "dl"})


def _hidden(match: re.Match[str]) -> str:
    """What a piece of markup shows: a space for a tag that breaks the line, else
    nothing (an invisible mark: inside a word it leaves the word whole)."""
    tag = re.match(r"</?([a-z0-9]+)", match.group())
    return " " if tag is not None and tag.group(1) in _BREAKING_TAGS else _MARK


def _decoded(match: re.Match[str]) -> str:
    if match.group("ws") is not None:
        return " "
    if match.group("dec") is not None:
        code = int(match.group("dec"))
    else:
        code = int(match.group("u") or match.group("hex") or match.group("pct"), 16)
    return _fold_char(chr(min(code, 0x10FFFF)))


def _replaced(text: str, origin: list[int], pattern: re.Pattern[str],
              replacement: Callable[[re.Match[str]], str]) -> tuple[str, list[int]]:
    """Each match of `pattern` replaced, its replacement taking the match's first origin."""
    out: list[str] = []
    kept: list[int] = []
    position = 0
    for match in pattern.finditer(text):
        out.append(text[position:match.start()])
        kept.extend(origin[position:match.start()])
        position = match.end()
        new = replacement(match)
        out.append(new)
        kept.extend([origin[match.start()]] * len(new))
    if not position:
        return text, origin
    out.append(text[position:])
    kept.extend(origin[position:])
    return "".join(out), kept


def skeleton(view: View) -> View:
    """The clean view with leetspeak folded (see the module docstring).

    Digits are read as letters only in a word that is not a number, a model number or a
    number with a unit: `b0mb`, `80m8` and `h3ll0` are words in disguise; `717`,
    `4.5.5`, `A55` and `80MB` are numbers (and so, deliberately, is `k111`).
    """
    text = view.text
    if any(symbol in text for symbol in _LEET_SYMBOLS):
        chars = list(text)
        for index, char in enumerate(chars[:-1]):
            if char in _LEET_SYMBOLS and (chars[index + 1].isalnum()
                                          or chars[index + 1] in _LEET_SYMBOLS):
                chars[index] = _LEET_SYMBOLS[char]
        text = "".join(chars)
    if any(char.isdigit() for char in text):  # after the symbols: `4@aa` is one word
        text = _TOKENS.sub(_fold_digits, text)
    text = text.translate(_LETTERS_LEET)
    return View(text, view.origin, view.source, view.joins, view.gaps)


def _fold_digits(token: re.Match[str]) -> str:
    word = token.group()
    if _NUMBER_LIKE.fullmatch(word):
        return word
    return word.translate(_DIGITS_LEET)


_PUNCTUATION_RUNS = re.compile(r"(?:[^\w:]|_)+")


def words(view: View) -> View:
    """The view with every run of characters that are neither letters, digits nor a
    colon read as one space: for wording detectors (prompt_injection), so that
    `**ignore** all previous`, `system-prompt` and `ignore_all_previous_instructions`
    read as the words they are. A run keeps the origin of its first character."""
    text = view.text
    if _PUNCTUATION_RUNS.search(text.replace(" ", "a")) is None:
        return view
    out: list[str] = []
    origin: list[int] = []
    shift: list[tuple[int, int]] = []  # (old position where a run ended, how far it moves)
    position, removed = 0, 0
    for run in _PUNCTUATION_RUNS.finditer(text):
        out.append(text[position:run.start()])
        origin.extend(view.origin[position:run.start()])
        out.append(" ")
        origin.append(view.origin[run.start()])
        position = run.end()
        removed += run.end() - run.start() - 1
        shift.append((run.end(), removed))
    out.append(text[position:])
    origin.extend(view.origin[position:])

    ends = [end for end, _ in shift]  # once: rebuilt per position it made 1 MB take 7.6 s

    def moved(old: int) -> int:
        """Where an old position between two characters is now (joins and gaps are only
        ever between letters or digits, never inside a run)."""
        index = bisect.bisect_right(ends, old) - 1
        return old - (shift[index][1] if index >= 0 else 0)

    return View("".join(out), tuple(origin), view.source,
                frozenset(map(moved, view.joins)), frozenset(map(moved, view.gaps)))


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
        return _MARK if _ASCII_CONTROLS.match(char) else char.lower()
    if _invisible(char):
        return _MARK
    category = unicodedata.category(char)
    if category in ("Lm", "Mc") and unicodedata.decomposition(char) == "":
        return _MARK  # modifier letters, spacing marks: `boʹmb`, `bـomb` (not `ⁱ`, an i)
    if category == "Nd":  # a digit of any script is that digit (`b٥mb`, `proj-١٢٣٤`)
        return str(unicodedata.decimal(char))
    if category == "Pd" or char == "\u2212":  # every dash reads as a hyphen
        return "-"
    extra = _EXTRA_LOOK_ALIKES.get(char)
    if extra is not None:
        return extra
    lettered = _lettered().get(char)
    if lettered is not None:
        return lettered
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
    """Runs of whitespace become one space, and an invisible mark stays only between two
    letters or digits (next to a space or punctuation it separates nothing). The leet
    symbols that _SPACED keeps inside a word (`@ $ !`) count as letters here too, as
    the skeleton may read them as one: `a\u200b@ttack` is two words, `a` and
    `attack`, not one word `aattack`."""
    if "  " not in text and _MARK not in text and \
            not any(c.isspace() and c != " " for c in text):
        return text, origin
    out: list[str] = []
    kept: list[int] = []
    for char, where in zip(text, origin, strict=True):
        if char == _MARK:
            if out and (out[-1].isalnum() or out[-1] in _WORDLIKE_SYMBOLS):
                out.append(char)
                kept.append(where)
            continue
        space = char.isspace()
        if out and out[-1] == _MARK and not (char.isalnum() or char in _WORDLIKE_SYMBOLS):
            out.pop()
            kept.pop()
        if space and out and out[-1] == " ":
            continue
        out.append(" " if space else char)
        kept.append(where)
    if out and out[-1] == _MARK:
        out.pop()
        kept.pop()
    return "".join(out), kept


def _collapse_spacing(text: str, origin: list[int], source: str, *,
                      join: bool = True, loose_ends: bool = False) -> View:
    """Join spaced-out letters and drop the invisible marks, noting where either was.

    Where an invisible mark stood between two letters or digits is a gap
    (`make\u200bmeth` shows as one word, which a phrase may still split there).
    """
    drop: set[int] = set()
    for match in _SPACED.finditer(text) if join else ():
        pieces = _loose_pieces(text, *match.span()) if loose_ends else [match.span()]
        for start, end in pieces:
            drop.update(i for i in range(start, end) if not text[i].isalnum())
    if not drop and _MARK not in text:
        return View(text, tuple(origin), source)
    out: list[str] = []
    kept: list[int] = []
    joins: set[int] = set()
    gaps: set[int] = set()
    for index, char in enumerate(text):
        if index in drop:
            joins.add(len(out))
        elif char == _MARK:  # always between two letters, digits or leet symbols, by now
            gaps.add(len(out))
        else:
            out.append(char)
            kept.append(origin[index])
    return View("".join(out), tuple(kept), source, frozenset(joins), frozenset(gaps))


# A link of a spaced-out run that reads as punctuation ending a word: a mark followed by
# whitespace (`: `, `, `, `. `).
_LOOSE_LINK = re.compile(r"[^\w\s]\s")


def _loose_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The run text[start:end] cut at every link that is punctuation followed by
    whitespace; the pieces still joined are those of three or more single characters."""
    singles = [i for i in range(start, end) if text[i].isalnum()]
    pieces, current = [], [singles[0]]
    for before, after in itertools.pairwise(singles):
        if _LOOSE_LINK.search(text, before + 1, after):
            pieces.append(current)
            current = []
        current.append(after)
    pieces.append(current)
    return [(piece[0], piece[-1] + 1) for piece in pieces if len(piece) >= 3]


@functools.cache
def _char_table() -> dict[str, str]:
    """Memo of per-character folds (grows with the characters seen, bounded by Unicode)."""
    return {}


@functools.cache
def _lettered() -> dict[str, str]:
    """Non-ASCII character → the lower-case Latin letter its Unicode name says it is
    (see _LETTER_NAME), for the decorated letters that NFKD and the confusables data
    leave alone. Built once, from the Unicode database this Python ships."""
    table: dict[str, str] = {}
    for code in range(0x80, 0x20000):
        char = chr(code)
        match = _LETTER_NAME.fullmatch(unicodedata.name(char, ""))
        if match is not None:
            table[char] = (match.group(1) or match.group(2)).lower()
    return table


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
