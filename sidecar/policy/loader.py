"""Read policy files from a directory and validate them, reporting every problem found.

Each problem names the file, the line, the field path and the reason, so that the
security team can fix a bad edit from `guardrail policy check` output alone. A problem
never quotes what the file says: a policy directory may be reachable by more people
than the errors are (the PolicyStatus RPC, the logs), and a file that is not a policy at
all (a copied `/etc/shadow`) must not be echoed line by line. Values are never shown;
field names only when they look like field names; YAML syntax errors by line and column.

Policy files are hostile input too, so YAML is read as a stream of parser events and
built here, with budgets checked before any Python object is made:

- no anchors (`&a`), aliases (`*a`), tags (`!!python/…`, `!x`) or merge keys (`<<`).
  Policies share settings with `extends`, and an alias is how a 500-byte file expands
  to billions of nodes ("billion laughs") or refers to itself (`&a [*a]`). Refusing them
  outright is simpler to reason about than a budget on expansion;
- at most `MAX_YAML_DEPTH` levels of nesting, `MAX_YAML_NODES` values per file and
  `MAX_SCALAR_CHARS` characters per value, `MAX_POLICY_FILE_BYTES` per file;
- across the directory, once `extends` is applied (a base's lists are compiled again
  for every policy that extends it): `MAX_TOTAL_NODES` values and `MAX_TOTAL_PATTERNS`
  regular expressions, and `extends` chains at most `MAX_EXTENDS_DEPTH` long.

The YAML scanner is libyaml's (C) when PyYAML was built with it; no recursion happens in
Python, so no file can raise RecursionError.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy.files import Tree, read_tree
from sidecar.policy.model import POLICY_NAME, Policy

MAX_POLICY_FILE_BYTES = 4 * 1024 * 1024
MAX_POLICY_FILES = 500
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 200_000
MAX_SCALAR_CHARS = 65_536
MAX_TOTAL_NODES = 200_000
MAX_TOTAL_PATTERNS = 2_000
MAX_EXTENDS_DEPTH = 8
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


# -- where each value was: a compact line map ------------------------------------------


class _MapLines:
    """Line of a mapping, and for each key (as written): the key's line, the value's map."""

    __slots__ = ("keys", "line")

    def __init__(self, line: int) -> None:
        self.line = line
        self.keys: dict[str, tuple[int, Lines]] = {}


class _SeqLines:
    """Line of a sequence and of each item (an array of ints for a list of plain values,
    so a 100,000-word list costs 400 KB here, not 100,000 objects)."""

    __slots__ = ("items", "line")

    def __init__(self, line: int) -> None:
        self.line = line
        self.items: list[Lines] | array[int] = []


Lines = int | _MapLines | _SeqLines


def _line(lines: Lines) -> int:
    return lines if isinstance(lines, int) else lines.line


def line_of(root: Lines, path: Sequence[str | int]) -> int | None:
    """1-based line of the value at `path`, or of its deepest existing ancestor (a
    mapping key's own line for a key)."""
    node = root
    line = _line(node)
    for part in path:
        child: Lines | None = None
        if isinstance(node, _MapLines):
            found = node.keys.get(str(part))
            if found is not None:
                line, child = found
        elif isinstance(node, _SeqLines) and isinstance(part, int) \
                and 0 <= part < len(node.items):
            child = node.items[part]
            line = _line(child)
        if child is None:
            break
        node = child
    return line


# -- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedYaml:
    data: Any
    lines: Lines
    nodes: int  # values in the file (scalars, mappings, sequences)


class _Refused(Exception):
    def __init__(self, reason: str, mark: Any, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(reason)
        self.reason, self.mark, self.path = reason, mark, path


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_CONSTRUCTED = frozenset({"tag:yaml.org,2002:null", "tag:yaml.org,2002:bool",
                          "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                          "tag:yaml.org,2002:timestamp"})
_NO_KEY = object()
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|#x[0-9a-fA-F]+")


class _Frame:
    __slots__ = ("key", "key_line", "key_text", "lines", "path", "value")

    def __init__(self, value: dict[Any, Any] | list[Any], lines: _MapLines | _SeqLines,
                 path: tuple[str | int, ...]) -> None:
        self.value, self.lines, self.path = value, lines, path
        self.key: Any = _NO_KEY
        self.key_text = ""
        self.key_line = 0


def parse_yaml(data: bytes, name: str) -> ParsedYaml:
    """Parse one policy-like YAML file within the budgets above; PolicyError otherwise."""
    if len(data) > MAX_POLICY_FILE_BYTES:
        raise PolicyError([PolicyIssue(name, "", f"file is larger than "
                                                 f"{MAX_POLICY_FILE_BYTES} bytes")])
    text = _decode(data, name)
    loader = _PolicyYamlLoader(text)
    try:
        return _Builder(loader).run(name)
    except _Refused as refused:
        column = f" (column {refused.mark.column + 1})" if refused.mark is not None else ""
        line = refused.mark.line + 1 if refused.mark is not None else None
        raise PolicyError([PolicyIssue(name, _dotted(refused.path), refused.reason + column,
                                       line)]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" (column {mark.column + 1})" if mark is not None else ""
        problem = _QUOTED.sub("…", str(err.problem or err.context or "syntax error"))
        raise PolicyError([PolicyIssue(name, "", f"invalid YAML: {problem}{where}",
                                       mark.line + 1 if mark is not None else None)]) from None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, max(0, int(err.position))) + 1
        raise PolicyError([PolicyIssue(name, "", "invalid YAML: a control or other "
                                                 "non-printable character", line)]) from None
    except yaml.YAMLError as err:
        raise PolicyError([PolicyIssue(name, "", f"invalid YAML ({type(err).__name__})")
                           ]) from None
    finally:
        loader.dispose()


def _decode(data: bytes, name: str) -> str:
    """UTF-8, with or without a leading byte-order mark (editors on Windows write one)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise PolicyError([PolicyIssue(name, "", "file is UTF-16 or UTF-32 (it starts with "
                                                 "that byte-order mark); save it as UTF-8")])
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PolicyError([PolicyIssue(name, "", "file is not valid UTF-8", line)]) from None


def _line_at(event: Any) -> int:
    return int(event.start_mark.line) + 1


class _Builder:
    """Values and their lines from the event stream: no recursion, nothing shared."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.resolvers = loader.yaml_implicit_resolvers
        self.constructors = loader.yaml_constructors
        self.stack: list[_Frame] = []
        self.root: Any = _NO_KEY
        self.root_lines: Lines = 1
        self.nodes = self.documents = 0
        self.duplicates: list[tuple[tuple[str | int, ...], int]] = []

    def run(self, name: str) -> ParsedYaml:
        loader = self.loader
        nodes = (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent,
                 yaml.AliasEvent)
        while loader.check_event():
            event: Any = loader.get_event()
            if isinstance(event, nodes):
                self._count(event)
            if isinstance(event, yaml.ScalarEvent):
                self._add(self._scalar(event), _line_at(event), event)
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                self._open(event)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frame = self.stack.pop()
                lines = frame.lines
                if isinstance(lines, _SeqLines) and lines.items \
                        and all(isinstance(item, int) for item in lines.items):
                    lines.items = array("I", lines.items)  # type: ignore[arg-type]
                self._add(frame.value, lines, event)
            elif isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    raise _Refused("more than one YAML document (---) in a policy file",
                                   event.start_mark)
        if self.duplicates:
            raise PolicyError([
                PolicyIssue(name, _dotted(path), "key appears twice (the second would "
                                                 "silently win)", line)
                for path, line in self.duplicates])
        if self.root is _NO_KEY:
            raise PolicyError([PolicyIssue(name, "", "file is empty")])
        return ParsedYaml(self.root, self.root_lines, self.nodes)

    def _here(self) -> tuple[str | int, ...]:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, dict):
            return top.path if top.key is _NO_KEY else (*top.path, top.key_text)
        return (*top.path, len(top.value))

    def _count(self, event: Any) -> None:
        """Budgets and refusals that apply to every node, before it is built."""
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            raise _Refused(f"more than {MAX_YAML_NODES} values in one file",
                           event.start_mark, self._here())
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _Refused("anchors (&) and aliases (*) are not allowed in policy files; "
                           "share settings with 'extends'", event.start_mark, self._here())
        if event.tag is not None:
            raise _Refused("YAML tags (!...) are not allowed in policy files",
                           event.start_mark, self._here())

    def _scalar(self, event: Any) -> Any:
        text = event.value
        if len(text) > MAX_SCALAR_CHARS:
            raise _Refused(f"a value longer than {MAX_SCALAR_CHARS} characters",
                           event.start_mark, self._here())
        if not event.implicit[0] or (text and text[0] not in self.resolvers):
            return text  # quoted, or a plain value no resolver could claim: a string
        tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))
        if tag == _MERGE:
            raise _Refused("merge keys (<<) are not allowed in policy files; share "
                           "settings with 'extends'", event.start_mark, self._here())
        if tag in _CONSTRUCTED:
            return self.constructors[tag](self.loader, yaml.ScalarNode(tag, text))
        return text

    def _open(self, event: Any) -> None:
        if len(self.stack) >= MAX_YAML_DEPTH:
            raise _Refused(f"nested deeper than {MAX_YAML_DEPTH} levels",
                           event.start_mark, self._here())
        line = _line_at(event)
        if isinstance(event, yaml.MappingStartEvent):
            self.stack.append(_Frame({}, _MapLines(line), self._here()))
        else:
            self.stack.append(_Frame([], _SeqLines(line), self._here()))

    def _add(self, value: Any, lines: Lines, event: Any) -> None:
        if not self.stack:
            self.root, self.root_lines = value, lines
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            assert isinstance(top.lines, _SeqLines)
            top.value.append(value)
            top.lines.items.append(lines)  # type: ignore[arg-type]
            return
        if top.key is _NO_KEY:  # this value is a key
            if not isinstance(event, yaml.ScalarEvent):
                raise _Refused("mapping keys must be plain values, not lists or mappings",
                               event.start_mark, top.path)
            assert isinstance(lines, int)
            top.key, top.key_text, top.key_line = value, event.value, lines
            return
        assert isinstance(top.lines, _MapLines)
        if top.key_text in top.lines.keys:
            self.duplicates.append(((*top.path, top.key_text), top.key_line))
        else:
            top.value[top.key] = value
            top.lines.keys[top.key_text] = (top.key_line, lines)
        top.key = _NO_KEY


# -- the directory ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    source: Path  # where it is on disk (a snapshot, or the directory checked)
    lines: Lines
    name: str = ""  # the file as the operator knows it: relative to the policy directory

    def line_of(self, path: Sequence[str | int]) -> int | None:
        return line_of(self.lines, path)

    @property
    def file(self) -> str:
        return self.name or self.source.name


def is_policy_file(name: str) -> bool:
    """A policy file at the top of the directory. The suffix is read in any case: a
    `strict.YAML` the security team wrote must be loaded, never silently skipped."""
    lowered = name.lower()
    return "/" not in name and lowered.endswith(POLICY_SUFFIXES) \
        and not lowered.endswith(TEST_SUFFIXES)


def load_directory(directory: Path) -> list[LoadedPolicy]:
    """Load and validate every policy file in `directory` (read safely, see
    sidecar.policy.files); raise PolicyError listing all issues."""
    return load_tree(read_tree(directory), directory)


def load_tree(tree: Tree, base: Path) -> list[LoadedPolicy]:
    """Load and validate the policy files of `tree` (files named relative to the policy
    directory; `base` is where the tree is on disk); raise PolicyError listing all issues.

    Policies marked `abstract` are bases for `extends` only and are not returned.
    """
    files = [item for item in tree.files if is_policy_file(item.name)]
    if len(files) > MAX_POLICY_FILES:
        raise PolicyError([PolicyIssue(".", "", f"more than {MAX_POLICY_FILES} policy files")])
    if not files:
        raise PolicyError([PolicyIssue(".", "", "no policy files (*.yaml) found")])
    issues: list[PolicyIssue] = []
    raw: list[_RawPolicy] = []
    for item in files:
        if item.mode & 0o002:
            issues.append(PolicyIssue(item.name, "", "refusing a world-writable policy file"))
            continue
        try:
            parsed = parse_yaml(item.data, item.name)
        except PolicyError as err:
            issues.extend(err.issues)
            continue
        if not isinstance(parsed.data, dict):
            issues.append(PolicyIssue(item.name, "", "a policy file must be a mapping of "
                                                     "fields", 1))
            continue
        raw.append(_RawPolicy(item.name, base / item.name, parsed.data, parsed.lines,
                              parsed.nodes))
    by_name: dict[str, _RawPolicy] = {}
    for entry in raw:
        name = entry.data.get("name")
        if isinstance(name, str) and re.fullmatch(POLICY_NAME, name) and name not in by_name:
            by_name[name] = entry
    merged: list[tuple[_RawPolicy, dict[str, Any], int]] = []
    for entry in raw:
        try:
            data, nodes = _resolve_extends(entry, by_name, ())
        except PolicyError as err:
            issues.extend(err.issues)
            continue
        merged.append((entry, data, nodes))
    issues.extend(_budget(merged))
    if issues:  # nothing is validated while the set is over budget or unreadable
        raise PolicyError(issues)
    loaded: list[LoadedPolicy] = []
    for entry, data, _ in merged:
        try:
            policy = _validate(entry, data)
        except PolicyError as err:
            issues.extend(err.issues)
            continue
        if not policy.abstract:
            loaded.append(LoadedPolicy(policy, entry.path, entry.lines, entry.name))
    issues.extend(_check_set(loaded))
    if issues:
        raise PolicyError(issues)
    return loaded


@dataclass(frozen=True)
class _RawPolicy:
    name: str
    path: Path
    data: dict[str, Any]
    lines: Lines
    nodes: int


# What a policy never inherits from its base: its identity.
_NOT_INHERITED = frozenset({"name", "description", "match", "abstract", "extends"})


def _resolve_extends(item: _RawPolicy, by_name: dict[str, _RawPolicy],
                     chain: tuple[str, ...]) -> tuple[dict[str, Any], int]:
    """The policy's data with its base (recursively) merged underneath, and how many
    values that is at most (its own and its bases')."""
    base_name = item.data.get("extends")
    if base_name is None:
        return item.data, item.nodes
    own = item.data.get("name")
    name = own if isinstance(own, str) and re.fullmatch(POLICY_NAME, own) else "(unnamed)"
    line = line_of(item.lines, ("extends",))
    if not isinstance(base_name, str) or base_name not in by_name:
        shown = repr(base_name) if isinstance(base_name, str) \
            and re.fullmatch(POLICY_NAME, base_name) else "by that name"
        raise PolicyError([PolicyIssue(item.name, "extends",
                                       f"no policy named {shown} in this directory", line)])
    if base_name in (*chain, name):
        cycle = " → ".join((*chain, name, base_name))
        raise PolicyError([PolicyIssue(item.name, "extends", f"extends cycle: {cycle}", line)])
    if len(chain) + 1 >= MAX_EXTENDS_DEPTH:
        raise PolicyError([PolicyIssue(item.name, "extends", f"'extends' chain longer than "
                                                             f"{MAX_EXTENDS_DEPTH}", line)])
    base, base_nodes = _resolve_extends(by_name[base_name], by_name, (*chain, name))
    inherited = {k: v for k, v in base.items() if k not in _NOT_INHERITED}
    return _merge(inherited, item.data), item.nodes + base_nodes


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) is replaced whole."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _budget(merged: list[tuple[_RawPolicy, dict[str, Any], int]]) -> list[PolicyIssue]:
    """What compiling the whole set would cost, bounded before any of it is validated."""
    issues: list[PolicyIssue] = []
    total = sum(nodes for _, _, nodes in merged)
    if total > MAX_TOTAL_NODES:
        largest = sorted(merged, key=lambda m: -m[2])[:3]
        issues.append(PolicyIssue(".", "", (
            f"the policies hold {total} values once 'extends' is applied, more than "
            f"{MAX_TOTAL_NODES} (largest: "
            + ", ".join(f"{entry.name} {nodes}" for entry, _, nodes in largest) + ")")))
    patterns = sum(_patterns(data) for _, data, _ in merged)
    if patterns > MAX_TOTAL_PATTERNS:
        issues.append(PolicyIssue(".", "", (
            f"the policies hold {patterns} patterns once 'extends' is applied, more than "
            f"{MAX_TOTAL_PATTERNS}")))
    return issues


