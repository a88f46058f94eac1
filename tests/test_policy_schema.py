"""The editor schema of policy files: up to date with the models, and actually strict."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from scripts.gen_policy_schema import TARGET, generate
from sidecar.policy.loader import _PolicyYamlLoader
from tests.conftest import REPO, TEST_POLICIES


def load(text: str) -> dict[str, object]:
    """YAML 1.2 booleans, as editors and the sidecar read it (`on:` stays a key)."""
    return yaml.load(text, Loader=_PolicyYamlLoader)  # type: ignore[no-any-return]


def schema() -> dict[str, object]:
    return json.loads(TARGET.read_text())  # type: ignore[no-any-return]


def test_committed_schema_matches_the_models() -> None:
    assert TARGET.read_text() == generate(), "run `make policy-schema` and commit the result"


@pytest.mark.parametrize("path", sorted(
    p for directory in (REPO / "policies", TEST_POLICIES) for p in directory.glob("*.yaml")
    if not p.name.endswith(".tests.yaml")), ids=lambda p: p.name)
def test_every_shipped_policy_validates_against_it(path: object) -> None:
    data = load(REPO.joinpath(str(path)).read_text())
    jsonschema.Draft202012Validator(schema()).validate(data)


def test_shipped_policies_point_editors_at_it() -> None:
    for name in ("default.yaml", "example.yaml"):
        first = (REPO / "policies" / name).read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=policy.schema.json"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["pii"]["entities"]["PERSON"].update(acton="replace"), "acton"),
    (lambda d: d.update(on_eror="allow"), "on_eror"),
    (lambda d: d["pii"]["entities"]["PERSON"].update(action="smash"), "smash"),
    (lambda d: d["content"]["rules"][0].update(action="nuke"), "nuke"),
])
def test_an_editor_flags_a_typo(edit: object, message: str) -> None:
    data = load((REPO / "policies" / "example.yaml").read_text())
    broken = copy.deepcopy(data)
    edit(broken)  # type: ignore[operator]
    errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(broken))
    assert errors
    assert any(message in error.message for error in errors)
