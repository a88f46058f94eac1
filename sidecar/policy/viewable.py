"""Can a content pattern ever match the view it runs on?

Content patterns run on the clean view of a text (sidecar.content.normalize): lower
case, accents dropped, look-alikes folded. A pattern with `SECRET` or `café` in it
compiles fine and never fires, so a rule the security team wrote protects nothing and
`policy check` says all is well. This module reads an RE2 pattern far enough to find
its literal letters (outside and inside character classes, `\\Q...\\E`, `\\x41`, `\\101`) and asks
the view itself whether it can contain each: a letter is dead when the view's own
folding turns it into something else (`clean(c) != c`). The view is never changed here.

Deliberately lenient where it cannot be sure: escapes that stand for sets (`\\D \\S \\W`,
`\\p{..}`, POSIX classes) and negated classes are live; a class is dead only when every
member is; a range too wide to enumerate is live; `(?i)` anywhere makes letters count
in either case (a flag group's scope is not tracked: refusing a good pattern would be
the worse mistake). Only letters are judged: a dead space or symbol is not this
check's business. Ranges are enumerated up to MAX_RANGE members, enough for the Hangul
syllables (`[가-힣]`, 11,172 of them, all decomposed by the view).

`why_dead` says why the view never holds a letter (upper case, decomposed, folded to the
Latin letter it looks like) and what to write instead, without quoting it: errors never
quote what a policy file says.
"""

from __future__ import annotations

import functools
import re
import unicodedata

_FLAGS_WITH_I = re.compile(r"\(\?[imsU]*i[imsU]*(?:-[imsU]*)?[:)]")
_NAMED_GROUP = re.compile(r"\(\?P?<[^>]*>")
_FLAG_GROUP = re.compile(r"\(\?[imsU-]*[:)]")
_HEX = re.compile(r"\\x(?:\{([0-9A-Fa-f]{1,6})\}|([0-9A-Fa-f]{2}))")
_OCTAL = re.compile(r"\\([0-7]{1,3})")
_PROPERTY = re.compile(r"\\[pP](?:\{[^}]*\}|.)")
_POSIX = re.compile(r"\[:\^?[a-z]+:\]")
# A wider class range is taken to hold something the view can contain. Each letter is
# folded once (cached): the Hangul syllables cost ~0.2 s the first time.
MAX_RANGE = 12288


@functools.cache
def _in_view(char: str) -> bool:
    from sidecar.content.normalize import clean

    return clean(char).text == char


def _live(char: str, ignore_case: bool) -> bool:
    if not char.isalpha():
        return True
    variants = {char, char.lower(), char.upper()} if ignore_case else {char}
    return any(_in_view(variant) for variant in variants)


def dead_letter(pattern: str) -> int | None:
    """Position (0-based) of the first literal letter or class the view never holds,
    or None when every literal can occur in it."""
    found = find_dead(pattern)
    return None if found is None else found[0]


def find_dead(pattern: str) -> tuple[int, str] | None:
    """Position (0-based) of the first literal letter or class the view never holds and
    that letter (a class's first member), or None when every literal can occur in it."""
    ignore_case = bool(_FLAGS_WITH_I.search(pattern))
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            literal, end = _escape(pattern, i)
            if literal is not None and not _live(literal, ignore_case):
                return i, literal
            if pattern.startswith("\\Q", i):
                stop = pattern.find("\\E", i + 2)
                stop = n if stop < 0 else stop
                for offset, quoted in enumerate(pattern[i + 2:stop]):
                    if not _live(quoted, ignore_case):
                        return i + 2 + offset, quoted
                end = min(n, stop + 2)
            i = end
        elif char == "[":
            dead, end = _class(pattern, i, ignore_case)
            if dead is not None:
                return i, dead
            i = end
        elif char == "(":
            found = _NAMED_GROUP.match(pattern, i) or _FLAG_GROUP.match(pattern, i)
            i = found.end() if found else i + 1
        else:
            if not _live(char, ignore_case):
                return i, char
            i += 1
    return None


