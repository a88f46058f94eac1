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
check's business.
"""

from __future__ import annotations

import functools
import re

_FLAGS_WITH_I = re.compile(r"\(\?[imsU]*i[imsU]*(?:-[imsU]*)?[:)]")
_NAMED_GROUP = re.compile(r"\(\?P?<[^>]*>")
_FLAG_GROUP = re.compile(r"\(\?[imsU-]*[:)]")
_HEX = re.compile(r"\\x(?:\{([0-9A-Fa-f]{1,6})\}|([0-9A-Fa-f]{2}))")
_OCTAL = re.compile(r"\\([0-7]{1,3})")
_PROPERTY = re.compile(r"\\[pP](?:\{[^}]*\}|.)")
_POSIX = re.compile(r"\[:\^?[a-z]+:\]")
MAX_RANGE = 4096  # a wider class range is taken to hold something the view can contain


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
    ignore_case = bool(_FLAGS_WITH_I.search(pattern))
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            literal, end = _escape(pattern, i)
            if literal is not None and not _live(literal, ignore_case):
                return i
            if pattern.startswith("\\Q", i):
                stop = pattern.find("\\E", i + 2)
                stop = n if stop < 0 else stop
                for offset, quoted in enumerate(pattern[i + 2:stop]):
                    if not _live(quoted, ignore_case):
                        return i + 2 + offset
                end = min(n, stop + 2)
            i = end
        elif char == "[":
            live, end = _class(pattern, i, ignore_case)
            if not live:
                return i
            i = end
        elif char == "(":
            found = _NAMED_GROUP.match(pattern, i) or _FLAG_GROUP.match(pattern, i)
            i = found.end() if found else i + 1
        else:
            if not _live(char, ignore_case):
                return i
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


def _class(pattern: str, i: int, ignore_case: bool) -> tuple[bool, int]:
    """Whether the class at `i` can match anything in the view, and where it ends."""
    n = len(pattern)
    j = i + 1
    negated = j < n and pattern[j] == "^"
    if negated:
        j += 1
    live = False
    first = True
    members: list[str | None] = []  # literals, None for a set
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
                members.extend(chr(code) for code in range(ord(low), ord(high) + 1))
    end = min(n, j + 1)
    if negated:
        return True, end
    for member in members:
        if member is None or _live(member, ignore_case):
            live = True
            break
    return live, end
