"""JSON found in a completion, with the position of every string value in the raw text.

Models answer with plain JSON or with prose around a fenced ```json block. We parse the
whole text, else the first such block, refusing what would hurt us or mislead a
validator: nesting deeper than a limit (checked on the raw text before parsing: Python's
parser and the validator recurse), duplicate keys (which value did the app see?), numbers
that are not finite, have more than MAX_NUMBER_CHARS characters or lie outside the range
of a double (a schema's `multipleOf` divides by floats).

For each string value we keep its decoded text and, per decoded character, its offset
in the raw completion, so stages can inspect the values and their findings and edits
land on the right characters of what the model sent. A lone surrogate escape
(`\\ud800`) decodes to U+FFFD in those values, one character for one, so no stage is
handed text that UTF-8 cannot encode. Replacement text is JSON-escaped when it is put
back, surrogates included, so the document stays valid JSON.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.wellformed import REPLACEMENT

MAX_NUMBER_CHARS = 400
# The one nesting limit, for completions and schema files alike (a policy may only lower
# it). json.loads and the JSON Schema validator both recurse, and Python stops at 1000
# frames: a recursive schema (`anyOf` + `$ref: "#"`) costs the validator about 6 frames
# per level, so 128 levels (~770 frames) leave room for the caller. Deeper JSON is refused
# before it is parsed, with this number in the message.
MAX_DEPTH = 128
# The largest magnitude a double holds: integers beyond it make `multipleOf` raise
# OverflowError in the validator, and no app decodes them the same way anyway.
_LARGEST = int(sys.float_info.max)
_FENCE = re.compile(r"```(?:json|JSON)[ \t]*\r?\n(.*?)```", re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}


class JsonProblem(ValueError):
    """The completion is not acceptable JSON; the message names why, never the content."""


@dataclass(frozen=True, slots=True)
class StringValue:
    pointer: str  # JSON Pointer of the value
    value: str  # decoded
    origin: Sequence[int]  # raw offset of each decoded character
    raw_start: int  # offset of the opening quote
    raw_end: int  # offset just past the closing quote
    outside: bool = False  # the text outside every string value (outside_strings)
    number: bool = False  # a number token: an edit replaces it with a JSON string

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Raw span of decoded characters [start, end)."""
        if end <= start:
            position = self.origin[start] if start < len(self.origin) else self.raw_end - 1
            return position, position
        last = self.origin[end - 1]
        # The last character may be an escape sequence (\\n, \\u00e9, a surrogate pair).
        following = self.origin[end] if end < len(self.origin) else self.raw_end - 1
        return self.origin[start], max(last + 1, following)


@dataclass(frozen=True)
class ParsedJson:
    data: Any
    offset: int  # where the JSON starts in the completion (0, or inside a fence)
    strings: tuple[StringValue, ...]
    # Every number token (raw text), for outside_strings and inspected_numbers.
    numbers: tuple[StringValue, ...] = ()


# A JSON number is inspected (as a value of its own) only when it could be a payment
# card number: an integer of 14-19 digits whose first digit is an issuer's (3-6).
# Other numbers are ids, counts, prices, timestamps and barcodes: every epoch second
# since 2001 has ten digits, every epoch microsecond sixteen starting with 1, an EAN-13
# thirteen (7% of them read as cards or phones: trial 21), and phone and card detectors
# read ~10% of such numbers as PII (trial 20).
_CARD_LIKE = re.compile(r"-?[3-6][0-9]{13,18}")


def inspected_numbers(parsed: ParsedJson) -> tuple[StringValue, ...]:
    """The number tokens worth inspecting as values (see _CARD_LIKE)."""
    return tuple(number for number in parsed.numbers if _CARD_LIKE.fullmatch(number.value))


# What the text outside the values holds when there is nothing there to inspect: JSON's
# punctuation, whitespace and true/false/null (an array of values, say).
_ONLY_SYNTAX = re.compile(r"(?:[\s{}\[\],:]|true|false|null)*")