def _escape(pattern: str, i: int) -> tuple[str | None, int]:
    """The literal an escape at `i` stands for (None: a set, an anchor, or \\Q), and
    where it ends."""
    if i + 1 >= len(pattern):
        return None, i + 1
    hexed = _HEX.match(pattern, i)
    if hexed:
        code = int(hexed.group(1) or hexed.group(2), 16)
        return (chr(code) if code <= 0x10FFFF else None), hexed.end()
    octal = _OCTAL.match(pattern, i)
    if octal:
        return chr(int(octal.group(1), 8)), octal.end()
    prop = _PROPERTY.match(pattern, i)
    if prop:
        return None, prop.end()
    nxt = pattern[i + 1]
    if nxt.isascii() and nxt.isalnum():  # \d \W \b \A \z \n \0 \Q ...: not a letter
        return None, i + 2
    return nxt, i + 2  # an escaped punctuation mark or a non-ASCII letter: itself


def _class(pattern: str, i: int, ignore_case: bool) -> tuple[str | None, int]:
    """The class at `i`'s first member when the view holds none of them (None when it
    can match something in the view), and where the class ends."""
    n = len(pattern)
    j = i + 1
    negated = j < n and pattern[j] == "^"
    if negated:
        j += 1
    first = True
    members: list[str | None] = []  # literals, None for a set
    ranges: list[range] = []  # code points of ranges, read lazily: most stop at once
    while j < n and (pattern[j] != "]" or first):
        first = False
        posix = _POSIX.match(pattern, j)
        if posix:
            members.append(None)
            j = posix.end()
            continue
        if pattern[j] == "\\":
            literal, j = _escape(pattern, j)
            members.append(literal)
        else:
            members.append(pattern[j])
            j += 1
        if j + 1 < n and pattern[j] == "-" and pattern[j + 1] != "]" and members[-1]:
            low = members.pop()
            if pattern[j + 1] == "\\":
                high, j = _escape(pattern, j + 1)
            else:
                high, j = pattern[j + 1], j + 2
            if low is None or high is None or ord(high) - ord(low) > MAX_RANGE:
                members.append(None)
            else:
                ranges.append(range(ord(low), ord(high) + 1))
    end = min(n, j + 1)
    if negated or not (members or ranges):
        return None, end
    for member in members:
        if member is None or _live(member, ignore_case):
            return None, end
    for codes in ranges:
        if any(_live(chr(code), ignore_case) for code in codes):
            return None, end
    return members[0] if members else chr(ranges[0][0]), end


_ELSEWHERE = ("patterns cannot name such letters: list the word under `words:` or "
              "`phrases:` (folded as the text is), or write the pattern as "
              "sidecar.content.normalize.clean(text).text shows the text")
_LATIN = "write letters in lower case and without accents"


def why_dead(char: str) -> str:
    """Why the view never holds `char` and what to write instead, naming the kind of
    letter, never the letter itself (errors never quote a policy file)."""
    from sidecar.content.normalize import clean

    view = clean(char).text
    looks_latin = len(view) == 1 and view.isascii() and view.isalnum()
    if unicodedata.normalize("NFKD", char) != char:
        if 0xAC00 <= ord(char) <= 0xD7A3:
            return "a Hangul syllable, which the view holds decomposed into jamo; " + _ELSEWHERE
        if looks_latin and unicodedata.name(char, "").startswith("LATIN"):
            return f"a letter with an accent or in a special form, which the view drops; {_LATIN}"
        return ("a letter the view holds decomposed (marks such as accents or hamza "
                "dropped, special forms undone); " + _ELSEWHERE)
    if looks_latin and not char.isascii():
        return ("a letter the view folds to the Latin letter or digit it looks like (as "
                "with many Cyrillic and Greek letters); " + _ELSEWHERE)
    if char.lower() != char and _in_view(char.lower()):
        return ("an upper-case letter: the view is lower case; write it in lower case or "
                "start the pattern with (?i)")
    return "a letter the view folds to another character; " + _ELSEWHERE
