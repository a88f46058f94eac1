"""Linear-time regular expressions for everything policy authors write.

Policies are edited by people, not reviewed by a regex expert: a pattern such as
`(a+)+b` must not be able to hang the sidecar. RE2 guarantees time linear in the input and
refuses constructs that would need backtracking (lookaround, backreferences), so every
policy pattern is compiled here and nowhere else.
"""

from __future__ import annotations

import bisect
from typing import Any

import re2

from sidecar.wellformed import has_surrogates

MAX_PATTERN_LENGTH = 4096
# Memory RE2 may use per compiled program; larger patterns are refused, not truncated.
MAX_PROGRAM_MEMORY = 64 * 1024 * 1024


def compile_re2(pattern: str, *, ignore_case: bool = False,
                max_length: int = MAX_PATTERN_LENGTH) -> Any:
    """Compile `pattern` with RE2 or raise ValueError with a message fit for a policy author.

    `max_length` is raised only for patterns we assemble from checked ones (the
    alternation of a schema's `patternProperties`), never for what an author wrote.
    """
    if len(pattern) > max_length:
        raise ValueError(f"pattern is longer than {max_length} characters")
    if has_surrogates(pattern):  # RE2 takes UTF-8: it would raise UnicodeEncodeError
        raise ValueError("pattern contains a lone surrogate (\\uD800-\\uDFFF), which RE2 "
                         "cannot match")
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    options.max_mem = MAX_PROGRAM_MEMORY
    try:
        return re2.compile(pattern, options)
    except re2.error as err:
        reason = err.args[0] if err.args else str(err)
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"not a valid RE2 pattern ({reason}); RE2 has no lookaround or backreferences"
        ) from None


class Utf8Text:
    """One text for many RE2 searches at positions, each costing what it reads.

    google-re2's Python wrapper encodes the whole str to UTF-8, and counts characters
    from its start up to `pos`, on every `search(text, pos)` or `match(text, pos)`. A
    loop of such calls over one text is quadratic: the address recognizer took 1.3 s on
    a 100 KB prompt (0.04 ms on 1 KB), nearly all of it in that encoding. Here the text
    is encoded once and searched as bytes; offsets are converted between characters and
    bytes from the nearest offset converted before (searches move forward, so each
    conversion reads a short stretch), and not at all for ASCII text.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode("utf-8")
        self.ascii = len(self.data) == len(text)
        self._chars = [0]  # offsets converted so far, sorted: in characters
        self._bytes = [0]  # ... and the same offsets in bytes

    def search(self, pattern: Any, pos: int = 0) -> tuple[int, int] | None:
        """The (start, end) in characters of `pattern`'s first match at or after `pos`."""
        return self._span(pattern.search(self.data, self.to_byte(pos)))

    def match(self, pattern: Any, pos: int) -> tuple[int, int] | None:
        """The (start, end) in characters of `pattern`'s match starting at `pos`."""
        return self._span(pattern.match(self.data, self.to_byte(pos)))

    def _span(self, found: Any) -> tuple[int, int] | None:
        if found is None:
            return None
        start, end = found.span()
        return self.to_char(start), self.to_char(end)

    def to_byte(self, char: int) -> int:
        if self.ascii:
            return char
        index = bisect.bisect_right(self._chars, char) - 1
        known_char, known_byte = self._chars[index], self._bytes[index]
        byte = known_byte + len(self.text[known_char:char].encode("utf-8"))
        self._remember(index, char, byte)
        return byte

    def to_char(self, byte: int) -> int:
        """`byte` must be where a character starts (or the end): RE2 matches are."""
        if self.ascii:
            return byte
        index = bisect.bisect_right(self._bytes, byte) - 1
        known_char, known_byte = self._chars[index], self._bytes[index]
        char = known_char + len(self.data[known_byte:byte].decode("utf-8"))
        self._remember(index, char, byte)
        return char

    def _remember(self, index: int, char: int, byte: int) -> None:
        if self._chars[index] != char:
            self._chars.insert(index + 1, char)
            self._bytes.insert(index + 1, byte)
