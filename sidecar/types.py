"""Domain types shared by the pipeline, its stages and the transport.

They are plain frozen dataclasses so the core never depends on protobuf or grpc: the
transport converts messages to an `Inspection` and a `Verdict` back to a response.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class _Compact:
    """Pickles as (class, field values): verdicts cross the pipe from every worker, and
    the default pickling of slotted dataclasses (a state dict per object) cost ~0.6 ms
    for a 40-message chat verdict, more than the pipeline itself when it is cached."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        kind = type(self)
        names: tuple[str, ...] = kind.__slots__  # the fields, set by dataclass(slots=True)
        return kind, tuple(getattr(self, name) for name in names)


class Direction(enum.Enum):
    PROMPT = "prompt"
    COMPLETION = "completion"


class Decision(enum.IntEnum):
    """Ordered so that `max()` gives the precedence BLOCK > MODIFY > ALLOW."""

    ALLOW = 1
    MODIFY = 2
    BLOCK = 3


@dataclass(frozen=True)
class StageResources:
    """What stages need from outside the policy: the spaCy model, and keys from the data
    directory (HMAC key of the `hash` action; the key that signs routing tags)."""

    spacy_model: str
    hash_key: bytes
    tag_key: bytes


@dataclass(frozen=True, slots=True)
class Message(_Compact):
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Inspection:
    """One request to inspect. A plain `text` request is one message with `chat=False`."""

    direction: Direction
    messages: tuple[Message, ...]
    chat: bool = False
    request_id: str = ""
    tenant: str = ""
    app: str = ""
    subject_id: str = ""
    conversation_id: str = ""
    user_region: str = ""
    target_region: str = ""
    output_schema: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    # The caller asked why each PII finding was made (Finding.explanation). Never set by
    # a policy; off, the PII stage does no decision-process work at all.
    explain: bool = False

    @classmethod
    def of_text(cls, text: str, direction: Direction = Direction.PROMPT, **kw: Any) -> Inspection:
        return cls(direction=direction, messages=(Message("", text),), chat=False, **kw)

    @property
    def chars(self) -> int:
        """Characters in all messages: what the length metrics watch."""
        return sum(len(message.content) for message in self.messages)


@dataclass(frozen=True, slots=True)
class Explanation(_Compact):
    """Why a PII finding was made (`explain` requests only), like Presidio's decision
    process. Names recognizers, patterns and context words, never the matched text: it
    goes back to the caller who sent that text, and nowhere else (not to logs, metrics
    or audit payloads)."""

    recognizer: str
    # The pattern's name, or the NER model that found it.
    pattern: str
    # The recognizer's score before context words and validation changed it.
    base_score: float
    # Context words near the finding that raised its score (lower case, as matched).
    context_words: tuple[str, ...] = ()
    context_improvement: float = 0.0
    # A checksum or format validation applied, and its outcome ("" when none).
    validation: str = ""


@dataclass(frozen=True, slots=True)
class Finding(_Compact):
    """Sensitive data found at [start, end) of message `message_index` (code points)."""

    entity_type: str
    start: int
    end: int
    score: float
    action: str
    message_index: int = 0
    shadow: bool = False
    explanation: Explanation | None = None


@dataclass(frozen=True, slots=True)
class Violation(_Compact):
    """A rule the text broke. `message` is safe to log: it never quotes the text."""

    rule_id: str
    category: str
    message: str
    start: int = 0
    end: int = 0
    message_index: int = 0
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class SchemaError(_Compact):
    """One way a completion fails its JSON Schema; `message` never quotes the value."""

    pointer: str
    keyword: str
    message: str
    schema_path: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    messages: tuple[Message, ...]
    chat: bool
    findings: tuple[Finding, ...]
    violations: tuple[Violation, ...]
    policy: str
    policy_revision: str
    request_id: str = ""
    routing_tags: dict[str, str] = field(default_factory=dict)
    audit_id: str = ""
    schema_errors: tuple[SchemaError, ...] = ()
    # Shadow rules / shadow mode: what the decision would have been, had they enforced.
    would_block: bool = False
    would_modify: bool = False
    # The changes behind `messages`, per message index, on the text the app sent:
    # disjoint and sorted. The server finishes pending ones (pseudonyms) from them, and
    # a stream releases the part of a window that is safe.
    edits: dict[int, tuple[Edit, ...]] = field(default_factory=dict)
    # Placeholders put back by `restore` (completions), in order of first appearance.
    restored: tuple[str, ...] = ()
    # Seconds each stage spent on this request (its share of a batched pass): metrics.
    stage_seconds: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str:
        """The single text of a non-chat verdict (empty when blocked)."""
        return self.messages[0].content if self.messages else ""


@dataclass(frozen=True, slots=True)
class Edit(_Compact):
    """Replace [start, end) of the original message with `replacement` (code points).

    A `pending` edit is finished outside the pipeline, by the pseudonym vault of the
    server process (sidecar.pseudonyms), because it depends on a conversation's state:
    "pseudonym" puts the conversation's placeholder for (`entity`, `value`) in place of
    the provisional `<ENTITY>`; "restore" puts back the value a placeholder (`value`)
    stands for. `json` says the span lies inside a JSON string, so what goes in is
    escaped.
    """

    start: int
    end: int
    replacement: str
    pending: str = ""
    entity: str = ""
    value: str = ""
    json: bool = False


@dataclass
class StageResult:
    """What one stage contributes; stages never mutate the inspection itself."""

    findings: list[Finding] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    # Changes per message index, as edits on the message the app sent.
    edits: dict[int, list[Edit]] = field(default_factory=dict)
    blocked: bool = False
    # Set by stages that decide where the request may go (residency).
    routing_tags: dict[str, str] = field(default_factory=dict)
    schema_errors: list[SchemaError] = field(default_factory=list)
    # Shadow rules that matched: what they would have done had they been enforced.
    would_block: bool = False
    would_edit: bool = False
    # Set by the schema stage: later stages inspect these string values instead of the
    # raw message; the pipeline maps their offsets and edits back (see sidecar.jsontext).
    projection: Projection | None = None


@dataclass(frozen=True)
class Projection:
    """Message `message_index` seen as its JSON string values, one pseudo-message each."""

    message_index: int
    strings: tuple[Any, ...]  # sidecar.jsontext.StringValue
    schema_id: str
    on_invalid: str


# What earlier stages reported, as later stages see it (residency derives data classes
# from entity types and content categories).
Prior = tuple[Finding | Violation, ...]


class Stage(Protocol):
    """A pipeline step: look at the messages the app sent, report findings and edits.

    Every stage sees the original messages (so its offsets are the app's) and what the
    stages before it reported (residency derives data classes from it). A stage
    that can share work across requests (one spaCy pass over many texts) also defines
    `run_many(items: list[tuple[Inspection, Prior]])` returning one
    StageResult per item; the pipeline uses it when several requests arrive together.
    """

    name: str

    def run(self, inspection: Inspection, prior: Prior) -> StageResult: ...
