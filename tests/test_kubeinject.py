"""`guardrail kube-inject`, attacked: generated workloads, re-injection, hostile YAML.

Properties over generated Deployments, StatefulSets and Pods (containers, ports, env,
volumes, init containers, grace periods, replicas, both modes): the output is valid for
Kubernetes 1.33 (schema, strict) and for the API server's own rules, injecting twice is
byte-identical to injecting once, the app's own containers, volumes and init containers
come out as they went in (plus GUARDRAIL_TARGET), and the grace period is the app's plus
the drain. Hostile input (garbage at any place of a manifest, YAML bombs, deep nesting,
bad bytes) is refused with one line and exit code 2, never a traceback.
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import cli, kubeinject
from sidecar.kubeinject import InjectError, Options, inject_text
from tests.kube import api_checks, pod_spec, schema_valid, sidecar_of

EXAMPLES = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

label = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
names = label.filter(lambda n: not n.startswith("guardrail"))


@st.composite
def containers(draw: st.DrawFn, count: int, volumes: list[str],
               prefix: str) -> list[dict[str, Any]]:
    found = []
    for number in range(count):
        container: dict[str, Any] = {"name": f"{prefix}{number}",
                                     "image": f"example.com/{draw(label)}:1"}
        ports = draw(st.lists(st.integers(1, 65535).filter(
            lambda p: p not in kubeinject.PORTS), max_size=3, unique=True))
        if ports:
            container["ports"] = [{"containerPort": port} for port in ports]
        env = draw(st.lists(st.sampled_from(["MODE", "GUARDRAIL_TARGET", "LOG", "URL"]),
                            max_size=3, unique=True))
        if env:
            container["env"] = [{"name": key, "value": draw(st.text(max_size=20))}
                                for key in env]
        mounted = draw(st.lists(st.sampled_from(volumes), unique=True)) if volumes else []
        if mounted:
            container["volumeMounts"] = [{"name": v, "mountPath": f"/mnt/{v}"}
                                         for v in mounted]
        found.append(container)
    return found


@st.composite
def workloads(draw: st.DrawFn, mode: str) -> dict[str, Any]:
    """A valid Deployment, StatefulSet or Pod of the shapes apps really have."""
    kind = draw(st.sampled_from(["Deployment", "StatefulSet", "Pod"]))
    name = draw(names)
    volumes = draw(st.lists(names, max_size=3, unique=True))
    spec: dict[str, Any] = {
        "containers": draw(containers(draw(st.integers(1, 3)), volumes, "app"))}
    inits = draw(containers(draw(st.integers(0, 2)), volumes, "init"))
    if inits:
        spec["initContainers"] = inits
    if volumes:
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volumes]
    if draw(st.booleans()):
        spec["terminationGracePeriodSeconds"] = draw(st.integers(0, 3600))
    if draw(st.booleans()):
        spec["securityContext"] = draw(st.sampled_from(
            [{"runAsNonRoot": True}, {"fsGroup": 2000}, {}]))
    labels = {"app": name}
    metadata: dict[str, Any] = {"labels": labels}
    if draw(st.booleans()):
        metadata["annotations"] = {"team": draw(label)}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, **metadata}, "spec": spec}
    workload: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": metadata, "spec": spec}}
    if kind == "StatefulSet":
        workload["serviceName"] = name
        workload["replicas"] = draw(st.integers(0, 5))
    else:
        workload["replicas"] = draw(st.integers(0, 1 if mode == "single" else 5))
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
            "spec": workload}


def one(doc: dict[str, Any], options: Options) -> dict[str, Any]:
    text, _ = inject_text(yaml.safe_dump(doc), options)
    [out] = list(yaml.safe_load_all(text))
    return out  # type: ignore[no-any-return]


@EXAMPLES
@given(data=st.data(), mode=st.sampled_from(["single", "fleet"]))
def test_injected_workloads_are_valid_and_injecting_twice_changes_nothing(
        data: st.DataObject, mode: str) -> None:
    doc = data.draw(workloads(mode))
    options = Options(mode=mode)  # type: ignore[arg-type]
    first, _ = inject_text(yaml.safe_dump(doc), options)
    second, _ = inject_text(first, options)
    assert second == first  # byte for byte
    [out] = list(yaml.safe_load_all(first))
    schema_valid(out)
    api_checks(out)

    before, after = pod_spec(doc), pod_spec(out)
    sidecar = sidecar_of(out)
    ours = 1  # the sidecar first, in both modes (no key copier: the Secrets are read)
    assert after["initContainers"][0] is sidecar
    assert sidecar["restartPolicy"] == "Always"
    assert after["initContainers"][ours:] == before.get("initContainers", [])
    for old, new in zip(before["containers"], after["containers"], strict=True):
        env = old.get("env", [])
        missing = not any(e["name"] == "GUARDRAIL_TARGET" for e in env)
        added = [{"name": "GUARDRAIL_TARGET", "value": kubeinject.LISTEN}] if missing else []
        assert new == {**old, "env": env + added}
    user_volumes = before.get("volumes", [])
    assert after["volumes"][:len(user_volumes)] == user_volumes
    grace = before.get("terminationGracePeriodSeconds", 30)
    assert after["terminationGracePeriodSeconds"] == grace + kubeinject.DRAIN_SECONDS

    env = {e["name"]: e for e in sidecar["env"]}
    data_volume = next((v for v in after["volumes"] if v["name"] == "guardrail-data"), None)
    if mode == "fleet":
        assert env["GUARDRAIL_STORE"]["valueFrom"]["secretKeyRef"] == {
            "name": "guardrail-store", "key": "url"}
        assert data_volume == {"name": "guardrail-data", "emptyDir": {"sizeLimit": "1Gi"}}
        # The signing key is read where the kubelet mounts its Secret (root-owned 0440,
        # which sidecar.keys accepts): no copier runs before the sidecar.
        assert "guardrail-keys" not in [c["name"] for c in after["initContainers"]]
        signing = next(v for v in after["volumes"] if v["name"] == "guardrail-signing-key")
        assert signing["secret"]["defaultMode"] == 0o440
        at = {m["name"]: m for m in sidecar["volumeMounts"]}["guardrail-signing-key"]
        assert at["readOnly"] is True
        assert env["GUARDRAIL_AUDIT_SIGNING_KEY_FILE"]["value"] == \
            f"{at['mountPath']}/{signing['secret']['items'][0]['path']}"
        # The keys every replica shares, read from the Secret's own mount in the sidecar.
        shared = next(v for v in after["volumes"] if v["name"] == "guardrail-shared-keys")
        assert shared["secret"]["secretName"] == "guardrail-shared-keys"
        assert shared["secret"]["defaultMode"] == 0o440
        mounted = {m["name"]: m for m in sidecar["volumeMounts"]}["guardrail-shared-keys"]
        assert mounted["readOnly"] is True
        for variable, item in (("GUARDRAIL_HASH_KEY_FILE", "hash-key"),
                               ("GUARDRAIL_TAGS_KEY_FILE", "tags-key")):
            assert env[variable]["value"] == f"{mounted['mountPath']}/{item}"
            assert {"key": item, "path": item} in shared["secret"]["items"]
    else:
        assert "GUARDRAIL_STORE" not in env
        assert "GUARDRAIL_HASH_KEY_FILE" not in env and "GUARDRAIL_TAGS_KEY_FILE" not in env
        if doc["kind"] == "StatefulSet":
            assert data_volume is None  # one claim per replica, from the template
            [template] = out["spec"]["volumeClaimTemplates"]
            assert template["metadata"]["name"] == "guardrail-data"
        else:
            assert data_volume is not None and "persistentVolumeClaim" in data_volume


@EXAMPLES
@given(data=st.data(), first=st.sampled_from(["single", "fleet"]),
       second=st.sampled_from(["single", "fleet"]), image=label)
def test_reinjecting_with_other_options_replaces_the_sidecar_and_stays_valid(
        data: st.DataObject, first: str, second: str, image: str) -> None:
    """Upgrading the image or changing mode is a re-run: one sidecar, no stale volume."""
    doc = data.draw(workloads("single"))
    once = one(doc, Options(mode=first))  # type: ignore[arg-type]
    again = one(once, Options(mode=second, image=f"r.example/{image}:2"))  # type: ignore[arg-type]
    schema_valid(again)
    api_checks(again)
    assert sidecar_of(again)["image"] == f"r.example/{image}:2"
    volumes = [v["name"] for v in pod_spec(again)["volumes"]]
    assert volumes.count("guardrail-policies") == 1
    fleet = second == "fleet"
    assert ("guardrail-signing-key" in volumes) is fleet
    assert ("guardrail-shared-keys" in volumes) is fleet
    assert "guardrail-keys" not in [c["name"] for c in pod_spec(again)["initContainers"]]
    grace = pod_spec(doc).get("terminationGracePeriodSeconds", 30)
    assert pod_spec(again)["terminationGracePeriodSeconds"] == grace + kubeinject.DRAIN_SECONDS


def test_a_plain_deployment() -> None:
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "web", "image": "w:1"}]}}}}
    out = one(doc, Options())
    schema_valid(out)
    spec = pod_spec(out)
    assert [c["name"] for c in spec["initContainers"]] == ["guardrail"]
    assert out["spec"]["strategy"] == {"type": "Recreate"}  # never two writers of a trail
    assert {"name": "guardrail-data",
            "persistentVolumeClaim": {"claimName": "web-guardrail"}} in spec["volumes"]
    assert spec["securityContext"] == {"fsGroup": 10001}
    assert spec["terminationGracePeriodSeconds"] == 45


def test_one_that_already_has_the_sidecar_keeps_its_claim_and_grace() -> None:
    """A hand-written sidecar (deploy/kubernetes/pod.yaml before kube-inject existed) is
    replaced; the trail stays on its claim and the grace period is not counted twice."""
    pod = next(d for d in yaml.safe_load_all(
        (Path(__file__).parent.parent / "deploy" / "kubernetes" / "pod.yaml").read_text())
        if d["kind"] == "Pod")
    pod["metadata"].pop("annotations")
    spec = pod["spec"]
    spec["volumes"][0]["persistentVolumeClaim"]["claimName"] = "the-old-claim"
    spec["initContainers"][0]["volumeMounts"].append({"name": "old-cache", "mountPath": "/c"})
    spec["volumes"].append({"name": "old-cache", "emptyDir": {}})
    out = one(pod, Options())
    schema_valid(out)
    api_checks(out)
    assert {"name": "guardrail-data",
            "persistentVolumeClaim": {"claimName": "the-old-claim"}} in pod_spec(out)["volumes"]
    assert "old-cache" not in {v["name"] for v in pod_spec(out)["volumes"]}
    assert pod_spec(out)["terminationGracePeriodSeconds"] == 45
    text, _ = inject_text(yaml.safe_dump(out), Options())
    assert inject_text(text, Options())[0] == text


def test_a_multi_document_file() -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
---
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db-app}
spec:
  serviceName: db-app
  replicas: 3
  selector: {matchLabels: {app: db-app}}
  template:
    metadata: {labels: {app: db-app}}
    spec: {containers: [{name: app, image: a:1}]}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: c}]}}
"""
    out, notes = inject_text(text, Options())
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "StatefulSet", "List"]
    assert docs[0] == {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "settings"}, "data": {"a": "1"}}
    for doc in docs:
        schema_valid(doc)
    assert sidecar_of(docs[1]) and sidecar_of(docs[2]["items"][0])
    assert docs[1]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"] == {
        "requests": {"storage": "5Gi"}}
    assert any("(ConfigMap/settings): left unchanged" in note for note in notes)
    assert inject_text(out, Options())[0] == out


