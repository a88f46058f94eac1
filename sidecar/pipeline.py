"""The inspection pipeline: pick the policy, run its stages in order, decide.

Pure Python, no grpc: the CLI's `inspect` calls `Pipeline.run`, the server's workers call
`Pipeline.run_batch` with whatever requests arrived together.
Decision precedence is BLOCK > MODIFY > ALLOW; a stage that blocks ends the run, so
later (costlier) stages never see a request that is already refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sidecar import abandon
from sidecar.cache import Key, MessageCache, message_key
from sidecar.config import Settings
from sidecar.edits import apply_resolved, resolve
from sidecar.errors import GuardrailError, InvalidRequest, RequestTooLarge, StageFailed
from sidecar.keys import shared_key
from sidecar.logs import error_frames
from sidecar.policy.store import CompiledPolicy, PolicySet, compile_directory
from sidecar.types import (
    Decision,
    Edit,
    Finding,
    Inspection,
    Message,
    Prior,
    Projection,
    SchemaError,
    Stage,
    StageResources,
    StageResult,
    Verdict,
    Violation,
)
from sidecar.wellformed import has_surrogates

log = logging.getLogger(__name__)
MAX_ID_CHARS = 128
MAX_ATTRIBUTE_KEY_CHARS = 128
MAX_ATTRIBUTE_VALUE_CHARS = 1024


@dataclass(frozen=True)
class Limits:
    max_text_bytes: int
    max_messages: int
    max_attributes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_text_bytes, settings.max_messages, settings.max_attributes)

    def check(self, inspection: Inspection) -> None:
        """Raise InvalidRequest / RequestTooLarge naming the field and the limit."""
        if len(inspection.messages) > self.max_messages:
            raise RequestTooLarge(
                f"messages: {len(inspection.messages)} messages exceed the limit of "
                f"{self.max_messages}")
        size = 0
        for index, message in enumerate(inspection.messages):
            try:  # the C encoder finds lone surrogates far faster than a loop over chars
                size += len(message.content.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidRequest(f"messages[{index}].content: contains lone "
                                     "surrogates") from None
            _refuse_lone_surrogates(f"messages[{index}].role", message.role)
        if size > self.max_text_bytes:
            raise RequestTooLarge(
                f"content: {size} bytes of text exceed the limit of {self.max_text_bytes} bytes")
        for field in ("request_id", "tenant", "app", "subject_id", "conversation_id",
                      "user_region", "target_region", "output_schema"):
            value = getattr(inspection, field)
            if len(value) > MAX_ID_CHARS:
                raise InvalidRequest(f"{field}: longer than {MAX_ID_CHARS} characters")
            _refuse_lone_surrogates(field, value)
        if len(inspection.attributes) > self.max_attributes:
            raise InvalidRequest(
                f"attributes: {len(inspection.attributes)} entries exceed the limit of "
                f"{self.max_attributes}")
        for key, value in inspection.attributes:
            if not key or len(key) > MAX_ATTRIBUTE_KEY_CHARS:
                raise InvalidRequest(f"attributes: keys must be 1 to {MAX_ATTRIBUTE_KEY_CHARS} "
                                     "characters")
            _refuse_lone_surrogates("attributes: a key", key)
            if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
                raise InvalidRequest(f"attributes[{key!r}]: value longer than "
                                     f"{MAX_ATTRIBUTE_VALUE_CHARS} characters")
            _refuse_lone_surrogates(f"attributes[{key!r}]", value)


def _refuse_lone_surrogates(field: str, value: str) -> None:
    """Every string of a request goes into its audit record (an id, a tag, a keyed hash of
    the subject), which is UTF-8: a lone surrogate, which JSON over HTTP can carry
    ("\\ud800"), is refused here, at the door. It used to reach the audit writer and
    fail the whole group commit it shared with other callers' records."""
    if has_surrogates(value):
        raise InvalidRequest(f"{field}: contains lone surrogates")


# What `Pipeline.prepare` runs through every policy before the first request (each
# stage's own lazy state: spaCy's pipeline, Presidio's engines). The detectors' shared
# tables are built by `sidecar.pii.warm` and `sidecar.content.warm`.
WARM_UP = "Warm-up: Jane Doe, jane@example.com, +1 212 555 0100."


