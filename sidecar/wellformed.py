"""Text every library can take: lone surrogates replaced, length and offsets unchanged.

A Python `str` can hold surrogate code points (U+D800 to U+DFFF) that no UTF-8 encoder
accepts: a JSON completion carries them as escapes (`"\\ud800"`, a reversed pair
`"\\udfff\\ud800"`), and `json.loads` hands them over as they are. spaCy, RE2 and
anything else that encodes to UTF-8 then raises, and a stage that raises is a stage the
model switched off. So every text a stage analyses is first made well-formed, like
ECMAScript's `String.prototype.toWellFormed`: each surrogate code point becomes U+FFFD.
One code point for one code point, so every offset found in the copy is an offset in
the original. (In a Python `str` even a high-low pair is two code points that cannot be
encoded, so every surrogate is replaced, paired or not.)
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """`text` with every surrogate code point replaced by U+FFFD (same length)."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def has_surrogates(text: str) -> bool:
    """Whether `text` holds a code point that UTF-8 cannot encode."""
    return not text.isascii() and _SURROGATE.search(text) is not None