@pytest.mark.parametrize(("text", "says"), [
    ("a: [b", "not valid YAML at line"),
    ("- 1\n- 2\n", "expected a Kubernetes object"),
    ("kind: Pod\n", "no kind and apiVersion"),
    ("", "no Kubernetes object"),
    ("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\n", "not DaemonSet"),
    ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n", "not Job"),
    ("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: d}\n",
     "expected apps/v1"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n",
     "no container to protect"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
     "spec: {hostNetwork: true, containers: [{name: a}]}\n", "hostNetwork"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
     "spec: {containers: [{name: guardrail}]}\n", "a container named 'guardrail'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, "
     "volumeMounts: [{name: guardrail-data, mountPath: /d}]}], "
     "volumes: [{name: guardrail-data, emptyDir: {}}]}\n", "rename it"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
     "spec: {containers: [{name: a, ports: [{containerPort: 50051}]}]}\n", "port 50051"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 3, "
     "template: {spec: {containers: [{name: a}]}}}\n", "use a StatefulSet"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: "
     "{terminationGracePeriodSeconds: soon, containers: [{name: a}]}\n", "whole number"),
    ("!!python/object/apply:os.system [echo]\n", "not valid YAML"),
    ("a: &a [x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}]\n" for p, c in
                                zip("abcdefghij", "bcdefghijk", strict=True)),
     "after expanding aliases"),
    ("[" * 5000, "nested"),
    ("a: &a [*a]\n", "nested deeper"),  # a list that holds itself
])
def test_malformed_input_is_refused_with_one_clear_line(text: str, says: str) -> None:
    with pytest.raises(InjectError) as caught:
        inject_text(text, Options())
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("argv", [
    ["--data-claim", "Not_A_Name"],
    ["--outbox-size", "lots"],
    ["--image", "has space"],
    ["--kek-secret", "has_underscore"],
    ["--shared-keys-secret", "Shared.Keys"],
])
def test_bad_options_are_refused(argv: list[str], capsys: Any) -> None:
    assert cli.main(["kube-inject", "-f", "/dev/null", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"error: {argv[0]}: ")


def test_the_command_reads_stdin_writes_stdout_and_exits_2_on_bad_input(
        monkeypatch: Any, capsys: Any, tmp_path: Path) -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pod.encode())))
    assert cli.main(["kube-inject", "--mode", "fleet"]) == 0
    captured = capsys.readouterr()
    out = next(yaml.safe_load_all(captured.out))
    schema_valid(out)
    assert "GUARDRAIL_STORE" in {e["name"] for e in sidecar_of(out)["env"]}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pod.encode())))
    assert cli.main(["kube-inject", "--mode", "fleet", "--shared-keys-secret", "team-keys"]) == 0
    named = next(yaml.safe_load_all(capsys.readouterr().out))
    assert {"name": "guardrail-shared-keys", "secret": {
        "secretName": "team-keys", "defaultMode": 0o440,
        "items": [{"key": "hash-key", "path": "hash-key"},
                  {"key": "tags-key", "path": "tags-key"}]}} in pod_spec(named)["volumes"]

    target = tmp_path / "out.yaml"
    source = tmp_path / "in.yaml"
    source.write_text(pod)
    assert cli.main(["kube-inject", "-f", str(source), "-o", str(target)]) == 0
    assert "note: document 1 (Pod/p): the audit trail" in capsys.readouterr().err
    assert sidecar_of(next(yaml.safe_load_all(target.read_text())))

    source.write_bytes(b"kind: Pod\nname: \xff\xfe\n")
    assert cli.main(["kube-inject", "-f", str(source)]) == 2
    assert capsys.readouterr().err == f"error: {source}: not UTF-8 text (byte 16)\n"
    assert cli.main(["kube-inject", "-f", str(tmp_path / "missing.yaml")]) == 2


