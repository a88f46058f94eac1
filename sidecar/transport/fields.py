"""Every string a caller sends has a size limit, found from the proto's descriptor.

Content (a prompt, a message, a streamed chunk) is bounded by `max_text_bytes`. Every
other string field (ids, tenant, app, regions, a message's role, attribute keys and
values, and any field added to the proto later) has its own small maximum, and its
bytes count against `max_text_bytes` too: a megabyte of `Message.role` used to be
accepted, never counted and never inspected. Walking the descriptor rather than a list
of names means a new field is bounded the day it is added (DEFAULT_MAX_CHARS), and the
red-team suite, which generates its cases from the same descriptor, attacks it.

Errors name the field path (`messages.messages[3].role`) and the limit, never the value.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from sidecar.errors import InvalidRequest, RequestTooLarge

# Fields that carry the text to inspect: bounded only by max_text_bytes (in total).
CONTENT_FIELDS = frozenset({
    "guardrail.v1.InspectRequest.text",
    "guardrail.v1.Message.content",
    "guardrail.v1.CompletionChunk.text",
})
# Characters (code points) allowed in the other string fields. Ids and names: 128, as
# documented in guardrail.proto; a role is a word ("system", "user", "tool", ...).
MAX_CHARS = {
    "guardrail.v1.Message.role": 64,
    "guardrail.v1.InspectRequest.AttributesEntry.key": 128,
    "guardrail.v1.InspectRequest.AttributesEntry.value": 1024,
}
DEFAULT_MAX_CHARS = 128  # every other string field, including ones added later


def max_chars(field: FieldDescriptor) -> int | None:
    """The most characters `field` may hold (None: content, bounded by bytes in total)."""
    if field.full_name in CONTENT_FIELDS:
        return None
    return MAX_CHARS.get(field.full_name, DEFAULT_MAX_CHARS)


def check(message: Any, max_bytes: int, path: str = "") -> int:
    """Check every string in `message` (recursively); return their UTF-8 bytes in total.

    Raises InvalidRequest for a field over its own maximum, RequestTooLarge when all of
    them together exceed `max_bytes`.
    """
    total = _walk(message, path)
    if total > max_bytes:
        raise RequestTooLarge(f"{path or 'request'}: {total} bytes of text exceed the limit "
                              f"of {max_bytes} bytes (content and every other string field "
                              "count)")
    return total


def _walk(message: Any, path: str) -> int:
    total = 0
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if _is_map(field):
            key_field, value_field = field.message_type.fields_by_name["key"], \
                field.message_type.fields_by_name["value"]
            for key, item in value.items():
                total += _string(key_field, key, name, "a key")
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    total += _walk(item, f"{name}[]")
                else:
                    total += _string(value_field, item, name, "a value")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_repeated(field):
                for index, item in enumerate(value):
                    total += _walk(item, f"{name}[{index}]")
            else:
                total += _walk(value, name)
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            items = value if _is_repeated(field) else [value]
            for index, item in enumerate(items):
                total += _string(field, item, f"{name}[{index}]" if _is_repeated(field)
                                 else name, "")
    return total


def _string(field: FieldDescriptor, value: Any, name: str, what: str) -> int:
    if not isinstance(value, str | bytes):
        return 0  # a map key of another type
    limit = max_chars(field)
    if limit is not None and len(value) > limit:
        unit = "bytes" if isinstance(value, bytes) else "characters"
        raise InvalidRequest(f"{name}: {what + ' ' if what else ''}longer than {limit} {unit}")
    if isinstance(value, bytes):
        return len(value)
    return len(value.encode("utf-8", "surrogatepass"))


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None
            and bool(field.message_type.GetOptions().map_entry))


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