def worth_inspecting(outside: StringValue) -> bool:
    """Whether the text outside the values holds anything but JSON's own syntax: prose,
    another block, keys (a key is text a reader sees: a blocked word or an e-mail
    address there is caught). A document of values alone costs no NER pass for nothing."""
    return _ONLY_SYNTAX.fullmatch(outside.value) is None


def outside_strings(completion: str, strings: tuple[StringValue, ...]) -> StringValue:
    """Everything of the completion that is not a string value or a number, as one
    pseudo-value the stages inspect beside the values: prose around a ```json block, a
    second block, object keys. Each value's raw span (a string's quotes included) is
    blanked with spaces, so offsets are the completion's own and no match can join text
    across values (numbers side by side would read as phone numbers)."""
    chars = list(completion)
    for value in strings:
        chars[value.raw_start:value.raw_end] = " " * (value.raw_end - value.raw_start)
    return StringValue("", "".join(chars), range(len(completion)), 0,
                       len(completion), outside=True)


def parse(completion: str, max_depth: int = MAX_DEPTH) -> ParsedJson:
    """The completion's JSON document, or JsonProblem. `max_depth` is capped at MAX_DEPTH."""
    max_depth = min(max_depth, MAX_DEPTH)
    stripped = completion.strip()
    fence = _FENCE.search(completion)
    if stripped[:1] in ("{", "[", '"', "-") or stripped[:1].isdigit() \
            or stripped in ("true", "false", "null"):
        start = len(completion) - len(completion.lstrip())
        try:
            return _parse_at(completion, start, start + len(stripped), max_depth)
        except JsonProblem:
            # Prose that happens to start like JSON ("[Note] ..." or a redacted
            # "[REDACTED], ...") before a ```json block: the block is the document.
            if fence is None:
                raise
    if fence is None:
        raise JsonProblem("not JSON, and no ```json block found")
    body = fence.group(1)
    inner = body.strip()
    if not inner:
        raise JsonProblem("the ```json block is empty")
    start = fence.start(1) + body.index(inner[0])
    return _parse_at(completion, start, start + len(inner), max_depth)