class Pipeline:
    def __init__(self, policies: PolicySet, limits: Limits, cache_entries: int = 0) -> None:
        self.policies = policies
        self.limits = limits
        self.cache = MessageCache(cache_entries) if cache_entries else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Pipeline:
        """Compile the policies in `settings.policies` (raises PolicyError/ConfigError)."""
        return cls(compile_directory(settings.policies, resources_from(settings)),
                   Limits.from_settings(settings), settings.message_cache_entries)

    def prepare(self) -> None:
        """Load models and warm every policy up, so the first request is not the slow one."""
        self.policies.prepare()
        stages = {stage.name for compiled in self.policies.policies for stage in compiled.stages}
        if "pii" in stages:
            from sidecar import pii

            pii.warm()
        if "content" in stages:
            from sidecar import content

            content.warm()
        for compiled in self.policies.policies:
            self._run_policy(compiled, [Inspection.of_text(WARM_UP)] * 2)

    def idle_steps(self) -> Iterator[None]:
        """Work that makes later inspections cheaper, a few milliseconds a step, for a
        worker to take while it waits for requests (outside any inspection): today the
        spaCy tokenizer's cache (`sidecar.pii.nlp.tokenizer_cache_steps`)."""
        from sidecar.pii.nlp import tokenizer_cache_steps

        yield from tokenizer_cache_steps()

    def run(self, inspection: Inspection) -> Verdict:
        """Inspect one request (raises GuardrailError for a request it refuses)."""
        outcome = self.run_batch([inspection])[0]
        if isinstance(outcome, GuardrailError):
            raise outcome
        return outcome

    def run_batch(self, inspections: Sequence[Inspection]) -> list[Verdict | GuardrailError]:
        """Inspect several requests at once; one bad request never fails the others.

        Requests that share a policy go through each stage together, so a stage can batch
        its costly part (the PII stage runs spaCy over all of their texts in one pass). A
        stage that raises fails only the request that made it raise (`_run_items`). Any
        other step that raises on a batch (choosing a policy, finishing a verdict) has
        the batch inspected again one request at a time, so that only the culprit fails,
        with StageFailed("pipeline"): it used to fail every request of the batch.
        """
        if len(inspections) > 1:
            try:
                return self._run_together(inspections)
            except Exception as err:  # never echo: the message may quote text
                log.warning("batch failed; inspecting its requests one at a time",
                            extra={"error_type": type(err).__name__,
                                   "batch": len(inspections)})
        return [self._run_alone(inspection) for inspection in inspections]

    def _run_alone(self, inspection: Inspection) -> Verdict | GuardrailError:
        try:
            return self._run_together([inspection])[0]
        except Exception as err:
            log.error("inspection failed", extra={"error_type": type(err).__name__,
                                                  "error_frames": error_frames(err),
                                                  "request_id": inspection.request_id})
            return StageFailed("pipeline")

    def _run_together(self, inspections: Sequence[Inspection]
                      ) -> list[Verdict | GuardrailError]:
        outcomes: list[Verdict | GuardrailError | None] = [None] * len(inspections)
        groups: dict[str, tuple[CompiledPolicy, list[int]]] = {}
        for index, inspection in enumerate(inspections):
            try:
                self.limits.check(inspection)
                compiled = self.policies.select(inspection.tenant, inspection.app)
                _check_output_schema(compiled, inspection)
            except GuardrailError as err:
                outcomes[index] = err
                continue
            groups.setdefault(compiled.name, (compiled, []))[1].append(index)
        for compiled, indices in groups.values():
            verdicts = self._run_policy(compiled, [inspections[i] for i in indices])
            for index, verdict in zip(indices, verdicts, strict=True):
                outcomes[index] = verdict
        return [outcome for outcome in outcomes if outcome is not None]

    def _run_policy(self, compiled: CompiledPolicy,
                    inspections: list[Inspection]) -> list[Verdict]:
        states = [_Progress(inspection) for inspection in inspections]
        shadow_mode = compiled.policy.mode == "shadow"
        for stage in compiled.stages:
            abandon.check()  # every caller gone (sidecar.abandon): no verdict at all
            # In shadow mode every stage runs: the point is to see everything it would do.
            live = [state for state in states if shadow_mode or not state.blocked]
            if not live:
                break
            started = time.perf_counter()
            results = self._run_stage(compiled, stage, live)
            share = (time.perf_counter() - started) / len(live)
            for state, result in zip(live, results, strict=True):
                state.absorb(result, compiled.policy.on_error)
                state.stage_seconds[stage.name] = share
        return [state.verdict(compiled) for state in states]

    def _run_stage(self, compiled: CompiledPolicy, stage: Stage,
                   live: list[_Progress]) -> list[StageResult | StageFailed]:
        """Run one stage over the batch; a failure is isolated to the request that caused it."""
        items: list[tuple[Inspection, Prior]] = [
            (state.target, (*state.findings, *state.violations)) for state in live]
        if self.cache is not None and getattr(stage, "per_message", False) \
                and any(state.target.chat and state.projection is None for state in live):
            return self._run_cached(compiled, stage, items, self.cache)
        return self._run_items(compiled, stage, items)

    def _run_cached(self, compiled: CompiledPolicy, stage: Stage,
                    items: list[tuple[Inspection, Prior]],
                    cache: MessageCache) -> list[StageResult | StageFailed]:
        """A per-message stage over chat requests: cached messages are not analysed again;
        the others go through the stage together, one message per item, and are cached."""
        # Each request's message results, merged in message order at the end: merged as
        # they came (cached ones first), a warm cache gave the same findings in another
        # order than a cold one (outside trial 9).
        parts: list[dict[int, StageResult]] = [{} for _ in items]
        whole: dict[int, StageResult | StageFailed] = {}  # text requests; failed requests
        todo: list[tuple[int, int | None, Key | None]] = []  # (item, message or whole, key)
        run: list[tuple[Inspection, Prior]] = []
        for number, (inspection, prior) in enumerate(items):
            # An `explain` request is analysed whole and never cached: cached results
            # carry no explanations, and its explanations must not reach other callers.
            if not inspection.chat or inspection.explain:
                todo.append((number, None, None))
                run.append((inspection, prior))
                continue
            for index, message in enumerate(inspection.messages):
                key = message_key(compiled.revision, stage.name, inspection.direction.value,
                                  message.content)
                hit = cache.get(key)
                if hit is not None:
                    parts[number][index] = hit
                    continue
                todo.append((number, index, key))
                run.append((dataclasses.replace(inspection, messages=(message,)), prior))
        for (number, at, new_key), outcome in zip(
                todo, self._run_items(compiled, stage, run) if run else [], strict=True):
            if at is None or isinstance(outcome, StageFailed):
                whole[number] = outcome  # a whole request, or a failed message fails it
                continue
            if new_key is not None:
                cache.put(new_key, outcome)
            parts[number][at] = outcome
        merged = [StageResult() for _ in items]
        for into, results in zip(merged, parts, strict=True):
            for index in sorted(results):
                _merge(into, results[index], index)
        return [whole.get(number, result) for number, result in enumerate(merged)]

    def _run_items(self, compiled: CompiledPolicy, stage: Stage,
                   items: list[tuple[Inspection, Prior]]) -> list[StageResult | StageFailed]:
        run_many = getattr(stage, "run_many", None)
        if run_many is not None and len(items) > 1:
            try:
                return list(run_many(items))
            except Exception as err:  # retried one by one below, to isolate the culprit
                log.warning("batched stage failed; retrying one request at a time",
                            extra={"stage": stage.name, "error_type": type(err).__name__,
                                   "batch": len(items)})
        results: list[StageResult | StageFailed] = []
        for inspection, prior in items:
            try:
                results.append(stage.run(inspection, prior))
            except Exception as err:  # a stage bug must not become a loosened policy
                # The exception's message may quote the text: log its type only.
                log.error("stage failed", extra={"stage": stage.name,
                                                 "error_type": type(err).__name__,
                                                 "error_frames": error_frames(err),
                                                 "request_id": inspection.request_id,
                                                 "policy": compiled.name})
                results.append(StageFailed(stage.name))
        return results


