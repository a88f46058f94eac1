"""Read policy files from a directory and validate them, reporting every problem found.

Each problem names the file, the line, the field path and the reason, so that the
security team can fix a bad edit from `guardrail policy check` output alone.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy.model import Policy

# Large enough for a 100,000-entry word list pasted inline.
MAX_POLICY_FILE_BYTES = 16 * 1024 * 1024
POLICY_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".tests.yaml", ".tests.yml")


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C parser when built


class _PolicyYamlLoader(_BaseLoader):  # type: ignore[misc]
    """Safe YAML with YAML 1.2 booleans: only true/false.

    YAML 1.1 reads `on`, `off`, `yes`, `no`, `y`, `n` as booleans, so a rule's
    `on: [prompt]` key would become `True` and a tenant named `no` would become `False`.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


_PolicyYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    source: Path
    root: yaml.Node

    def line_of(self, path: Sequence[str | int]) -> int | None:
        return line_of(self.root, path)


def policy_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and p.name.endswith(POLICY_SUFFIXES) and not p.name.endswith(TEST_SUFFIXES)
    )


def load_directory(directory: Path) -> list[LoadedPolicy]:
    """Load and validate every policy file in `directory`; raise PolicyError listing all issues."""
    if not directory.is_dir():
        raise PolicyError([PolicyIssue(str(directory), "", "policy directory does not exist")])
    loaded: list[LoadedPolicy] = []
    issues: list[PolicyIssue] = []
    try:
        files = policy_files(directory)
    except OSError as err:
        issue = PolicyIssue(str(directory), "", f"cannot list: {err.strerror}")
        raise PolicyError([issue]) from None
    for path in files:
        try:
            loaded.append(load_file(path))
        except PolicyError as err:
            issues.extend(err.issues)
    issues.extend(_check_set(loaded))
    if not files:
        issues.append(PolicyIssue(str(directory), "", "no policy files (*.yaml) found"))
    if issues:
        raise PolicyError(issues)
    return loaded


def load_file(path: Path) -> LoadedPolicy:
    name = str(path)
    try:
        info = path.stat()
        if info.st_mode & stat.S_IWOTH:
            raise PolicyError([PolicyIssue(name, "", "refusing a world-writable policy file")])
        if info.st_size > MAX_POLICY_FILE_BYTES:
            raise PolicyError([PolicyIssue(
                name, "", f"file is larger than {MAX_POLICY_FILE_BYTES} bytes")])
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PolicyError([PolicyIssue(name, "", "file is not valid UTF-8")]) from None
    except OSError as err:
        raise PolicyError([PolicyIssue(name, "", f"cannot read: {err.strerror}")]) from None

    loader = _PolicyYamlLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise PolicyError([PolicyIssue(name, "", "file is empty")])
        duplicates = list(_duplicate_keys(root, ()))
        if duplicates:
            raise PolicyError([
                PolicyIssue(name, _dotted(p), "key appears twice (the second would silently win)",
                            line) for p, line in duplicates])
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        raise PolicyError([PolicyIssue(name, "", f"invalid YAML: {err.problem}", line)]) from None
    except yaml.YAMLError as err:
        raise PolicyError([PolicyIssue(name, "", f"invalid YAML: {err}")]) from None
    finally:
        loader.dispose()

    if not isinstance(data, dict):
        raise PolicyError([PolicyIssue(name, "", "a policy file must be a mapping of fields", 1)])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        raise PolicyError(
            [_issue_from_pydantic(name, root, error) for error in err.errors()]) from None
    return LoadedPolicy(policy, path, root)


def _issue_from_pydantic(file: str, root: yaml.Node, error: Any) -> PolicyIssue:
    location = tuple(part for part in error["loc"] if part not in ("function-after",))
    reason = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = "unknown field"
    elif error["type"] == "literal_error":
        reason = f"{reason} (got {error['input']!r})"
    return PolicyIssue(file, _dotted(location), reason, line_of(root, location))


def _check_set(loaded: list[LoadedPolicy]) -> list[PolicyIssue]:
    """Rules about the set of policies as a whole."""
    issues: list[PolicyIssue] = []
    seen: dict[str, Path] = {}
    for item in loaded:
        name = item.policy.name
        if name in seen:
            issues.append(PolicyIssue(str(item.source), "name",
                                      f"policy name '{name}' is also used by {seen[name]}",
                                      item.line_of(("name",))))
        seen.setdefault(name, item.source)
    defaults = [item for item in loaded if item.policy.is_default]
    if loaded and not defaults:
        issues.append(PolicyIssue(str(loaded[0].source.parent), "",
                                  "no default policy: exactly one policy must omit 'match'"))
    for extra in defaults[1:]:
        issues.append(PolicyIssue(str(extra.source), "match",
                                  f"a second default policy (no 'match'); {defaults[0].source} "
                                  "is already the default"))
    matches: dict[tuple[frozenset[str], frozenset[str]], Path] = {}
    for item in loaded:
        match = item.policy.match
        if match is None:
            continue
        key = (frozenset(match.tenants), frozenset(match.apps))
        if key in matches:
            issues.append(PolicyIssue(str(item.source), "match",
                                      f"same match as {matches[key]}: which applies is ambiguous",
                                      item.line_of(("match",))))
        matches.setdefault(key, item.source)
    return issues


def _duplicate_keys(node: yaml.Node, path: tuple[str | int, ...]) -> Any:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            key_text = str(key.value)
            if key_text in seen:
                yield (*path, key_text), key.start_mark.line + 1
            seen.add(key_text)
            yield from _duplicate_keys(value, (*path, key_text))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, index))


def line_of(root: yaml.Node, path: Sequence[str | int]) -> int | None:
    """1-based line of the YAML node at `path`, or of its deepest existing ancestor."""
    node = root
    line = node.start_mark.line + 1
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and 0 <= part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