def _parse_at(text: str, start: int, end: int, max_depth: int) -> ParsedJson:
    source = text[start:end]
    depth = _max_depth(source)
    if depth > max_depth:
        raise JsonProblem(f"JSON nests deeper than {max_depth} levels")
    # Within MAX_DEPTH, json.loads cannot run out of stack: no RecursionError to catch.
    try:
        data = json.loads(source, object_pairs_hook=_no_duplicates, parse_int=_int,
                          parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as err:
        # err.msg and position only: never the document itself.
        raise JsonProblem(f"not valid JSON: {err.msg} at line {err.lineno} column "
                          f"{err.colno}") from None
    strings, numbers = _strings(text, start, end)
    return ParsedJson(data, start, tuple(strings), tuple(numbers))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # The key is the model's text: name the problem, not the key.
            raise JsonProblem("duplicate key in an object (which value would the app use?)")
        out[key] = value
    return out


def _int(token: str) -> int:
    # Checked before int(): Python refuses to convert more than 4300 digits (ValueError).
    if len(token) > MAX_NUMBER_CHARS:
        raise JsonProblem(f"a number is longer than {MAX_NUMBER_CHARS} digits")
    value = int(token)
    if abs(value) > _LARGEST:
        raise JsonProblem("a number is too large to represent")
    return value


def _float(token: str) -> float:
    if len(token) > MAX_NUMBER_CHARS:
        raise JsonProblem(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    value = float(token)
    if not math.isfinite(value):
        raise JsonProblem("a number is too large to represent")
    return value


def _constant(token: str) -> float:
    raise JsonProblem(f"{token} is not valid JSON")


def _max_depth(source: str) -> int:
    """Deepest nesting of arrays/objects, in one linear pass that skips strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in source:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _strings(text: str, start: int, end: int
             ) -> tuple[list[StringValue], list[StringValue]]:
    """Every string value (not key) of the valid JSON text[start:end], with its pointer;
    and every number token, as written."""
    out: list[StringValue] = []
    numbers: list[StringValue] = []
    walker = _Walker()
    position = start
    while position < end:
        char = text[position]
        if char == '"':
            value, origin, close = _decode(text, position)
            after = close
            while after < end and text[after] in " \t\r\n":
                after += 1
            if walker.in_object() and after < end and text[after] == ":":
                walker.key = value
            else:
                out.append(StringValue(walker.pointer(), value, origin, position, close))
                walker.value_done()
            position = close
            continue
        if char in "[{":
            walker.open("array" if char == "[" else "object")
        elif char in "]}":
            walker.close()
        elif char not in " \t\r\n,:":
            # A number, true, false or null: skip the token (keep a number's place).
            token_start = position
            while position < end and text[position] not in " \t\r\n,]}":
                position += 1
            if char not in "tfn":
                numbers.append(StringValue(walker.pointer(), text[token_start:position],
                                           range(token_start, position),
                                           token_start, position, number=True))
            walker.value_done()
            continue
        position += 1
    return out, numbers


class _Walker:
    """Where we are in the document, as JSON Pointer tokens."""

    def __init__(self) -> None:
        # Per open container: its kind, its own token in its parent, its next array index.
        self.stack: list[tuple[str, str | None, list[int]]] = []
        self.key: str | None = None

    def in_object(self) -> bool:
        return bool(self.stack) and self.stack[-1][0] == "object"

    def _token(self) -> str | None:
        if not self.stack:
            return None
        kind, _, index = self.stack[-1]
        if kind == "array":
            return str(index[0])
        return (self.key or "").replace("~", "~0").replace("/", "~1")

    def pointer(self) -> str:
        tokens = [token for _, token, _ in self.stack if token is not None]
        last = self._token()
        return "".join("/" + t for t in [*tokens, *([last] if last is not None else [])])

    def open(self, kind: str) -> None:
        self.stack.append((kind, self._token(), [0]))
        self.key = None

    def close(self) -> None:
        self.stack.pop()
        self.value_done()

    def value_done(self) -> None:
        if self.stack and self.stack[-1][0] == "array":
            self.stack[-1][2][0] += 1
        self.key = None


def _decode(text: str, quote: int) -> tuple[str, tuple[int, ...], int]:
    """Decode the JSON string at text[quote]; return value, origin offsets, end offset."""
    chars: list[str] = []
    origin: list[int] = []
    position = quote + 1
    while True:
        char = text[position]
        if char == '"':
            return "".join(chars), tuple(origin), position + 1
        if char != "\\":
            chars.append(char if char < "\ud800" or char > "\udfff" else REPLACEMENT)
            origin.append(position)
            position += 1
            continue
        kind = text[position + 1]
        if kind != "u":
            chars.append(_ESCAPES[kind])
            origin.append(position)
            position += 2
            continue
        code = int(text[position + 2:position + 6], 16)
        width = 6
        if 0xD800 <= code <= 0xDBFF and text[position + 6:position + 8] == "\\u":
            low = int(text[position + 8:position + 12], 16)
            if 0xDC00 <= low <= 0xDFFF:
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                width = 12
        # A surrogate left unpaired (lone, reversed, followed by a non-low escape).
        chars.append(REPLACEMENT if 0xD800 <= code <= 0xDFFF else chr(code))
        origin.append(position)
        position += width


_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_for_json_string(value: str) -> str:
    """`value` as it must appear between the quotes of a JSON string.

    Non-ASCII characters stay as they are, except surrogates: json.dumps would write
    them raw, and a raw surrogate makes the whole response unencodable (UTF-8, protobuf).
    They are written as `\\uXXXX` escapes, which any JSON parser reads back.
    """
    escaped = json.dumps(value, ensure_ascii=False)[1:-1]
    if escaped.isascii():
        return escaped
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped)
