"""Linear-time regular expressions for everything policy authors write.

Policies are edited by people, not reviewed by a regex expert: a pattern such as
`(a+)+b` must not be able to hang the sidecar. RE2 guarantees time linear in the input and
refuses constructs that would need backtracking (lookaround, backreferences), so every
policy pattern is compiled here and nowhere else.
"""

from __future__ import annotations

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
