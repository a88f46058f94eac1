"""deploy/kubernetes/pod.yaml stays a working native-sidecar example for this sidecar."""

from __future__ import annotations

from typing import Any

import yaml

from sidecar.config import Settings
from tests.conftest import REPO


def documents() -> list[dict[str, Any]]:
    text = (REPO / "deploy" / "kubernetes" / "pod.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_the_sidecar_is_a_native_sidecar_with_probes_volume_secret_and_resources() -> None:
    pod = next(doc for doc in documents() if doc["kind"] == "Pod")["spec"]
    [sidecar] = [c for c in pod["initContainers"] if c["name"] == "guardrail"]
    assert sidecar["restartPolicy"] == "Always"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["exec"]["command"][:2] == ["guardrail", "health"]
    env = {item["name"]: item for item in sidecar["env"]}
    assert env["GUARDRAIL_AUDIT_KEK"]["valueFrom"]["secretKeyRef"]["name"]
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts[env["GUARDRAIL_DATA_DIR"]["value"]] in {v["name"] for v in pod["volumes"]}
    assert sidecar["resources"]["requests"] and sidecar["resources"]["limits"]
    grace = float(env["GUARDRAIL_SHUTDOWN_GRACE"]["value"])
    assert pod["terminationGracePeriodSeconds"] >= grace + 15  # drain, then audit flush


def test_every_setting_it_names_exists_and_validates(monkeypatch: Any) -> None:
    pod = next(doc for doc in documents() if doc["kind"] == "Pod")["spec"]
    [sidecar] = pod["initContainers"]
    plain = {item["name"]: item["value"] for item in sidecar["env"] if "value" in item}
    for name, value in plain.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # every value validates
    assert not settings.is_public_bind
    known = {f"GUARDRAIL_{field.upper()}" for field in Settings.model_fields}
    assert {item["name"] for item in sidecar["env"]} <= known
