"""Where the text is in an OpenAI-style JSON body, and how to put inspected text back.

A `Slot` names one string inside the parsed body (the dict or list holding it and its
key). The inspection sees the slots' strings as the messages of one chat request, in
order; the verdict's messages are written back into the same slots, so every other
field passes through untouched. Parts the pipeline cannot read (images, audio, files,
token arrays) are refused with InvalidRequest rather than forwarded uninspected.

Responses API items other than messages (function and custom tool calls and their
outputs, code interpreter, MCP, file and web search, shell, patch and computer calls)
are read deny-by-default: every string in them is a slot, at any depth, except
the structural fields that name things (`STRUCTURAL`: type, ids, status, names)
and the opaque blobs of the types that carry one (`BLOBS`). An item or part type the
gateway does not know, or one that carries a blob (a generated image, a screenshot,
an image, audio or file part), is refused (`Uninspectable`) unless the policy's
`gateway.pass_items` names it; then its blob passes and its other strings are still
inspected.

JSON Schemas the model reads (tool parameters, structured outputs) are read like
prompt text: their prose (descriptions, enums, defaults...) is rewritten in place;
their names (keys, `$ref`, `required`, `type`...) are one read-only text (`NamesSlot`)
that can block but is never rewritten, so the schema stays valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sidecar.errors import InvalidRequest
from sidecar.types import Message

# Content-part types that carry no text we could inspect: refused, never passed on blind.
UNINSPECTABLE = frozenset({"image_url", "input_image", "input_audio", "input_file", "file",
                           "audio", "image"})
MAX_ROLE_CHARS = 64
# Content-part types whose text is read; any other type is refused like an image.
KNOWN_PARTS = frozenset({"text", "input_text", "output_text", "refusal", "summary_text",
                         "reasoning_text"})
# Fields of a Responses item that name or identify rather than say something: never
# slots (rewriting an id or a function name would break the call), at any depth.
STRUCTURAL = frozenset({"type", "id", "call_id", "tool_call_id", "item_id", "status",
                        "role", "name", "server_label", "approval_request_id", "encrypted_content",
                        "file_id", "container_id", "vector_store_id", "output_format",
                        "background", "quality", "size", "detail", "phase", "environment",
                        "action_type", "mime_type"})
# Item types the gateway reads, and the fields holding an opaque blob in those that
# carry one: such an item needs the policy's `gateway.pass_items` (the blob cannot be
# inspected); its other strings are slots.
KNOWN_ITEMS = frozenset({
    "message", "function_call", "function_call_output", "custom_tool_call",
    "custom_tool_call_output", "reasoning", "code_interpreter_call", "mcp_call",
    "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "file_search_call",
    "web_search_call", "computer_call", "local_shell_call", "local_shell_call_output",
    "shell_call", "shell_call_output", "apply_patch_call", "apply_patch_call_output",
    "item_reference", "compaction", "tool_search_call", "tool_search_output",
    "image_generation_call", "computer_call_output"})
BLOBS: dict[str, frozenset[str]] = {
    "image_generation_call": frozenset({"result", "partial_image_b64"}),
    "computer_call_output": frozenset({"image_url"}),
}
MAX_DEPTH = 32
# JSON Schemas nest two levels per object (`properties`, then the property): room for
# a deep structured output; the body's own depth limit (http.MAX_BODY_DEPTH) bounds it.
MAX_SCHEMA_DEPTH = 80


class Uninspectable(InvalidRequest):
    """A part or item the guardrail cannot read, and the policy does not let pass."""


Opaque = list[tuple[str, str]]  # (where, type) of what needs `gateway.pass_items`


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


@dataclass(frozen=True)
class NamesSlot(Slot):
    """The names in a JSON Schema (its keys, `$ref`s, `required` entries, types and
    formats), one text the model reads and the inspection sees, so a blocked one
    blocks. Never rewritten: the schema and the app's code refer to them, and names
    are where NER misreads identifiers (`$defs` reads as a PERSON), so a redaction
    there would break a valid schema."""

    names: str = ""

    @property
    def text(self) -> str:
        return self.names

    def put(self, text: str) -> None:
        return  # read-only (see the class docstring)


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


def _parts(content: list[Any], role: str, where: str, slots: list[Slot],
           opaque: Opaque | None = None) -> None:
    for index, part in enumerate(content):
        here = f"{where}[{index}]"
        if isinstance(part, str):  # some SDKs send bare strings in arrays
            slots.append(Slot(content, index, role))
            continue
        if not isinstance(part, dict):
            raise InvalidRequest(f"{here}: expected a content part object")
        kind = part.get("type")
        if kind in UNINSPECTABLE or (kind is not None and kind not in KNOWN_PARTS):
            if opaque is None:
                raise Uninspectable(f"{here}: a '{str(kind)[:64]}' part cannot be inspected "
                                    "by the guardrail; send text only")
            opaque.append((here, str(kind)[:64]))
            continue
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
            custom = call.get("custom") if isinstance(call, dict) else None
            if isinstance(custom, dict):  # a custom tool's free-form input
                _str_slot(custom, "input", role, f"{where}.tool_calls[{index}].custom", slots)
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        _str_slot(legacy, "arguments", role, f"{where}.function_call", slots)


def _message(message: Any, where: str, slots: list[Slot], default_role: str = "",
             opaque: Opaque | None = None) -> None:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where}: expected a message object")
    role = message.get("role", default_role)
    role = role if isinstance(role, str) else ""
    content = message.get("content")
    if isinstance(content, str):
        slots.append(Slot(message, "content", role))
    elif isinstance(content, list):
        _parts(content, role, f"{where}.content", slots, opaque)
    elif content is not None:
        raise InvalidRequest(f"{where}.content: expected a string or an array of parts")
    _str_slot(message, "refusal", role, where, slots)
    # A chat participant's `name`: free text the model reads with the message.
    _str_slot(message, "name", role, where, slots)
    _tool_calls(message, role, where, slots)
    _extras(message, role, where, slots, opaque)


def chat_prompt(body: dict[str, Any], opaque: Opaque | None = None) -> list[Slot]:
    """Every message of a chat request: contents, parts, tool results, earlier calls."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty array of messages is required")
    slots: list[Slot] = []
    for index, message in enumerate(messages):
        _message(message, f"messages[{index}]", slots, opaque=opaque)
    _request_extras(body, slots)
    return slots


