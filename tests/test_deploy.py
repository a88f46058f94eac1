"""deploy/ and the Dockerfile: what an operator applies and builds must work.

Every manifest in deploy/ is valid against Kubernetes' own schemas (1.33, strict), obeys
the API server's rules, names only settings that exist, and its sidecar is exactly what
`guardrail kube-inject` writes, so the examples and the tool cannot drift apart. The
image itself is built and run by `make image-check` (needs Docker; not part of `make
test`); here the Dockerfile is held to what kube-inject and the manifests assume of it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sidecar import kubeinject
from sidecar.config import Settings
from tests.conftest import REPO
from tests.kube import api_checks, pod_spec, schema_valid, sidecar_of

MANIFESTS = sorted((REPO / "deploy").rglob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def workloads(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in documents(path) if doc["kind"] in ("Pod", "Deployment",
                                                              "StatefulSet")]


def test_deploy_holds_both_modes() -> None:
    modes = {doc_meta(doc)["annotations"][kubeinject.MODE_ANNOTATION]
             for path in MANIFESTS for doc in workloads(path)}
    assert modes == {"single", "fleet"}


def doc_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_for_kubernetes(path: Path) -> None:
    for doc in documents(path):
        schema_valid(doc)
    for doc in workloads(path):
        api_checks(doc)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_sidecar_is_exactly_what_kube_inject_writes(path: Path) -> None:
    """Injecting into the example with the options it implies changes nothing: resources,
    probes, env, volumes, grace period and security context are kube-inject's own."""
    for doc in workloads(path):
        sidecar, spec = sidecar_of(doc), pod_spec(doc)
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
                   for e in sidecar["env"] if "valueFrom" in e}
        volumes = {v["name"]: v for v in spec["volumes"]}
        claim = volumes[kubeinject.DATA_VOLUME].get("persistentVolumeClaim", {})
        signing = volumes.get(kubeinject.SIGNING_VOLUME, {}).get("secret", {})
        options = kubeinject.Options(
            mode=doc_meta(doc)["annotations"][kubeinject.MODE_ANNOTATION],
            image=sidecar["image"], kek_secret=secrets["GUARDRAIL_AUDIT_KEK"],
            store_secret=secrets.get("GUARDRAIL_STORE", "guardrail-store"),
            signing_key_secret=signing.get("secretName", "guardrail-audit-signing-key"),
            policies_configmap=volumes[kubeinject.POLICIES_VOLUME]["configMap"]["name"],
            data_claim=claim.get("claimName"))
        assert kubeinject.inject_object(doc, options, []) == doc


def test_the_validator_bites() -> None:
    """The schema check is not vacuous: a misspelt field, a wrong type and a missing
    required field each fail it."""
    pod = next(doc for doc in documents(REPO / "deploy" / "kubernetes" / "pod.yaml")
               if doc["kind"] == "Pod")
    for mutate in (lambda p: p["spec"].update(terminationGracePeriod=45),
                   lambda p: p["spec"]["initContainers"][0].update(restartPolicy=7),
                   lambda p: p["spec"]["containers"][0].pop("name")):
        broken = copy.deepcopy(pod)
        mutate(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            schema_valid(broken)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_native_sidecar_with_probes_volume_secret_resources_and_grace(path: Path) -> None:
    for doc in workloads(path):
        spec, sidecar = pod_spec(doc), sidecar_of(doc)
        assert sidecar["restartPolicy"] == "Always"
        # Up before any init container of the app's (no key copier: the Secret's own
        # root-owned 0440 files are read where the kubelet mounts them).
        names = [c["name"] for c in spec["initContainers"]]
        assert names.index("guardrail") == 0 and "guardrail-keys" not in names
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert sidecar[probe]["exec"]["command"][:2] == ["guardrail", "health"]
        env = {item["name"]: item for item in sidecar["env"]}
        assert env["GUARDRAIL_AUDIT_KEK"]["valueFrom"]["secretKeyRef"]["name"]
        mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
        assert mounts[env["GUARDRAIL_DATA_DIR"]["value"]] in {v["name"] for v in spec["volumes"]}
        assert sidecar["resources"]["requests"] and sidecar["resources"]["limits"]
        assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
        grace = float(env["GUARDRAIL_SHUTDOWN_GRACE"]["value"])
        assert spec["terminationGracePeriodSeconds"] >= 30 + grace + 5  # app, drain, flush


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_setting_it_names_exists_and_validates(path: Path, monkeypatch: Any) -> None:
    for doc in workloads(path):
        sidecar = sidecar_of(doc)
        plain = {item["name"]: item["value"] for item in sidecar["env"] if "value" in item}
        for name, value in plain.items():
            monkeypatch.setenv(name, value)
        settings = Settings()  # every value validates
        assert not settings.is_public_bind
        known = {f"GUARDRAIL_{field.upper()}" for field in Settings.model_fields}
        assert {item["name"] for item in sidecar["env"]} <= known


def test_the_dockerfile_is_what_the_manifests_assume() -> None:
    """User, directories and probe of the image agree with kube-inject; the default base
    is the official image, the build is multi-stage, the final stage runs non-root."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11[\w.-]*-slim-bookworm$", dockerfile, re.M)
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert stages == ["${BASE}", "${BASE}"]
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert f"USER {kubeinject.UID}:{kubeinject.UID}" in final
    assert f"--uid {kubeinject.UID}" in final
    assert f"GUARDRAIL_DATA_DIR={kubeinject.DATA_DIR}" in final
    assert f"GUARDRAIL_POLICIES={kubeinject.POLICIES_DIR}" in final
    assert f"GUARDRAIL_LISTEN={kubeinject.LISTEN}" in final
    assert 'CMD ["guardrail", "health"' in final
    assert "pip install" not in final  # nothing installed in the final stage
    assert "--require-hashes -r requirements/lock.txt" in dockerfile


def test_the_build_context_is_an_allow_list() -> None:
    """No development key (.guardrail/), venv or test data can reach an image layer."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "requirements", "sidecar", "audit",
                       "policies"}