def _patterns(data: dict[str, Any]) -> int:
    """Regular expressions a policy's raw data asks to compile (content and recognizers)."""
    def items(value: Any, key: str) -> list[Any]:
        found = value.get(key) if isinstance(value, dict) else None
        return found if isinstance(found, list) else []

    return (sum(len(items(rule, "patterns")) for rule in items(data.get("content"), "rules"))
            + sum(len(items(recognizer, "patterns"))
                  for recognizer in items(data.get("pii"), "recognizers")))


def _validate(item: _RawPolicy, data: dict[str, Any]) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        raise PolicyError(
            [_issue_from_pydantic(item.name, item.lines, error)
             for error in err.errors()]) from None


def _issue_from_pydantic(file: str, root: Lines, error: Any) -> PolicyIssue:
    location = tuple(part for part in error["loc"] if part not in ("function-after",))
    reason = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = "unknown field"
    return PolicyIssue(file, _dotted(location), reason, line_of(root, location))


def _check_set(loaded: list[LoadedPolicy]) -> list[PolicyIssue]:
    """Rules about the set of policies as a whole."""
    from sidecar.policy.matching import fold_glob

    issues: list[PolicyIssue] = []
    seen: dict[str, str] = {}
    for item in loaded:
        name = item.policy.name
        if name in seen:
            issues.append(PolicyIssue(item.file, "name",
                                      f"policy name '{name}' is also used by {seen[name]}",
                                      item.line_of(("name",))))
        seen.setdefault(name, item.file)
    defaults = [item for item in loaded if item.policy.is_default]
    if loaded and not defaults:
        issues.append(PolicyIssue(".", "",
                                  "no default policy: exactly one policy must omit 'match'"))
    for extra in defaults[1:]:
        issues.append(PolicyIssue(extra.file, "match",
                                  f"a second default policy (no 'match'); {defaults[0].file} "
                                  "is already the default"))
    matches: dict[tuple[frozenset[str], frozenset[str]], str] = {}
    for item in loaded:
        match = item.policy.match
        if match is None:
            continue
        if _everything(match.tenants) and _everything(match.apps):
            # `match: {}` or `tenants: ["*"]`: every request, i.e. a default policy that
            # silently wins over the real one.
            where = f"{defaults[0].file} is already the default" if defaults else \
                "the default policy is the one without 'match'"
            issues.append(PolicyIssue(item.file, "match", (
                f"matches every tenant and every app, so it would replace the default "
                f"policy for all traffic: a second default ({where}); name the tenants "
                "or apps it is for"), item.line_of(("match",))))
            continue
        # Matching ignores case, so `ACME` and `acme` are the same match.
        key = (frozenset(map(fold_glob, match.tenants)), frozenset(map(fold_glob, match.apps)))
        if key in matches:
            issues.append(PolicyIssue(item.file, "match",
                                      f"same match as {matches[key]}: which applies is ambiguous",
                                      item.line_of(("match",))))
        matches.setdefault(key, item.file)
    return issues


def _everything(globs: list[str]) -> bool:
    """Whether these globs match any value at all (`*`, `**`)."""
    return any(glob and set(glob) == {"*"} for glob in globs)


_FIELD_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Longer keys are shortened: no field of the format is this long, and a long key that
# is not a field may be a pasted secret (`sk_live_51H8...: 1`).
MAX_KEY_SHOWN = 32


def _dotted(path: Sequence[str | int]) -> str:
    """`pii.entities.EMAIL_ADDRESS.action`, `content.rules[0].words[3]`. A key that does
    not look like a field name is shown as `<key>`: keys are file content too."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part) if _FIELD_NAME.fullmatch(str(part)) else "<key>"
        if len(text) > MAX_KEY_SHOWN:
            text = f"{text[:6]}…({len(text)} characters)"
        out += f".{text}" if out else text
    return out