def _request_extras(body: dict[str, Any], slots: list[Slot]) -> None:
    """Text a request sends the model besides its messages: tool (and legacy function)
    descriptions and parameter schemas, a custom tool's grammar, a structured output's
    schema (`response_format`, Responses `text.format`), a predicted output
    (`prediction`), a stored prompt's `variables` (Responses)."""
    for name in ("tools", "functions"):  # `functions`: chat's deprecated form of tools
        tools = body.get(name)
        tool_texts(tools if isinstance(tools, list) else [], slots, name)
    response_format = body.get("response_format")  # chat
    if isinstance(response_format, dict):
        _output_schema(response_format.get("json_schema"), "response_format.json_schema",
                       slots)
    text = body.get("text")  # Responses
    if isinstance(text, dict):
        _output_schema(text.get("format"), "text.format", slots)
    prediction = body.get("prediction")
    if isinstance(prediction, dict):
        content = prediction.get("content")
        if isinstance(content, list):
            _parts(content, "assistant", "prediction.content", slots)
        else:
            _str_slot(prediction, "content", "assistant", "prediction", slots)
    prompt = body.get("prompt")
    if isinstance(prompt, dict) and isinstance(prompt.get("variables"), dict):
        for _path, holder, key in _walk(prompt, "variables", "variables", frozenset(), 0,
                                        where="prompt"):
            slots.append(Slot(holder, key, "user"))


# Schema keywords whose strings are names the schema or the app refers to, not prose:
# read with the property names (NamesSlot), never rewritten.
SCHEMA_NAMES = frozenset({"$ref", "$id", "$schema", "$anchor", "$dynamicRef",
                          "$dynamicAnchor", "type", "format", "required", "pattern",
                          "contentEncoding", "contentMediaType", "dependentRequired"})


def _schema(holder: dict[str, Any], key: str, role: str, where: str,
            slots: list[Slot]) -> None:
    """A JSON Schema the model reads. Its prose (descriptions, titles, enums,
    defaults, examples, any string under a key it does not know) is rewritten in place
    like any prompt text; its names (keys, SCHEMA_NAMES) are inspected as one text and
    left as they are, so the structure stays valid."""
    if holder.get(key) is None:
        return
    names: list[str] = []
    stack: list[tuple[Any, Any, int]] = [(holder, key, 0)]
    while stack:
        parent, name, depth = stack.pop()
        value = parent[name]
        if isinstance(value, str):
            if value:
                slots.append(Slot(parent, name, role))
            continue
        if depth >= MAX_SCHEMA_DEPTH:
            raise InvalidRequest(f"{where}.{key}: nested deeper than {MAX_SCHEMA_DEPTH} "
                                 "levels")
        if isinstance(value, dict):
            for inner in value:
                names.append(str(inner))
                if inner in SCHEMA_NAMES:
                    names += _leaves(value[inner])
            # reversed: the stack pops them, and the slots come, in the schema's order
            stack += [(value, inner, depth + 1) for inner in reversed(list(value))
                      if inner not in SCHEMA_NAMES]
        elif isinstance(value, list):
            stack += [(value, index, depth + 1) for index in reversed(range(len(value)))]
    if names:
        slots.append(NamesSlot(holder, key, role, "\n".join(names)))