def _merge(into: StageResult, part: StageResult, index: int) -> None:
    """Add one message's result (computed as message 0) to a request's, as message `index`."""
    into.findings.extend(dataclasses.replace(f, message_index=index) for f in part.findings)
    into.violations.extend(dataclasses.replace(v, message_index=index)
                           for v in part.violations)
    if part.edits.get(0):
        into.edits[index] = list(part.edits[0])
    into.blocked = into.blocked or part.blocked
    into.would_block = into.would_block or part.would_block
    into.would_edit = into.would_edit or part.would_edit


def _check_output_schema(compiled: CompiledPolicy, inspection: Inspection) -> None:
    schema_id = inspection.output_schema
    if not schema_id:
        return
    if compiled.schema is None or schema_id not in compiled.schema.schemas:
        known = compiled.schema.ids() if compiled.schema else []  # only to explain the error
        listed = f"; it defines: {', '.join(known[:20])}" if known else ""
        raise InvalidRequest(f"output_schema: policy '{compiled.name}' defines no schema "
                             f"'{schema_id[:100]}'{listed}")
    if inspection.chat:
        raise InvalidRequest("output_schema: applies to a text completion, not to messages")


class _Progress:
    """One request on its way through a policy's stages."""

    def __init__(self, inspection: Inspection) -> None:
        self.inspection = inspection
        # What stages look at: the request, or the JSON string values of a completion
        # once the schema stage has parsed it (then `projection` maps results back).
        self.target = inspection
        self.projection: Projection | None = None
        self.schema_errors: list[SchemaError] = []
        self.findings: list[Finding] = []
        self.violations: list[Violation] = []
        self.edits: dict[int, list[Edit]] = {}
        self.routing_tags: dict[str, str] = {}
        self.blocked = False
        self.would_block = False  # shadow rules that would have blocked / edited
        self.would_edit = False
        self.stage_seconds: dict[str, float] = {}

    def absorb(self, result: StageResult | StageFailed, on_error: str) -> None:
        if isinstance(result, StageFailed):
            self.violations.append(Violation(
                f"error.{result.stage}", "error", f"{result}; policy on_error={on_error}"))
            self.blocked = on_error == "block"
            return
        if self.projection is not None:
            result = _unproject(result, self.projection)
        self.findings.extend(result.findings)
        self.violations.extend(result.violations)
        for index, changes in result.edits.items():
            self.edits.setdefault(index, []).extend(changes)
        self.routing_tags.update(result.routing_tags)
        self.schema_errors.extend(result.schema_errors)
        self.blocked = self.blocked or result.blocked
        self.would_block = self.would_block or result.would_block
        self.would_edit = self.would_edit or result.would_edit
        if result.projection is not None:
            self.projection = result.projection
            self.target = dataclasses.replace(
                self.inspection, chat=True, output_schema="",
                messages=tuple(Message("", s.value) for s in result.projection.strings))

    def verdict(self, compiled: CompiledPolicy) -> Verdict:
        original = self.inspection.messages
        out: tuple[Message, ...] = ()
        resolved: dict[int, tuple[Edit, ...]] = {}
        if not self.blocked:
            resolved = {i: tuple(resolve(edits)) for i, edits in self.edits.items() if edits}
            out = tuple(Message(m.role, apply_resolved(m.content, resolved[i]))
                        if i in resolved else m for i, m in enumerate(original))
            self._recheck_schema(compiled, out)
        if self.blocked:
            decision, out, resolved = Decision.BLOCK, (), {}
        else:
            # A placeholder to restore is still a no-op here: the server's vault makes
            # the decision MODIFY if it puts a value back (sidecar.pseudonyms).
            decision = Decision.MODIFY if out != original else Decision.ALLOW
        would_block = decision == Decision.BLOCK or self.would_block
        would_modify = not would_block and (decision == Decision.MODIFY or self.would_edit)
        findings, violations = tuple(self.findings), tuple(self.violations)
        if compiled.policy.mode == "shadow":
            # Report everything as what would have happened; change nothing.
            decision, out, resolved = Decision.ALLOW, original, {}
            findings = tuple(dataclasses.replace(f, shadow=True) for f in findings)
            violations = tuple(dataclasses.replace(v, shadow=True) for v in violations)
        return Verdict(
            decision=decision, messages=out, chat=self.inspection.chat,
            findings=findings, violations=violations,
            policy=compiled.name, policy_revision=compiled.revision,
            request_id=self.inspection.request_id, routing_tags=dict(self.routing_tags),
            schema_errors=tuple(self.schema_errors),
            would_block=would_block, would_modify=would_modify, edits=resolved,
            stage_seconds=self.stage_seconds,
        )

    def _recheck_schema(self, compiled: CompiledPolicy, out: tuple[Message, ...]) -> None:
        """A redacted JSON completion must still satisfy its schema (e.g. a maxLength)."""
        projection = self.projection
        if projection is None or compiled.schema is None \
                or projection.message_index not in self.edits:
            return
        errors = compiled.schema.recheck(projection.schema_id,
                                         out[projection.message_index].content)
        if errors:
            self.schema_errors.extend(errors)
            self.violations.append(Violation(
                "schema.redacted_invalid", "schema",
                f"the redacted completion no longer satisfies schema '{projection.schema_id}' "
                f"({len(errors)} errors; on_invalid={projection.on_invalid})"))
            self.blocked = self.blocked or projection.on_invalid == "block"


