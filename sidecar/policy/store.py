"""Compiled policies and the choice of which one applies to a request.

A `PolicySet` is immutable: compiling builds a new one and swapping it in is a single
reference assignment, so an in-flight request keeps the revision it started with.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy.loader import LoadedPolicy, load_directory
from sidecar.policy.model import Match, Policy
from sidecar.stages.content import ContentStage
from sidecar.stages.pii import PiiStage
from sidecar.stages.residency import ResidencyStage
from sidecar.stages.schema import SchemaStage
from sidecar.types import Stage, StageResources

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Policy
    revision: str
    source: Path
    stages: tuple[Stage, ...]
    schema: SchemaStage | None = None

    @property
    def name(self) -> str:
        return self.policy.name

    def prepare(self) -> None:
        """Load what the stages need (models) now rather than on the first request."""
        for stage in self.stages:
            prepare = getattr(stage, "prepare", None)
            if prepare is not None:
                prepare()


def compile_policy(loaded: LoadedPolicy, resources: StageResources) -> CompiledPolicy:
    policy = loaded.policy
    try:
        schema = SchemaStage(policy.structured_output, loaded.source.parent)
        content = ContentStage(policy.content)
        pii = PiiStage(policy.pii, resources)
        residency = ResidencyStage(policy.residency, resources.tag_key)
        stages: tuple[Stage, ...] = tuple(
            stage for stage in (schema, content, pii, residency) if stage.active) or (pii,)
    except PolicyError as err:
        raise PolicyError([
            dataclasses.replace(issue, file=str(loaded.source),
                                line=loaded.line_of(_split_path(issue.path)))
            for issue in err.issues]) from None
    revision = policy.revision_hash()
    if schema.digest:  # the schema files' content decides too
        revision = hashlib.sha256(f"{revision}:{schema.digest}".encode()).hexdigest()
    return CompiledPolicy(policy, revision, loaded.source, stages,
                          schema if schema.active else None)


class PolicySet:
    """All compiled policies of a directory; `select` picks the one for a request."""

    def __init__(self, policies: list[CompiledPolicy]) -> None:
        defaults = [p for p in policies if p.policy.is_default]
        if len(defaults) != 1:
            raise ValueError("a policy set needs exactly one default policy")
        self.default = defaults[0]
        self.policies = tuple(policies)
        self._matching = [p for p in policies if not p.policy.is_default]
        self.by_name = {p.name: p for p in policies}

    def select(self, tenant: str, app: str) -> CompiledPolicy:
        """The most specific matching policy: exact beats glob beats '*', tenant before app."""
        best: tuple[int, int, str] | None = None
        chosen = self.default
        for compiled in self._matching:
            match = compiled.policy.match
            assert match is not None
            score = _specificity(match, tenant, app)
            if score is None:
                continue
            key = (score[0], score[1], compiled.name)
            # Ties go to the alphabetically first name, so the choice never depends on order.
            if best is None or key[:2] > best[:2] or (key[:2] == best[:2] and key[2] < best[2]):
                best, chosen = key, compiled
        return chosen

    def prepare(self) -> None:
        for compiled in self.policies:
            compiled.prepare()


def compile_directory(directory: Path, resources: StageResources) -> PolicySet:
    """Load, validate and compile every policy; PolicyError lists every problem found."""
    loaded = load_directory(directory)
    compiled: list[CompiledPolicy] = []
    issues: list[PolicyIssue] = []
    for item in loaded:
        try:
            compiled.append(compile_policy(item, resources))
        except PolicyError as err:
            issues.extend(err.issues)
    if issues:
        raise PolicyError(issues)
    return PolicySet(compiled)


def _specificity(match: Match, tenant: str, app: str) -> tuple[int, int] | None:
    tenant_score = _best(match.tenants, tenant)
    app_score = _best(match.apps, app)
    if tenant_score is None or app_score is None:
        return None
    return tenant_score, app_score


def _best(patterns: list[str], value: str) -> int | None:
    best = None
    for pattern in patterns:
        if pattern == "*":
            score = 0
        elif not _GLOB_CHARS.search(pattern):
            score = 2 if pattern == value else -1
        else:
            score = 1 if fnmatch.fnmatchcase(value, pattern) else -1
        if score >= 0 and (best is None or score > best):
            best = score
    return best


def _split_path(dotted: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", dotted):
        parts.append(int(index) if index else name)
    return parts