def _leaves(value: Any) -> list[str]:
    """The strings under a schema-name keyword (`required` is an array, `type` may be)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    if isinstance(value, dict):  # dependentRequired: {name: [names]}
        return [*map(str, value), *(item for inner in value.values()
                                    for item in _leaves(inner) if not isinstance(inner, dict))]
    return []


def _output_schema(spec: Any, where: str, slots: list[Slot]) -> None:
    """A structured output's description and schema: instructions to the model."""
    if isinstance(spec, dict):
        _str_slot(spec, "description", "system", where, slots)
        _schema(spec, "schema", "system", where, slots)


def tool_texts(tools: list[Any], slots: list[Slot], field: str = "tools") -> None:
    """What a request's tools tell the model, as slots: descriptions, every string of a
    function's `parameters` schema, a custom tool's grammar (chat and Responses shapes;
    the LiteLLM door's tools too)."""
    for index, tool in enumerate(tools):
        for holder, where in ((tool, f"{field}[{index}]"),
                              (tool.get("function") if isinstance(tool, dict) else None,
                               f"{field}[{index}].function"),
                              (tool.get("custom") if isinstance(tool, dict) else None,
                               f"{field}[{index}].custom")):
            if isinstance(holder, dict):
                _str_slot(holder, "description", "tool", where, slots)
                _schema(holder, "parameters", "tool", where, slots)
                if holder.get("type", "custom") == "custom":  # its grammar, not a tool's type
                    _schema(holder, "format", "tool", where, slots)


def chat_completion(body: dict[str, Any], opaque: Opaque | None = None) -> list[Slot]:
    """The answer's contents, refusals and tool-call arguments, every choice."""
    return [slot for _index, slots in chat_choices(body, opaque) for slot in slots]


def chat_choices(body: dict[str, Any],
                 opaque: Opaque | None = None) -> list[tuple[int, list[Slot]]]:
    """Each choice of a chat answer with its own slots: (its index, slots), in order.
    Each is inspected as a completion of its own (see the gateway's docstring)."""
    found: list[tuple[int, list[Slot]]] = []
    choices = body.get("choices", [])
    if not isinstance(choices, list):
        raise InvalidRequest("choices: expected an array")
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise InvalidRequest(f"choices[{position}]: expected a choice object")
        message = choice.get("message")
        slots: list[Slot] = []
        if isinstance(message, dict):
            _message(message, f"choices[{position}].message", slots, "assistant", opaque)
        elif message is not None:
            raise InvalidRequest(f"choices[{position}].message: expected an object")
        for name in [key for key in choice if key not in _CHOICE_FIELDS]:
            slots += _strings(choice, name, f"choices[{position}]")
        index = choice.get("index", position)
        found.append((index if isinstance(index, int) else position, slots))
    # Strings the answer carries outside its choices (deny by default): read with the
    # first choice's texts.
    extra = [slot for name in body if name not in _ANSWER_FIELDS
             for slot in _strings(body, name, "answer")]
    if extra:
        if found:
            found[0][1].extend(extra)
        else:
            found.append((0, extra))
    return found


_CHOICE_FIELDS = frozenset({"index", "message", "finish_reason", "logprobs"})
_ANSWER_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage",
                            "system_fingerprint", "service_tier"})


def _strings(holder: dict[str, Any], name: str, where: str) -> list[Slot]:
    if name in STRUCTURAL:
        return []
    return [Slot(inner, key, "assistant") for _path, inner, key in
            _walk(holder, name, name, frozenset(), 0, where=where)]


# The fields of a chat answer's message that `_message` reads.
_MESSAGE_FIELDS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})


def _extras(message: dict[str, Any], role: str, where: str, slots: list[Slot],
            opaque: Opaque | None) -> None:
    """The rest of a message, deny by default: every string in it (a
    `reasoning_content`, an audio transcript, citation titles) is a slot, except names
    and ids; spoken audio cannot be inspected (`audio` in `gateway.pass_items`)."""
    for name in list(message):
        if name in _MESSAGE_FIELDS or name in STRUCTURAL:
            continue
        value = message[name]
        skip: frozenset[str] = frozenset()
        if name == "audio" and isinstance(value, dict) and value.get("data"):
            if opaque is None:
                raise Uninspectable(f"{where}.audio: spoken audio cannot be inspected by "
                                    "the guardrail")
            opaque.append((f"{where}.audio", "audio"))
            skip = frozenset({"data"})
        for _path, holder, key in _walk(message, name, name, skip, 0, where=where):
            slots.append(Slot(holder, key, role))


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


