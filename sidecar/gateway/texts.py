"""Where the text is in an OpenAI-style JSON body, and how to put inspected text back.

A `Slot` names one string inside the parsed body (the dict or list holding it and its
key). The inspection sees the slots' strings as the messages of one chat request, in
order; the verdict's messages are written back into the same slots, so every other
field passes through untouched. Parts the pipeline cannot read (images, audio, files,
token arrays) are refused with InvalidRequest rather than forwarded uninspected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.errors import InvalidRequest
from sidecar.types import Message

# Content-part types that carry no text we could inspect: refused, never passed on blind.
UNINSPECTABLE = frozenset({"image_url", "input_image", "input_audio", "input_file", "file",
                           "audio", "image"})
MAX_ROLE_CHARS = 64


@dataclass(frozen=True)
class Slot:
    holder: Any  # dict or list
    key: Any  # str or int
    role: str

    @property
    def text(self) -> str:
        value = self.holder[self.key]
        assert isinstance(value, str)
        return value

    def put(self, text: str) -> None:
        self.holder[self.key] = text


def messages_of(slots: list[Slot]) -> tuple[Message, ...]:
    return tuple(Message(slot.role[:MAX_ROLE_CHARS], slot.text) for slot in slots)


def write_back(slots: list[Slot], messages: tuple[Message, ...]) -> None:
    for slot, message in zip(slots, messages, strict=True):
        slot.put(message.content)


def _str_slot(holder: dict[str, Any], key: str, role: str, where: str,
              slots: list[Slot]) -> None:
    value = holder.get(key)
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{key}: expected a string")
    slots.append(Slot(holder, key, role))


def _parts(content: list[Any], role: str, where: str, slots: list[Slot]) -> None:
    for index, part in enumerate(content):
        here = f"{where}[{index}]"
        if isinstance(part, str):  # some SDKs send bare strings in arrays
            slots.append(Slot(content, index, role))
            continue
        if not isinstance(part, dict):
            raise InvalidRequest(f"{here}: expected a content part object")
        kind = part.get("type")
        if kind in UNINSPECTABLE:
            raise InvalidRequest(f"{here}: a '{kind}' part cannot be inspected by the "
                                 "guardrail; send text only")
        for key in ("text", "refusal"):
            _str_slot(part, key, role, here, slots)


def _tool_calls(message: dict[str, Any], role: str, where: str, slots: list[Slot]) -> None:
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise InvalidRequest(f"{where}.tool_calls: expected an array")
        for index, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                _str_slot(function, "arguments", role, f"{where}.tool_calls[{index}].function",
                          slots)
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        _str_slot(legacy, "arguments", role, f"{where}.function_call", slots)


def _message(message: Any, where: str, slots: list[Slot], default_role: str = "") -> None:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where}: expected a message object")
    role = message.get("role", default_role)
    role = role if isinstance(role, str) else ""
    content = message.get("content")
    if isinstance(content, str):
        slots.append(Slot(message, "content", role))
    elif isinstance(content, list):
        _parts(content, role, f"{where}.content", slots)
    elif content is not None:
        raise InvalidRequest(f"{where}.content: expected a string or an array of parts")
    _str_slot(message, "refusal", role, where, slots)
    _tool_calls(message, role, where, slots)


def chat_prompt(body: dict[str, Any]) -> list[Slot]:
    """Every message of a chat request: contents, parts, tool results, earlier calls."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty array of messages is required")
    slots: list[Slot] = []
    for index, message in enumerate(messages):
        _message(message, f"messages[{index}]", slots)
    return slots


def chat_completion(body: dict[str, Any]) -> list[Slot]:
    """The answer's contents, refusals and tool-call arguments, every choice."""
    slots: list[Slot] = []
    choices = body.get("choices")
    if not isinstance(choices, list):
        return slots
    for index, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            _message(message, f"choices[{index}].message", slots, "assistant")
    return slots


def embeddings_input(body: dict[str, Any]) -> list[Slot]:
    """The texts to embed; token arrays cannot be inspected and are refused."""
    value = body.get("input")
    if isinstance(value, str):
        return [Slot(body, "input", "user")]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("input: a string or a non-empty array of strings is required")
    if not all(isinstance(item, str) for item in value):
        raise InvalidRequest("input: token arrays cannot be inspected by the guardrail; "
                             "send the text")
    return [Slot(value, index, "user") for index in range(len(value))]


def responses_input(body: dict[str, Any]) -> list[Slot]:
    """The Responses API request: instructions, input text or items (messages, tool
    outputs, earlier tool calls)."""
    slots: list[Slot] = []
    _str_slot(body, "instructions", "system", "request", slots)
    value = body.get("input")
    if isinstance(value, str):
        slots.append(Slot(body, "input", "user"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _response_item(item, f"input[{index}]", slots, "user")
    elif value is not None:
        raise InvalidRequest("input: expected a string or an array of items")
    if not slots:
        raise InvalidRequest("input: nothing to send")
    return slots


def responses_output(body: dict[str, Any]) -> list[Slot]:
    slots: list[Slot] = []
    output = body.get("output")
    if isinstance(output, list):
        for index, item in enumerate(output):
            _response_item(item, f"output[{index}]", slots, "assistant")
    if isinstance(body.get("output_text"), str):
        slots.append(Slot(body, "output_text", "assistant"))
    return slots


def _response_item(item: Any, where: str, slots: list[Slot], role: str) -> None:
    if isinstance(item, str):
        raise InvalidRequest(f"{where}: expected an item object")
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: expected an item object")
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        _message(item, where, slots, role)
    elif kind in ("function_call", "custom_tool_call"):
        _str_slot(item, "arguments", role, where, slots)
        _str_slot(item, "input", role, where, slots)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        if isinstance(output, list):
            _parts(output, "tool", f"{where}.output", slots)
        else:
            _str_slot(item, "output", "tool", where, slots)
    elif kind in UNINSPECTABLE:
        raise InvalidRequest(f"{where}: a '{kind}' item cannot be inspected by the "
                             "guardrail; send text only")
