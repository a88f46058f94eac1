"""What a Kubernetes API server would say about a manifest, checked offline.

`schema_valid` validates against Kubernetes' own OpenAPI schemas (kubernetes-validate
ships them in its wheel) in strict mode, so an unknown or misspelt field fails as well as
a wrong type. `api_checks` adds the rules the API server enforces beyond the schema that
an injector could break: unique container and volume names, every mount backed by a
volume (or a StatefulSet claim template), `restartPolicy` only on init containers.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate

# Native sidecars (an init container with restartPolicy: Always) are GA from 1.33; on by
# default since 1.29. The manifests and kube-inject's output are checked against 1.33.
KUBERNETES = "1.33"


def schema_valid(doc: dict[str, Any]) -> None:
    """Raise kubernetes_validate.ValidationError if `doc` breaks the 1.33 schema."""
    if doc.get("kind") == "List":
        for item in doc["items"]:
            schema_valid(item)
        return
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def api_checks(doc: dict[str, Any]) -> None:
    """The API server's own rules for a Pod, Deployment or StatefulSet that the schema
    cannot express; AssertionError naming the rule."""
    spec = pod_spec(doc)
    inits, containers = spec.get("initContainers") or [], spec["containers"]
    names = [c["name"] for c in [*inits, *containers]]
    assert len(names) == len(set(names)), f"container names repeat: {names}"
    volumes = [v["name"] for v in spec.get("volumes") or []]
    assert len(volumes) == len(set(volumes)), f"volume names repeat: {volumes}"
    claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates") or []} \
        if doc["kind"] == "StatefulSet" else set()
    assert not claims & set(volumes), "a volume shadows a claim template"
    for container in [*inits, *containers]:
        for mount in container.get("volumeMounts") or []:
            assert mount["name"] in set(volumes) | claims, \
                f"{container['name']}: mount {mount['name']!r} has no volume"
        env = [e["name"] for e in container.get("env") or []]
        assert len(env) == len(set(env)), f"{container['name']}: env names repeat"
    for container in containers:
        assert "restartPolicy" not in container, "restartPolicy on a regular container"


def sidecar_of(doc: dict[str, Any]) -> dict[str, Any]:
    [sidecar] = [c for c in pod_spec(doc).get("initContainers") or []
                 if c["name"] == "guardrail"]
    return sidecar
