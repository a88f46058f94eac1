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
MAX_POLICY_FILES = 500
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
    """Load and validate every policy file in `directory`; raise PolicyError listing all issues.

    Policies marked `abstract` are bases for `extends` only and are not returned.
    """
    if not directory.is_dir():
        raise PolicyError([PolicyIssue(str(directory), "", "policy directory does not exist")])
    issues: list[PolicyIssue] = []
    try:
        files = policy_files(directory)
    except OSError as err:
        issue = PolicyIssue(str(directory), "", f"cannot list: {err.strerror}")
        raise PolicyError([issue]) from None
    if len(files) > MAX_POLICY_FILES:
        raise PolicyError([PolicyIssue(str(directory), "",
                                       f"more than {MAX_POLICY_FILES} policy files")])
    raw: list[_RawPolicy] = []
    for path in files:
        try:
            raw.append(read_file(path))
        except PolicyError as err:
            issues.extend(err.issues)
    by_name: dict[str, _RawPolicy] = {}
    for item in raw:
        name = item.data.get("name")
        if isinstance(name, str) and name not in by_name:
            by_name[name] = item
    loaded: list[LoadedPolicy] = []
    for item in raw:
        try:
            data = _resolve_extends(item, by_name, ())
            policy = _validate(item, data)
        except PolicyError as err:
            issues.extend(err.issues)
            continue
        if not policy.abstract:
            loaded.append(LoadedPolicy(policy, item.path, item.root))
    issues.extend(_check_set(loaded))
    if not files:
        issues.append(PolicyIssue(str(directory), "", "no policy files (*.yaml) found"))
    if issues:
        raise PolicyError(issues)
    return loaded


@dataclass(frozen=True)
class _RawPolicy:
    path: Path
    data: dict[str, Any]
    root: yaml.Node


# What a policy never inherits from its base: its identity.
_NOT_INHERITED = frozenset({"name", "description", "match", "abstract", "extends"})


def _resolve_extends(item: _RawPolicy, by_name: dict[str, _RawPolicy],
                     chain: tuple[str, ...]) -> dict[str, Any]:
    """The policy's data with its base (recursively) merged underneath."""
    base_name = item.data.get("extends")
    if base_name is None:
        return item.data
    name = str(item.data.get("name"))
    line = line_of(item.root, ("extends",))
    if not isinstance(base_name, str) or base_name not in by_name:
        raise PolicyError([PolicyIssue(str(item.path), "extends",
                                       f"no policy named {base_name!r} in this directory", line)])
    if base_name in (*chain, name):
        cycle = " → ".join((*chain, name, base_name))
        raise PolicyError([PolicyIssue(str(item.path), "extends",
                                       f"extends cycle: {cycle}", line)])
    base = _resolve_extends(by_name[base_name], by_name, (*chain, name))
    inherited = {k: v for k, v in base.items() if k not in _NOT_INHERITED}
    return _merge(inherited, item.data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) is replaced whole."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_file(path: Path) -> _RawPolicy:
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
    return _RawPolicy(path, data, root)


def _validate(item: _RawPolicy, data: dict[str, Any]) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        raise PolicyError(
            [_issue_from_pydantic(str(item.path), item.root, error)
             for error in err.errors()]) from None


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
