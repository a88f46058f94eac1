"""The private details of `jsonschema` we rely on to validate hostile JSON in bounded time.

`jsonschema` is written for trusted input. Three of its habits let a model's output,
checked against an ordinary schema, stall or crash the schema stage:

- it evaluates `pattern`, `patternProperties` (and their use by `additionalProperties`
  and `unevaluatedProperties`) with Python's backtracking `re`:
  `^([a-zA-Z0-9]+)*@example\\.com$` against 31 characters takes seconds, doubling with
  each one more;
- `uniqueItems` falls back to comparing every pair of items when they cannot be sorted
  (objects): quadratic in the array's length;
- `anyOf` / `oneOf` / `unevaluated*` re-validate subtrees, so some recursive schemas cost
  time exponential in the document's depth (`anyOf` of two recursive branches plus
  `unevaluatedProperties`: 33 s at 12 levels).

`harden()` therefore replaces the `re` module those keyword modules call by an RE2
search (linear time; patterns were all checked at load, see sidecar.stages.schema) and
`uniq` by a hash-based one (linear), for every validator class, including those
jsonschema switches to for a built-in meta-schema. `BoundedValidator` is Draft 2020-12
with every keyword counted against a budget that `validate` sets per document, so the
work is bounded by the document's size whatever the schema does: running out of budget
is a validation error, never a hang.

Written for jsonschema 4.26: `harden()` refuses to patch any other version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sidecar.wellformed import well_formed

JSONSCHEMA_VERSION = "4.26.0"
# Compiled schema patterns kept per process; every one was checked when its policy loaded.
_MAX_CACHED_PATTERNS = 4096


class BudgetExceeded(Exception):
    """Validation took more keyword evaluations than the document's budget allows."""


class _Budget(threading.local):
    left: int | None = None


_budget = _Budget()


def _spend() -> None:
    left = _budget.left
    if left is not None:
        if left <= 0:
            raise BudgetExceeded
        _budget.left = left - 1


class _Re2Search:
    """Stands in for the `re` module inside jsonschema's keyword modules: `search` only.

    Patterns compile with RE2 (sidecar.regex) and are cached; one that RE2 refuses raises
    ValueError, never falls back to `re`. Lone surrogates in the searched string (JSON
    lets a model write `"\\ud800"`) become U+FFFD, since RE2 reads UTF-8.
    """

    def __init__(self) -> None:
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    def compiled(self, pattern: str) -> Any:
        found = self._compiled.get(pattern)
        if found is None:
            from sidecar.regex import compile_re2

            # An alternation of checked patterns (additionalProperties joins a schema's
            # patternProperties with "|") may be longer than one author-written pattern.
            found = compile_re2(pattern, max_length=1 << 24)
            with self._lock:
                if len(self._compiled) >= _MAX_CACHED_PATTERNS:
                    self._compiled.clear()
                self._compiled[pattern] = found
        return found

    def search(self, pattern: str, string: str, flags: int = 0) -> Any:
        if flags:
            raise ValueError("regex flags are not supported by the RE2 search")
        return self.compiled(pattern).search(well_formed(string))


RE2 = _Re2Search()


def _key(value: Any) -> Any:
    """A hashable key equal for exactly the values JSON Schema calls equal.

    1 and 1.0 are equal (Python's int/float hashes agree), true and 1 are not, objects
    compare by their members regardless of order. Recursion is bounded by the document's
    depth (sidecar.jsontext.MAX_DEPTH).
    """
    if value is True or value is False:
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if value is None:
        return ("null",)
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_key(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((name, _key(item)) for name, item in value.items()))
    return ("other", id(value))


def unique(container: Any) -> bool:
    """Whether all of an array's items are distinct, in time linear in its size."""
    seen: set[Any] = set()
    for item in container:
        key = _key(item)
        if key in seen:
            return False
        seen.add(key)
    return True


_hardened = False
_harden_lock = threading.Lock()


def harden() -> None:
    """Make jsonschema's regexes RE2 and `uniqueItems` linear, for every validator class."""
    global _hardened  # noqa: PLW0603 - once per process
    if _hardened:
        return
    with _harden_lock:
        if _hardened:
            return
        from importlib.metadata import version

        from jsonschema import _keywords, _legacy_keywords, _utils

        found = version("jsonschema")
        if found != JSONSCHEMA_VERSION:
            raise RuntimeError(f"sidecar.schemacompat was written for jsonschema "
                               f"{JSONSCHEMA_VERSION}, found {found}: review it")
        for module in (_keywords, _utils, _legacy_keywords):
            module.re = RE2
        _keywords.uniq = unique
        _hardened = True


def _counted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def evaluate(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _spend()
        return keyword(validator, value, instance, schema)

    evaluate.__name__ = keyword.__name__
    evaluate.__doc__ = keyword.__doc__
    return evaluate


_bounded: Any = None


def bounded_validator() -> Any:
    """Draft 2020-12, every keyword counted against the running document's budget."""
    global _bounded  # noqa: PLW0603 - one class per process
    if _bounded is None:
        from jsonschema import Draft202012Validator, validators

        harden()
        _bounded = validators.extend(
            Draft202012Validator,
            {name: _counted(keyword)
             for name, keyword in Draft202012Validator.VALIDATORS.items()})
    return _bounded


def errors_within(validator: Any, instance: Any, budget: int, most: int) -> list[Any]:
    """Up to `most` of `validator`'s errors for `instance`, in at most `budget` keyword
    evaluations (this thread's budget while it runs); BudgetExceeded when they run out."""
    previous = _budget.left
    _budget.left = budget
    try:
        errors = []
        for error in validator.iter_errors(instance):
            errors.append(error)
            if len(errors) >= most:
                break
        return errors
    finally:
        _budget.left = previous
