"""How a request's tenant, app, region and attributes meet a policy's globs.

Identifiers are compared folded, never as sent: `EU-WEST-1` must select the rule written
for `eu-*`, or a request in upper case falls through to a more permissive rule (a
guardrail that fails open on the shift key). Folding is NFKC (fullwidth letters,
U+FF21..U+FF5A, are plain ones), then case folding, then surrounding whitespace removed;
the policy's globs are folded the same way when they are compiled. Globs are
shell-style (`*`, `?`, `[...]`).

What folding cannot make equal (a Cyrillic E, U+0415, in `EU-west-1`) stays unequal; where
that could select a weaker rule, the caller refuses the value instead (the residency
stage blocks a region name that is not plain ASCII).
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata

GLOB_CHARS = re.compile(r"[*?\[]")
# A region, once folded: what cloud providers call their regions (eu-west-1, europe-west4).
REGION_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def fold(value: str) -> str:
    """NFKC case-folded, without surrounding whitespace: the form every match compares."""
    if value.isascii():
        return value.lower().strip()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()
                                 ).strip()


_BLANKS = re.compile(r"\s+")


def fold_words(value: str) -> str:
    """`fold`, with every run of whitespace inside made one space: the form request
    attributes compare. Their values are words people write (`free trial`, `cc 1001`);
    a tab or a double space is not a different plan."""
    return _BLANKS.sub(" ", fold(value))


def fold_glob(pattern: str) -> str:
    return fold(pattern)


def glob_matches(folded_value: str, folded_pattern: str) -> bool:
    """Both sides already folded (see `fold`)."""
    if folded_pattern == "*":
        return True
    if not GLOB_CHARS.search(folded_pattern):
        return folded_value == folded_pattern
    return fnmatch.fnmatchcase(folded_value, folded_pattern)


def any_glob(folded_value: str, folded_patterns: tuple[str, ...]) -> bool:
    return any(glob_matches(folded_value, pattern) for pattern in folded_patterns)
