"""Compiled policies and the choice of which one applies to a request.

A `PolicySet` is immutable: compiling builds a new one and swapping it in is a single
reference assignment, so an in-flight request keeps the revision it started with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy.files import read_tree
from sidecar.policy.loader import LoadedPolicy, load_tree
from sidecar.policy.matching import GLOB_CHARS, fold, fold_glob, glob_matches
from sidecar.policy.model import Match, Policy
from sidecar.stages.content import ContentStage
from sidecar.stages.pii import PiiStage
from sidecar.stages.residency import ResidencyStage
from sidecar.stages.schema import SchemaStage
from sidecar.types import Stage, StageResources


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Policy
    revision: str
    source: Path  # where it was compiled from (a snapshot, or the directory checked)
    stages: tuple[Stage, ...]
    schema: SchemaStage | None = None
    file: str = ""  # the file as the operator knows it: relative to the policy directory

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
            dataclasses.replace(issue, file=loaded.file,
                                line=loaded.line_of(_split_path(issue.path)))
            for issue in err.issues]) from None
    revision = policy.revision_hash()
    if schema.digest:  # the schema files' content decides too
        revision = hashlib.sha256(f"{revision}:{schema.digest}".encode()).hexdigest()
    return CompiledPolicy(policy, revision, loaded.source, stages,
                          schema if schema.active else None, loaded.file)


class PolicySet:
    """All compiled policies of a directory; `select` picks the one for a request."""

    def __init__(self, policies: list[CompiledPolicy]) -> None:
        defaults = [p for p in policies if p.policy.is_default]
        if len(defaults) != 1:
            raise ValueError("a policy set needs exactly one default policy")
        self.default = defaults[0]
        self.policies = tuple(policies)
        # Globs folded once here; tenants and apps are folded per request (matching.fold).
        self._matching = [(p, _folded(p.policy.match)) for p in policies
                          if p.policy.match is not None]
        self.by_name = {p.name: p for p in policies}
        # A temporary copy the policies were compiled from, kept as long as they are
        # (schema $refs are read lazily); None when compiled in place.
        self.keep: Any = None

    def select(self, tenant: str, app: str) -> CompiledPolicy:
        """The most specific matching policy: exact beats glob beats '*', tenant before app.

        Tenant and app compare case-insensitively (NFKC case-folded, outer whitespace
        ignored), so `ACME` is never a way round the policy written for `acme`."""
        best: tuple[int, int, str] | None = None
        chosen = self.default
        tenant, app = fold(tenant), fold(app)
        for compiled, (tenants, apps) in self._matching:
            score = _specificity(tenants, apps, tenant, app)
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
    """Load, validate and compile every policy; PolicyError lists every problem found.

    The directory is read once, safely (sidecar.policy.files). When that followed a link
    (a ConfigMap volume), what was read is compiled from a private temporary copy, so
    the schema stage, which reads schema files by path, only ever sees plain files."""
    tree = read_tree(directory)
    keep: Any = None
    base = directory
    if not tree.plain:
        keep = tempfile.TemporaryDirectory(prefix="guardrail-policies-")
        base = Path(keep.name)
        tree.write(base)
    loaded = load_tree(tree, base)
    compiled: list[CompiledPolicy] = []
    issues: list[PolicyIssue] = []
    for item in loaded:
        try:
            compiled.append(compile_policy(item, resources))
        except PolicyError as err:
            issues.extend(err.issues)
    if issues:
        raise PolicyError(issues)
    policies = PolicySet(compiled)
    policies.keep = keep
    return policies


def _folded(match: Match | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    assert match is not None
    return tuple(map(fold_glob, match.tenants)), tuple(map(fold_glob, match.apps))


def _specificity(tenants: tuple[str, ...], apps: tuple[str, ...], tenant: str,
                 app: str) -> tuple[int, int] | None:
    tenant_score = _best(tenants, tenant)
    app_score = _best(apps, app)
    if tenant_score is None or app_score is None:
        return None
    return tenant_score, app_score


def _best(patterns: tuple[str, ...], value: str) -> int | None:
    best = None
    for pattern in patterns:
        if pattern == "*":
            score = 0
        elif not GLOB_CHARS.search(pattern):
            score = 2 if pattern == value else -1
        else:
            score = 1 if glob_matches(value, pattern) else -1
        if score >= 0 and (best is None or score > best):
            best = score
    return best


def _split_path(dotted: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", dotted):
        parts.append(int(index) if index else name)
    return parts
