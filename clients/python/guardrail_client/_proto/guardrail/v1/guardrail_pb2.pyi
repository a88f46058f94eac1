from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    ALLOW: _ClassVar[Decision]
    MODIFY: _ClassVar[Decision]
    BLOCK: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
ALLOW: Decision
MODIFY: Decision
BLOCK: Decision

class PolicyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyStatusResponse(_message.Message):
    __slots__ = ("policies", "errors", "last_attempt_unix_ms", "last_applied_unix_ms")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    errors: _containers.RepeatedCompositeFieldContainer[PolicyLoadError]
    last_attempt_unix_ms: int
    last_applied_unix_ms: int
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[PolicyLoadError, _Mapping]]] = ..., last_attempt_unix_ms: _Optional[int] = ..., last_applied_unix_ms: _Optional[int] = ...) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("name", "revision", "source", "loaded_at_unix_ms", "last_error", "is_default", "mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    revision: str
    source: str
    loaded_at_unix_ms: int
    last_error: str
    is_default: bool
    mode: str
    def __init__(self, name: _Optional[str] = ..., revision: _Optional[str] = ..., source: _Optional[str] = ..., loaded_at_unix_ms: _Optional[int] = ..., last_error: _Optional[str] = ..., is_default: _Optional[bool] = ..., mode: _Optional[str] = ...) -> None: ...

class PolicyLoadError(_message.Message):
    __slots__ = ("file", "line", "path", "reason")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    path: str
    reason: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., path: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Messages(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("request_id", "tenant", "app", "subject_id", "conversation_id", "text", "messages", "user_region", "target_region", "output_schema", "attributes", "explain")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    USER_REGION_FIELD_NUMBER: _ClassVar[int]
    TARGET_REGION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tenant: str
    app: str
    subject_id: str
    conversation_id: str
    text: str
    messages: Messages
    user_region: str
    target_region: str
    output_schema: str
    attributes: _containers.ScalarMap[str, str]
    explain: bool
    def __init__(self, request_id: _Optional[str] = ..., tenant: _Optional[str] = ..., app: _Optional[str] = ..., subject_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., text: _Optional[str] = ..., messages: _Optional[_Union[Messages, _Mapping]] = ..., user_region: _Optional[str] = ..., target_region: _Optional[str] = ..., output_schema: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., explain: _Optional[bool] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("entity_type", "start", "end", "score", "action", "message_index", "shadow", "explanation")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    start: int
    end: int
    score: float
    action: str
    message_index: int
    shadow: bool
    explanation: Explanation
    def __init__(self, entity_type: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., score: _Optional[float] = ..., action: _Optional[str] = ..., message_index: _Optional[int] = ..., shadow: _Optional[bool] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("recognizer", "pattern", "base_score", "context_words", "context_improvement", "validation")
    RECOGNIZER_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    BASE_SCORE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WORDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    recognizer: str
    pattern: str
    base_score: float
    context_words: _containers.RepeatedScalarFieldContainer[str]
    context_improvement: float
    validation: str
    def __init__(self, recognizer: _Optional[str] = ..., pattern: _Optional[str] = ..., base_score: _Optional[float] = ..., context_words: _Optional[_Iterable[str]] = ..., context_improvement: _Optional[float] = ..., validation: _Optional[str] = ...) -> None: ...

class Violation(_message.Message):
    __slots__ = ("rule_id", "category", "message", "start", "end", "message_index", "shadow")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    category: str
    message: str
    start: int
    end: int
    message_index: int
    shadow: bool
    def __init__(self, rule_id: _Optional[str] = ..., category: _Optional[str] = ..., message: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., message_index: _Optional[int] = ..., shadow: _Optional[bool] = ...) -> None: ...

class InspectResponse(_message.Message):
    __slots__ = ("decision", "text", "messages", "findings", "violations", "routing_tags", "audit_id", "policy", "policy_revision", "request_id", "schema_errors", "would_block", "would_modify", "restored")
    class RoutingTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_TAGS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_ERRORS_FIELD_NUMBER: _ClassVar[int]
    WOULD_BLOCK_FIELD_NUMBER: _ClassVar[int]
    WOULD_MODIFY_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    text: str
    messages: Messages
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    violations: _containers.RepeatedCompositeFieldContainer[Violation]
    routing_tags: _containers.ScalarMap[str, str]
    audit_id: str
    policy: str
    policy_revision: str
    request_id: str
    schema_errors: _containers.RepeatedCompositeFieldContainer[SchemaError]
    would_block: bool
    would_modify: bool
    restored: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., text: _Optional[str] = ..., messages: _Optional[_Union[Messages, _Mapping]] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., violations: _Optional[_Iterable[_Union[Violation, _Mapping]]] = ..., routing_tags: _Optional[_Mapping[str, str]] = ..., audit_id: _Optional[str] = ..., policy: _Optional[str] = ..., policy_revision: _Optional[str] = ..., request_id: _Optional[str] = ..., schema_errors: _Optional[_Iterable[_Union[SchemaError, _Mapping]]] = ..., would_block: _Optional[bool] = ..., would_modify: _Optional[bool] = ..., restored: _Optional[_Iterable[str]] = ...) -> None: ...

class CompletionChunk(_message.Message):
    __slots__ = ("request", "text", "end")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    request: InspectRequest
    text: str
    end: bool
    def __init__(self, request: _Optional[_Union[InspectRequest, _Mapping]] = ..., text: _Optional[str] = ..., end: _Optional[bool] = ...) -> None: ...

class StreamVerdict(_message.Message):
    __slots__ = ("text", "findings", "violations", "received_chars", "released_chars", "restored", "final", "decision", "audit_id", "policy", "policy_revision", "request_id", "routing_tags")
    class RoutingTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_CHARS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_CHARS_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTING_TAGS_FIELD_NUMBER: _ClassVar[int]
    text: str
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    violations: _containers.RepeatedCompositeFieldContainer[Violation]
    received_chars: int
    released_chars: int
    restored: _containers.RepeatedScalarFieldContainer[str]
    final: bool
    decision: Decision
    audit_id: str
    policy: str
    policy_revision: str
    request_id: str
    routing_tags: _containers.ScalarMap[str, str]
    def __init__(self, text: _Optional[str] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., violations: _Optional[_Iterable[_Union[Violation, _Mapping]]] = ..., received_chars: _Optional[int] = ..., released_chars: _Optional[int] = ..., restored: _Optional[_Iterable[str]] = ..., final: _Optional[bool] = ..., decision: _Optional[_Union[Decision, str]] = ..., audit_id: _Optional[str] = ..., policy: _Optional[str] = ..., policy_revision: _Optional[str] = ..., request_id: _Optional[str] = ..., routing_tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SchemaError(_message.Message):
    __slots__ = ("pointer", "keyword", "message", "schema_path")
    POINTER_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_PATH_FIELD_NUMBER: _ClassVar[int]
    pointer: str
    keyword: str
    message: str
    schema_path: str
    def __init__(self, pointer: _Optional[str] = ..., keyword: _Optional[str] = ..., message: _Optional[str] = ..., schema_path: _Optional[str] = ...) -> None: ...

class AuditVerifyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditVerifyResponse(_message.Message):
    __slots__ = ("ok", "checked", "first_bad_seq", "first_bad_id", "reason")
    OK_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    checked: int
    first_bad_seq: int
    first_bad_id: str
    reason: str
    def __init__(self, ok: _Optional[bool] = ..., checked: _Optional[int] = ..., first_bad_seq: _Optional[int] = ..., first_bad_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AuditEraseRequest(_message.Message):
    __slots__ = ("subject_id", "override_hold", "reason")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_HOLD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    override_hold: bool
    reason: str
    def __init__(self, subject_id: _Optional[str] = ..., override_hold: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class AuditEraseResponse(_message.Message):
    __slots__ = ("subject_ref", "records_affected", "keys_destroyed", "time_unix_ms", "checkpoint_seq", "checkpoint_hash", "conversations_erased")
    SUBJECT_REF_FIELD_NUMBER: _ClassVar[int]
    RECORDS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    KEYS_DESTROYED_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SEQ_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_HASH_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONS_ERASED_FIELD_NUMBER: _ClassVar[int]
    subject_ref: str
    records_affected: int
    keys_destroyed: _containers.RepeatedScalarFieldContainer[str]
    time_unix_ms: int
    checkpoint_seq: int
    checkpoint_hash: str
    conversations_erased: int
    def __init__(self, subject_ref: _Optional[str] = ..., records_affected: _Optional[int] = ..., keys_destroyed: _Optional[_Iterable[str]] = ..., time_unix_ms: _Optional[int] = ..., checkpoint_seq: _Optional[int] = ..., checkpoint_hash: _Optional[str] = ..., conversations_erased: _Optional[int] = ...) -> None: ...

class AuditExportRequest(_message.Message):
    __slots__ = ("tenant", "app", "decision", "policy", "subject_id", "since_unix_ms", "until_unix_ms", "include_payload")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    app: str
    decision: str
    policy: str
    subject_id: str
    since_unix_ms: int
    until_unix_ms: int
    include_payload: bool
    def __init__(self, tenant: _Optional[str] = ..., app: _Optional[str] = ..., decision: _Optional[str] = ..., policy: _Optional[str] = ..., subject_id: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ..., include_payload: _Optional[bool] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class AuditHoldRequest(_message.Message):
    __slots__ = ("action", "subject_id", "tenant", "reason", "hold_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    action: str
    subject_id: str
    tenant: str
    reason: str
    hold_id: int
    def __init__(self, action: _Optional[str] = ..., subject_id: _Optional[str] = ..., tenant: _Optional[str] = ..., reason: _Optional[str] = ..., hold_id: _Optional[int] = ...) -> None: ...

class AuditHoldResponse(_message.Message):
    __slots__ = ("hold_id", "changed")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    hold_id: int
    changed: bool
    def __init__(self, hold_id: _Optional[int] = ..., changed: _Optional[bool] = ...) -> None: ...