def responses_input(body: dict[str, Any], opaque: Opaque | None = None) -> list[Slot]:
    """The Responses API request: instructions, input text or items (messages, tool
    calls and outputs, server-side tool items). What cannot be read goes to `opaque`
    (None: refused at once)."""
    slots: list[Slot] = []
    _str_slot(body, "instructions", "system", "request", slots)
    value = body.get("input")
    if isinstance(value, str):
        slots.append(Slot(body, "input", "user"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            response_item(item, f"input[{index}]", slots, "user", opaque)
    elif value is not None:
        raise InvalidRequest("input: expected a string or an array of items")
    _request_extras(body, slots)
    if not slots and not opaque:
        raise InvalidRequest("input: nothing to send")
    return slots


def responses_output(body: dict[str, Any], opaque: Opaque | None = None) -> list[Slot]:
    slots: list[Slot] = []
    output = body.get("output")
    if isinstance(output, list):
        for index, item in enumerate(output):
            response_item(item, f"output[{index}]", slots, "assistant", opaque)
    if isinstance(body.get("output_text"), str):
        slots.append(Slot(body, "output_text", "assistant"))
    return slots


def response_item(item: Any, where: str, slots: list[Slot], role: str,
                  opaque: Opaque | None = None) -> None:
    """One Responses item's slots (see the module docstring)."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: expected an item object")
    kind = item.get("type", "message")
    if not isinstance(kind, str):
        raise InvalidRequest(f"{where}.type: expected a string")
    if kind == "message" or ("role" in item and "type" not in item):
        _message(item, where, slots, role, opaque)
        return
    if kind in UNINSPECTABLE or kind in BLOBS or kind not in KNOWN_ITEMS:
        if opaque is None:
            raise Uninspectable(f"{where}: a '{kind[:64]}' item cannot be inspected by the "
                                "guardrail; send text only, or name it in the policy's "
                                "gateway.pass_items")
        opaque.append((where, kind[:64]))
        if kind in UNINSPECTABLE:
            return  # an image, audio or file item: nothing in it is text
    tool_role = "tool" if kind.endswith(("_output", "_response")) else role
    skip = BLOBS.get(kind, frozenset())
    for name, value in list(item.items()):
        if name in STRUCTURAL or name in skip:
            continue
        if kind.endswith("_output") and name == "output" and isinstance(value, list) and \
                all(isinstance(part, dict) and "type" in part for part in value):
            _parts(value, tool_role, f"{where}.output", slots, opaque)  # content parts
            continue
        for _path, holder, key in _walk(item, name, name, skip, 0, where=where):
            slots.append(Slot(holder, key, tool_role))


def _walk(holder: Any, key: Any, path: str, skip: frozenset[str], depth: int, *,
          where: str, empty: bool = False) -> Iterator[tuple[str, Any, Any]]:
    """Every non-empty string under holder[key] but structural fields and blobs, as
    (path, holder, key), the path like "outputs/0/logs": deny by default."""
    value = holder[key]
    if isinstance(value, str):
        if value or empty:
            yield path, holder, key
        return
    if depth >= MAX_DEPTH:
        raise InvalidRequest(f"{where}.{path.replace('/', '.')}: nested deeper than "
                             f"{MAX_DEPTH} levels")
    if isinstance(value, dict):
        for name in list(value):
            if name not in STRUCTURAL and name not in skip:
                yield from _walk(value, name, f"{path}/{name}", skip, depth + 1,
                                 where=where, empty=empty)
    elif isinstance(value, list):
        for index in range(len(value)):
            yield from _walk(value, index, f"{path}/{index}", skip, depth + 1,
                                 where=where, empty=empty)


def item_leaves(item: dict[str, Any], where: str) -> list[tuple[str, Any, Any]]:
    """A streamed output item's texts outside messages and reasoning, named by path
    ("arguments", "outputs/0/logs"): (path, holder, key)."""
    kind = item.get("type")
    skip = BLOBS.get(kind, frozenset()) if isinstance(kind, str) else frozenset()
    return [found for name in list(item) if name not in STRUCTURAL and name not in skip
            for found in _walk(item, name, name, skip, 0, where=where, empty=True)]