def _unproject(result: StageResult, projection: Projection) -> StageResult:
    """Map a result computed on JSON string values back onto the raw completion."""
    from sidecar.jsontext import escape_for_json_string

    strings = projection.strings
    index = projection.message_index

    def finding(f: Finding) -> Finding:
        start, end = strings[f.message_index].span(f.start, f.end)
        return dataclasses.replace(f, start=start, end=end, message_index=index)

    def violation(v: Violation) -> Violation:
        if v.end <= v.start:  # not about a span (residency, a summary): nothing to map
            return dataclasses.replace(v, message_index=index)
        start, end = strings[v.message_index].span(v.start, v.end)
        return dataclasses.replace(v, start=start, end=end, message_index=index)

    def span(message: int, start: int, end: int) -> tuple[int, int]:
        return strings[message].span(start, end)  # type: ignore[no-any-return]

    def edits(message: int, changes: list[Edit]) -> list[Edit]:
        value = strings[message]
        if value.number and not any(e.pending for e in changes):
            # Redacted text cannot stay a number: the token becomes a JSON string.
            return [Edit(value.raw_start, value.raw_end,
                         json.dumps(apply_resolved(value.value, tuple(resolve(changes)))))]
        return [dataclasses.replace(e, start=start, end=end,
                                    replacement=escape_for_json_string(e.replacement),
                                    json=True) if not value.outside
                else dataclasses.replace(e, start=start, end=end)  # not inside a string
                for e in changes for start, end in [span(message, e.start, e.end)]]

    return dataclasses.replace(
        result,
        findings=[finding(f) for f in result.findings],
        violations=[violation(v) for v in result.violations],
        edits={index: [e for message, changes in result.edits.items()
                       for e in edits(message, changes)]} if result.edits else {},
    )


def resources_from(settings: Settings) -> StageResources:
    """The keys stages use: shared ones from the settings, else the data directory's
    (refused in fleet mode, where every pod's would differ; see sidecar.keys.shared_key)."""
    keys = Path(settings.data_dir) / "keys"
    fleet = settings.store is not None
    return StageResources(
        spacy_model=settings.spacy_model,
        hash_key=shared_key(text=settings.hash_key, file=settings.hash_key_file,
                            generated=keys / "hash.key", env="HASH_KEY", fleet=fleet,
                            allow_generated=settings.allow_pod_keys),
        tag_key=shared_key(text=settings.tags_key, file=settings.tags_key_file,
                           generated=keys / "tags.key", env="TAGS_KEY", fleet=fleet,
                           allow_generated=settings.allow_pod_keys),
    )