def test_a_real_process_refuses_without_a_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "sidecar", "kube-inject"],
                          input="apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: [",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: not valid YAML at line 4")
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


# Anything a hostile or broken manifest may hold at any place.
garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mode=st.sampled_from(["single", "fleet"]))
def test_garbage_anywhere_is_injected_validly_or_refused_never_a_crash(
        data: st.DataObject, mode: str) -> None:
    doc = data.draw(workloads(mode))
    where = data.draw(st.sampled_from(paths(doc)[1:]))
    broken = copy.deepcopy(doc)
    parent = broken
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = data.draw(garbage)
    options = Options(mode=mode)  # type: ignore[arg-type]
    try:
        text, _ = inject_text(yaml.safe_dump(broken), options)
    except InjectError as err:
        refusal = str(err)
    else:
        assert inject_text(text, options)[0] == text
        return
    assert refusal and "\n" not in refusal


def test_an_earlier_fleet_injection_loses_its_key_copier_and_the_sidecar_reads_the_secret(
        tmp_path: Path) -> None:
    """Earlier versions put `guardrail-keys` (a signing-key copier) before the sidecar:
    re-injecting their output takes it out, and the sidecar reads the signing key from
    a file the way the kubelet mounts a Secret with defaultMode 0440 (root-owned, group
    fsGroup), which the key reader accepts."""
    from sidecar.auditing import _signer
    from sidecar.config import Settings

    plain = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
             "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                      "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                          "containers": [{"name": "web", "image": "w:1"}]}}}}
    first = one(copy.deepcopy(plain), Options(mode="fleet"))
    spec = pod_spec(first)
    spec["initContainers"].insert(0, {
        "name": "guardrail-keys", "image": "guardrail-sidecar:old",
        "command": ["/bin/sh", "-c", "cat /etc/guardrail/signing-key/signing-key > /tmp/k"],
        "volumeMounts": [{"name": "guardrail-signing-key",
                          "mountPath": "/etc/guardrail/signing-key", "readOnly": True},
                         {"name": "guardrail-tmp", "mountPath": "/tmp"}]})
    again = one(first, Options(mode="fleet"))
    assert [c["name"] for c in pod_spec(again)["initContainers"]] == ["guardrail"]
    assert again == one(copy.deepcopy(plain), Options(mode="fleet"))
    env = {e["name"]: e.get("value") for e in sidecar_of(again)["env"]}
    path = str(env["GUARDRAIL_AUDIT_SIGNING_KEY_FILE"])
    mounted = tmp_path / path.lstrip("/")
    mounted.parent.mkdir(parents=True)
    mounted.write_bytes(bytes(range(32)))
    if os.geteuid() == 0:  # as the kubelet writes it: root-owned, the pod's fsGroup
        os.chown(mounted, 0, kubeinject.UID)
        mounted.chmod(0o440)
    else:
        mounted.chmod(0o600)
    signer = _signer(Settings(audit_signing_key_file=mounted), tmp_path / "keys")
    assert signer.public_hex()
