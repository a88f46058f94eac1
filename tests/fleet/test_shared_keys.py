"""Keys every replica must share: the `hash` action's and the routing tags' (issue 19).

A fleet's data directory is a per-pod emptyDir, so keys generated there differ on every
pod. These tests attack that from the operator's side: two "pods" given the same Secret
must hash and sign alike, a fleet with no shared key must not start, and the reader of a
mounted key must take Kubernetes' 0440 root-owned Secret file and nothing looser.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.errors import ConfigError
from sidecar.keys import read_private_file
from sidecar.pipeline import resources_from
from sidecar.tags import sign, verify
from tests.conftest import REPO, TEST_POLICIES, make_settings

STORE = "postgresql:///guardrail?host=/nonexistent"  # never reached: keys come first
ROOT = os.geteuid() == 0
OTHER_UID = 54321


def _key_file(path: Path, mode: int = 0o600) -> Path:
    path.write_bytes(secrets.token_bytes(32))
    path.chmod(mode)
    return path


def test_two_pods_with_the_secret_hash_and_sign_alike(tmp_path: Path) -> None:
    """Two data directories (two emptyDirs), one Secret: the same keys; without the
    Secret (and allowed per-pod keys), different ones, which is what the refusal is for."""
    hash_file = _key_file(tmp_path / "hash.key", 0o440 if ROOT else 0o600)
    tags = base64.b64encode(secrets.token_bytes(32)).decode()
    pods = [resources_from(make_settings(tmp_path / f"pod{n}", store=STORE,
                                         hash_key_file=hash_file, tags_key=tags))
            for n in range(2)]
    assert pods[0].hash_key == pods[1].hash_key == hash_file.read_bytes()
    assert pods[0].tag_key == pods[1].tag_key == base64.b64decode(tags)
    signed = sign(pods[0].tag_key, "req-1", {"allowed_regions": "eu-central-1"})
    assert verify(pods[1].tag_key, "req-1", signed)  # signed on one pod, checked on another
    apart = [resources_from(make_settings(tmp_path / f"own{n}", store=STORE,
                                          allow_pod_keys=True)) for n in range(2)]
    assert apart[0].hash_key != apart[1].hash_key
    assert not verify(apart[1].tag_key, "req-1", sign(apart[0].tag_key, "req-1", {}))


@pytest.mark.parametrize("missing", ["hash", "tags"])
def test_fleet_refuses_generated_keys(tmp_path: Path, missing: str) -> None:
    """Either key left to the pod: refused, naming both ways to give it and the escape
    hatch, and no key file is generated on the way."""
    given_keys: dict[str, object] = {
        "hash_key_file": _key_file(tmp_path / "hash.key"),
        "tags_key": base64.b64encode(secrets.token_bytes(32)).decode()}
    given_keys.pop("hash_key_file" if missing == "hash" else "tags_key")
    env = missing.upper() + "_KEY"
    with pytest.raises(ConfigError) as refused:
        resources_from(make_settings(tmp_path, store=STORE, **given_keys))
    message = str(refused.value)
    assert f"GUARDRAIL_{env}_FILE" in message and f"GUARDRAIL_{env} " in message
    assert "GUARDRAIL_ALLOW_POD_KEYS" in message
    assert not (tmp_path / "data" / "keys" / f"{missing}.key").exists()


def test_single_mode_still_generates_its_keys(tmp_path: Path) -> None:
    """Without a store nothing changes: the embedded default runs from a clean clone."""
    resources = resources_from(make_settings(tmp_path))
    assert resources.hash_key == (tmp_path / "data" / "keys" / "hash.key").read_bytes()


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_env_key_bad_values_are_refused_without_echo(tmp_path: Path, value: str) -> None:
    if not value:  # an empty variable is "unset": the fleet refusal, not a silent default
        with pytest.raises(ConfigError, match="GUARDRAIL_HASH_KEY_FILE"):
            resources_from(make_settings(tmp_path, store=STORE, hash_key=value,
                                         tags_key=base64.b64encode(bytes(32)).decode()))
        return
    with pytest.raises(ConfigError) as refused:
        resources_from(make_settings(tmp_path, hash_key=value))
    assert "GUARDRAIL_HASH_KEY" in str(refused.value)
    assert value not in str(refused.value)


def test_short_key_file_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 16)
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="16 bytes"):
        resources_from(make_settings(tmp_path, tags_key_file=short))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.integers(0o400, 0o777), root_owned=st.booleans())
def test_key_file_modes(tmp_path: Path, mode: int, root_owned: bool) -> None:
    """Whatever the mode and owner: read only when nobody but the owner may write it and
    nobody but the owner may read it, or, for a root-owned file, its group too (0440:
    Kubernetes' Secret mount). Never a user's group-readable file, never others."""
    if not ROOT and root_owned:
        pytest.skip("making a root-owned file needs root")
    path = tmp_path / f"k{mode:o}{int(root_owned)}"
    path.write_bytes(b"k" * 32)
    if ROOT and not root_owned:
        os.chown(path, OTHER_UID, OTHER_UID)
    path.chmod(mode)
    loose = mode & 0o077
    expected = loose == 0 or (loose == 0o040 and root_owned)
    if expected:
        assert read_private_file(path, "test key") == b"k" * 32
    else:
        with pytest.raises(ConfigError, match="chmod 600"):
            read_private_file(path, "test key")


def test_serve_in_fleet_mode_without_keys_exits_2(tmp_path: Path) -> None:
    """The process, not only the function: one clear line, exit 2, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    env.update(GUARDRAIL_STORE=STORE, GUARDRAIL_DATA_DIR=str(tmp_path / "data"),
               GUARDRAIL_POLICIES=str(TEST_POLICIES), GUARDRAIL_WORKERS="0")
    done = subprocess.run([sys.executable, "-m", "sidecar", "serve", "--listen",
                           "127.0.0.1:0", "--metrics-listen", ""], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "GUARDRAIL_HASH_KEY_FILE" in done.stderr
    assert "Traceback" not in done.stderr
