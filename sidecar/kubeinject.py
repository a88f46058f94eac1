"""`guardrail kube-inject`: add the sidecar to Kubernetes workload manifests.

Like `istioctl kube-inject`: YAML in, YAML out, nothing else (no cluster, no grpc). Every
Deployment, StatefulSet and Pod in the input gets the guardrail as a *native sidecar*
(Kubernetes 1.29+: an init container with `restartPolicy: Always`, started before the app
and stopped after it), with its probes, volumes, the KEK Secret (and, in fleet mode, the
store Secret), resources, a locked-down security context, and a termination grace period
that covers the app's own shutdown plus the sidecar's drain. Every other document passes
through unchanged.

Two modes (issue 19 describes the fleet):

- `single` (default): the audit trail, keys and pseudonym vault live in SQLite on a
  PersistentVolumeClaim: `volumeClaimTemplates` for a StatefulSet, one named claim for a
  Pod or a one-replica Deployment (rolled out with `Recreate`: two pods must never write
  one trail). More replicas need a StatefulSet or the fleet mode; they are refused.
- `fleet`: `GUARDRAIL_STORE` (a `postgresql://` URL) comes from a Secret, the data
  directory is an `emptyDir` outbox the shipper drains into PostgreSQL; any replica count.
  The fleet's checkpoint signing key, and the keys every replica must share for the
  `hash` action and routing-tag signatures, come from Secrets, read where the kubelet
  mounts them (root-owned, 0440 with fsGroup, which sidecar.keys accepts). Earlier
  versions copied the signing key to a 0600 file with a first init container,
  `guardrail-keys`, from when the sidecar refused every group-readable key file; a
  re-injection removes it.

Injection converges: the init container named `guardrail` and the volumes only it mounts
belong to kube-inject, and a second run replaces them with the same rendering, so injecting
twice is byte-identical to injecting once, and re-running with a new `--image` upgrades.
What kube-inject does not understand it refuses, with one line naming the document and
the field, rather than guessing: kinds with pod templates it does not handle, host
networking (the sidecar's loopback port would be the node's), a regular container or a
volume already using the sidecar's names, ports the sidecar listens on, malformed YAML.
Comments in the input are not kept (the output is re-serialised YAML).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from sidecar import __version__
from sidecar.errors import ConfigError

CONTAINER = "guardrail"
# What earlier versions added before the sidecar in a fleet (a signing-key copier): still
# ours, so that re-injecting their output takes it out.
KEYS_CONTAINER = "guardrail-keys"
OWN_CONTAINERS = (CONTAINER, KEYS_CONTAINER)
DATA_VOLUME = "guardrail-data"
POLICIES_VOLUME = "guardrail-policies"
TMP_VOLUME = "guardrail-tmp"
SIGNING_VOLUME = "guardrail-signing-key"
SHARED_KEYS_VOLUME = "guardrail-shared-keys"  # fleet: the hash and routing-tag keys
OWN_VOLUMES = (DATA_VOLUME, POLICIES_VOLUME, TMP_VOLUME, SIGNING_VOLUME, SHARED_KEYS_VOLUME)
MODE_ANNOTATION = "guardrail-sidecar/mode"
# The app's own grace period, before kube-inject added the drain: kept so that a second
# run adds the drain to the same figure instead of to its own earlier result.
APP_GRACE_ANNOTATION = "guardrail-sidecar/app-grace-seconds"

DATA_DIR = "/var/lib/guardrail"
POLICIES_DIR = "/etc/guardrail/policies"
SIGNING_DIR = "/etc/guardrail/signing-key"
SHARED_KEYS_DIR = "/etc/guardrail/shared-keys"
LISTEN = "127.0.0.1:50051"
METRICS_LISTEN = "127.0.0.1:9464"
PORTS = (50051, 9464)
UID = 10001
# After SIGTERM: GUARDRAIL_SHUTDOWN_GRACE for in-flight calls, then flushing the audit
# queue and signing the final checkpoint (FLUSH_SECONDS, generous). Kubernetes stops a
# native sidecar only after the app containers have exited, within one grace period, so
# the pod's grace period is the app's plus this drain.
SHUTDOWN_GRACE = 10
FLUSH_SECONDS = 5
DRAIN_SECONDS = SHUTDOWN_GRACE + FLUSH_SECONDS
DEFAULT_GRACE = 30  # Kubernetes' default terminationGracePeriodSeconds

KEK_KEY = "kek"  # the key inside the KEK Secret (32 random bytes, base64)
STORE_KEY = "url"  # the key inside the store Secret (postgresql://...)
SIGNING_KEY = "signing-key"  # the key inside the signing-key Secret (32 raw bytes)
# The keys inside the shared-keys Secret (32+ raw bytes each): the `hash` action's and the
# routing tags' signature key, which every replica must share.
HASH_KEY = "hash-key"
TAGS_KEY = "tags-key"

TEMPLATED = ("Deployment", "StatefulSet")
# Workload kinds with a pod template that kube-inject does not handle: refused by name,
# never passed through silently (the operator would believe they were protected).
REFUSED = ("DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob")

# Hostile input is bounded before anything walks it: an alias bomb (`&a [*a, *a]` ten
# levels deep) loads as a small graph but would serialise to billions of nodes.
MAX_INPUT_BYTES = 8 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # DNS-1123 subdomain
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


class InjectError(ConfigError):
    """The manifest (or an option) is not something kube-inject can safely change."""


@dataclass(frozen=True)
class Options:
    """What to inject; each field is a `guardrail kube-inject` flag of the same name."""

    mode: Literal["single", "fleet"] = "single"
    image: str = f"guardrail-sidecar:{__version__}"
    kek_secret: str = "guardrail-audit-kek"  # noqa: S105 (a Secret's name, not a secret)
    store_secret: str = "guardrail-store"  # noqa: S105
    signing_key_secret: str = "guardrail-audit-signing-key"  # noqa: S105
    shared_keys_secret: str = "guardrail-shared-keys"  # noqa: S105
    policies_configmap: str = "guardrail-policies"
    # single mode, Pod or Deployment: the claim holding the trail (default <name>-guardrail,
    # or the claim an earlier injection used).
    data_claim: str | None = None
    data_size: str = "5Gi"  # single mode, StatefulSet: each replica's claim
    outbox_size: str = "1Gi"  # fleet mode: the emptyDir outbox's sizeLimit
    # Two workers (one per CPU of the limit), each with its own spaCy model; the figures
    # of deploy/kubernetes/pod.yaml (tests/test_deploy.py keeps the two in step).
    cpu_request: str = "1"
    memory_request: str = "768Mi"
    cpu_limit: str = "2"
    memory_limit: str = "1536Mi"

    def __post_init__(self) -> None:
        if self.mode not in ("single", "fleet"):
            raise InjectError(f"--mode: expected single or fleet, got {self.mode!r}")
        if not self.image or any(c.isspace() for c in self.image) or len(self.image) > 512:
            raise InjectError("--image: expected an image reference without spaces")
        for flag, value in (("--kek-secret", self.kek_secret),
                            ("--store-secret", self.store_secret),
                            ("--signing-key-secret", self.signing_key_secret),
                            ("--shared-keys-secret", self.shared_keys_secret),
                            ("--policies-configmap", self.policies_configmap),
                            ("--data-claim", self.data_claim)):
            if value is not None and not _NAME.match(value):
                raise InjectError(f"{flag}: {value!r} is not a Kubernetes object name "
                                  "(lowercase letters, digits, '-' and '.')")
        for flag, value in (("--data-size", self.data_size),
                            ("--outbox-size", self.outbox_size),
                            ("--cpu-request", self.cpu_request),
                            ("--memory-request", self.memory_request),
                            ("--cpu-limit", self.cpu_limit),
                            ("--memory-limit", self.memory_limit)):
            if not _QUANTITY.match(value):
                raise InjectError(f"{flag}: {value!r} is not a Kubernetes quantity "
                                  "(e.g. 500m, 2, 768Mi, 5Gi)")


def inject_text(text: str, options: Options) -> tuple[str, list[str]]:
    """Inject into every workload of a (multi-document) YAML text.

    Returns the new text and notes for the operator (claims to create, documents left
    alone). Raises InjectError, naming the document and field, for anything it refuses.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        raise InjectError(f"input larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    documents = _load(text)
    if not any(doc is not None for doc in documents):
        raise InjectError("no Kubernetes object in the input")
    notes: list[str] = []
    out = [inject_object(doc, options, notes, f"document {number}")
           for number, doc in enumerate(documents, 1) if doc is not None]
    return dump(out), notes


def inject_object(doc: Any, options: Options, notes: list[str],
                  where: str = "document 1") -> dict[str, Any]:
    """One Kubernetes object, injected (a copy; `doc` is not changed)."""
    if not isinstance(doc, dict):
        raise InjectError(f"{where}: expected a Kubernetes object (a mapping), "
                          f"got {_kind_of(doc)}")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str):
        raise InjectError(f"{where}: no kind and apiVersion: not a Kubernetes object")
    if kind == "List":
        items = doc.get("items")
        if not isinstance(items, list):
            raise InjectError(f"{where} (List): items: expected a list")
        result = dict(doc)
        result["items"] = [inject_object(item, options, notes, f"{where}, item {number}")
                           for number, item in enumerate(items, 1)]
        return result
    meta = _mapping(doc, "metadata", f"{where} ({kind})", create=False)
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InjectError(f"{where} ({kind}): metadata.name: expected a name")
    label = f"{where} ({kind}/{name})"
    if kind in REFUSED:
        raise InjectError(f"{label}: kube-inject handles Deployment, StatefulSet and Pod, "
                          f"not {kind}")
    if kind == "Pod":
        if api != "v1":
            raise InjectError(f"{label}: apiVersion {api!r}: expected v1")
    elif kind in TEMPLATED:
        if api != "apps/v1":
            raise InjectError(f"{label}: apiVersion {api!r}: expected apps/v1")
    else:
        notes.append(f"{label}: left unchanged (not a workload)")
        return doc
    result = copy.deepcopy(doc)
    if kind == "Pod":
        pod_meta = _mapping(result, "metadata", label)
        spec = _mapping(result, "spec", label, create=False)
    else:
        workload = _mapping(result, "spec", label, create=False)
        template = _mapping(workload, "template", f"{label}: spec", create=False)
        pod_meta = _mapping(template, "metadata", f"{label}: spec.template")
        spec = _mapping(template, "spec", f"{label}: spec.template", create=False)
        _workload(kind, workload, options, label)
    _pod(_Pod(kind, name, label, spec, pod_meta, result, notes), options)
    return result


def _workload(kind: str, workload: dict[str, Any], options: Options, label: str) -> None:
    """What a mode needs of the Deployment or StatefulSet around the pod."""
    replicas = workload.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise InjectError(f"{label}: spec.replicas: expected a whole number")
    if kind != "Deployment" or options.mode != "single":
        return
    if replicas > 1:
        raise InjectError(f"{label}: {replicas} replicas cannot share one ReadWriteOnce "
                          "claim for the audit trail: use a StatefulSet (a claim per "
                          "replica) or --mode fleet")
    # A rolling update would start the new pod while the old one still writes the trail.
    workload["strategy"] = {"type": "Recreate"}


@dataclass
class _Pod:
    """One pod spec being injected, with where it sits (for messages) and what holds it."""

    kind: str
    name: str
    label: str
    spec: dict[str, Any]
    meta: dict[str, Any]
    workload: dict[str, Any]
    notes: list[str]

    @property
    def where(self) -> str:
        return f"{self.label}: {'spec' if self.kind == 'Pod' else 'spec.template.spec'}"


def _pod(pod: _Pod, options: Options) -> None:
    spec, where = pod.spec, pod.where
    if spec.get("hostNetwork") is True:
        raise InjectError(f"{where}.hostNetwork: the sidecar listens on loopback, which "
                          "with host networking is the node's: not injected")
    containers = _containers(spec, "containers", where, required=True)
    inits = _containers(spec, "initContainers", where, required=False)
    volumes = _named_list(spec, "volumes", where)
    for container in containers:
        if container["name"] in OWN_CONTAINERS:
            raise InjectError(f"{where}.containers: a container named {container['name']!r} "
                              "is not one kube-inject adds (an init container): rename it")
    had_sidecar, claim = _remove_previous(inits, containers, volumes)
    claim = options.data_claim or claim
    for volume in volumes:
        if volume["name"] in OWN_VOLUMES:
            raise InjectError(f"{where}.volumes: {volume['name']!r} is the sidecar's "
                              "volume name but another container uses it: rename it")
    for container in [*containers, *inits]:
        for port in container.get("ports") or []:
            if isinstance(port, dict) and port.get("containerPort") in PORTS:
                raise InjectError(f"{where}: container {container['name']!r} uses port "
                                  f"{port['containerPort']}, which the sidecar listens on "
                                  "in the pod's shared network namespace")
    spec["volumes"] = [*volumes, *_volumes(pod, options, claim)]
    spec["initContainers"] = [_sidecar(options), *inits]
    for container in containers:
        env = container.get("env")
        if env is None:
            env = container["env"] = []
        if not isinstance(env, list) or not all(isinstance(e, dict) for e in env):
            raise InjectError(f"{where}: container {container['name']!r}: env: expected "
                              "a list of mappings")
        if not any(e.get("name") == "GUARDRAIL_TARGET" for e in env):
            env.append({"name": "GUARDRAIL_TARGET", "value": LISTEN})
    security = _mapping(spec, "securityContext", where)
    if "fsGroup" not in security:
        # The claim's files become writable by the sidecar, a Secret's readable by it.
        security["fsGroup"] = UID
    if not security:
        del spec["securityContext"]
    _grace(pod, had_sidecar)
    annotations = _mapping(pod.meta, "annotations", f"{pod.label}: pod metadata")
    annotations[MODE_ANNOTATION] = options.mode


def _remove_previous(inits: list[dict[str, Any]], containers: list[dict[str, Any]],
                     volumes: list[dict[str, Any]]) -> tuple[bool, str | None]:
    """Take out an earlier sidecar (and key copier) and the volumes only they mounted.
    Return whether there was a sidecar, and the claim its data directory was on (a
    re-injection keeps the trail where it was)."""
    ours = [c for c in inits if c["name"] in OWN_CONTAINERS]
    for container in ours:
        inits.remove(container)
    mounted = {name for c in [*containers, *inits] for name, _ in _mounts(c)}
    own = {name for c in ours for name, _ in _mounts(c)}
    data = {name for c in ours if c["name"] == CONTAINER
            for name, path in _mounts(c) if path == DATA_DIR}
    claim = None
    for volume in [v for v in volumes if v["name"] in own - mounted]:
        source = volume.get("persistentVolumeClaim")
        if volume["name"] in data and isinstance(source, dict) and \
                isinstance(source.get("claimName"), str):
            claim = source["claimName"]
        volumes.remove(volume)
    return any(c["name"] == CONTAINER for c in ours), claim


def _volumes(pod: _Pod, options: Options, claim: str | None) -> list[dict[str, Any]]:
    """The sidecar's volumes; for a StatefulSet in single mode, a claim template."""
    workload_spec = pod.workload.get("spec") if pod.kind == "StatefulSet" else None
    templates = workload_spec.get("volumeClaimTemplates") if workload_spec else None
    if templates is not None and not isinstance(templates, list):
        raise InjectError(f"{pod.label}: spec.volumeClaimTemplates: expected a list")
    has_template = any(isinstance(t, dict) and isinstance(t.get("metadata"), dict)
                       and t["metadata"].get("name") == DATA_VOLUME for t in templates or [])
    own: list[dict[str, Any]] = []
    if workload_spec is not None and options.mode == "single" and not has_template:
        workload_spec["volumeClaimTemplates"] = [*(templates or []), {
            "metadata": {"name": DATA_VOLUME},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": options.data_size}}}}]
        has_template = True
    if has_template:
        pod.notes.append(f"{pod.label}: the sidecar's data is on the volumeClaimTemplate "
                         f"{DATA_VOLUME!r} (one claim per replica; kept as it was if it "
                         "existed: a StatefulSet's claim templates cannot change)")
    elif options.mode == "single":
        claim = claim or f"{pod.name}-guardrail"
        own.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
        pod.notes.append(f"{pod.label}: the audit trail lives on PersistentVolumeClaim "
                         f"{claim!r}, which must exist (ReadWriteOnce)")
    else:
        own.append({"name": DATA_VOLUME, "emptyDir": {"sizeLimit": options.outbox_size}})
    own.append({"name": POLICIES_VOLUME, "configMap": {"name": options.policies_configmap}})
    own.append({"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}})
    if options.mode == "fleet":
        # Read where the kubelet mounts them: root-owned 0440 is what sidecar.keys accepts.
        own.append({"name": SIGNING_VOLUME, "secret": {
            "secretName": options.signing_key_secret, "defaultMode": 0o440,
            "items": [{"key": SIGNING_KEY, "path": SIGNING_KEY}]}})
        own.append({"name": SHARED_KEYS_VOLUME, "secret": {
            "secretName": options.shared_keys_secret, "defaultMode": 0o440,
            "items": [{"key": HASH_KEY, "path": HASH_KEY}, {"key": TAGS_KEY, "path": TAGS_KEY}]}})
    return own


def _grace(pod: _Pod, had_sidecar: bool) -> None:
    """terminationGracePeriodSeconds = the app's own + the sidecar's drain (idempotent).

    The app's own figure is the one recorded by an earlier injection; else, for a pod
    that already had a sidecar (written by hand), its grace period less the drain it
    must have budgeted; else the grace period as found (Kubernetes' 30 s if unset).
    """
    spec = pod.spec
    current = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
    if not isinstance(current, int) or isinstance(current, bool) or current < 0:
        raise InjectError(f"{pod.where}.terminationGracePeriodSeconds: expected a whole "
                          "number of seconds")
    annotations = _mapping(pod.meta, "annotations", f"{pod.label}: pod metadata")
    recorded = annotations.get(APP_GRACE_ANNOTATION)
    app = current
    if isinstance(recorded, str) and recorded.isdigit() and \
            int(recorded) + DRAIN_SECONDS == current:
        app = int(recorded)  # injected before: the app's figure, not ours
    elif had_sidecar:
        app = max(current - DRAIN_SECONDS, 0)
    spec["terminationGracePeriodSeconds"] = app + DRAIN_SECONDS
    annotations[APP_GRACE_ANNOTATION] = str(app)


def _sidecar(options: Options) -> dict[str, Any]:
    """The guardrail container, rendered afresh each time (a new dict per call)."""
    env: list[dict[str, Any]] = [
        {"name": "GUARDRAIL_LISTEN", "value": LISTEN},
        {"name": "GUARDRAIL_METRICS_LISTEN", "value": METRICS_LISTEN},
        {"name": "GUARDRAIL_DATA_DIR", "value": DATA_DIR},
        {"name": "GUARDRAIL_POLICIES", "value": POLICIES_DIR},
        {"name": "GUARDRAIL_SHUTDOWN_GRACE", "value": str(SHUTDOWN_GRACE)},
        {"name": "GUARDRAIL_AUDIT_KEK", "valueFrom": {"secretKeyRef": {
            "name": options.kek_secret, "key": KEK_KEY}}},
    ]
    if options.mode == "fleet":
        env.append({"name": "GUARDRAIL_STORE", "valueFrom": {"secretKeyRef": {
            "name": options.store_secret, "key": STORE_KEY}}})
        env.append({"name": "GUARDRAIL_AUDIT_SIGNING_KEY_FILE",
                    "value": f"{SIGNING_DIR}/{SIGNING_KEY}"})
        env.append({"name": "GUARDRAIL_HASH_KEY_FILE", "value": f"{SHARED_KEYS_DIR}/{HASH_KEY}"})
        env.append({"name": "GUARDRAIL_TAGS_KEY_FILE", "value": f"{SHARED_KEYS_DIR}/{TAGS_KEY}"})
    mounts: list[dict[str, Any]] = [
        {"name": DATA_VOLUME, "mountPath": DATA_DIR},
        {"name": POLICIES_VOLUME, "mountPath": POLICIES_DIR, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 (a private emptyDir)
    ]
    if options.mode == "fleet":
        mounts.append({"name": SIGNING_VOLUME, "mountPath": SIGNING_DIR, "readOnly": True})
        mounts.append({"name": SHARED_KEYS_VOLUME, "mountPath": SHARED_KEYS_DIR,
                       "readOnly": True})

    def probe(timeout: str, **timing: int) -> dict[str, Any]:
        # Loopback only, so the kubelet's own gRPC probe cannot reach it: exec instead.
        return {"exec": {"command": ["guardrail", "health", "--timeout", timeout]},
                **timing}

    return {
        "name": CONTAINER,
        "image": options.image,
        "restartPolicy": "Always",  # what makes an init container a native sidecar
        "env": env,
        "ports": [{"name": "guardrail-grpc", "containerPort": PORTS[0]}],
        "startupProbe": probe("2", periodSeconds=2, failureThreshold=60),
        "readinessProbe": probe("2", periodSeconds=5),
        "livenessProbe": probe("5", periodSeconds=20, failureThreshold=3),
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
        },
        "securityContext": _security(),
        "volumeMounts": mounts,
    }


def _security() -> dict[str, Any]:
    """The image's user, nothing writable but the volumes, no privileges."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _mounts(container: dict[str, Any]) -> list[tuple[str, Any]]:
    """(volume name, mount path) of each well-formed mount; malformed ones are for the
    API server to reject, not for kube-inject to trip over."""
    mounts = container.get("volumeMounts") or []
    return [(m["name"], m.get("mountPath")) for m in mounts
            if isinstance(m, dict) and isinstance(m.get("name"), str)]


def _mapping(parent: dict[str, Any], key: str, where: str,
             create: bool = True) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        if not create:
            raise InjectError(f"{where}: {key}: missing")
        value = parent[key] = {}
    if not isinstance(value, dict):
        raise InjectError(f"{where}: {key}: expected a mapping, got {_kind_of(value)}")
    return value


def _named_list(parent: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InjectError(f"{where}.{key}: expected a list, got {_kind_of(value)}")
    for number, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InjectError(f"{where}.{key}[{number}]: expected a mapping with a name")
    return list(value)


def _containers(spec: dict[str, Any], key: str, where: str,
                required: bool) -> list[dict[str, Any]]:
    found = _named_list(spec, key, where)
    if required and not found:
        raise InjectError(f"{where}.{key}: no container to protect")
    for container in found:
        for list_key in ("ports", "volumeMounts"):
            if not isinstance(container.get(list_key) or [], list):
                raise InjectError(f"{where}: container {container['name']!r}: {list_key}: "
                                  "expected a list")
    return found


def _kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing",
            bool: "a boolean", int: "a number", float: "a number"}.get(type(value),
                                                                       type(value).__name__)


def _load(text: str) -> list[Any]:
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InjectError(f"not valid YAML{at}: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise InjectError(f"not valid YAML: {type(err).__name__}") from None
    except RecursionError:
        raise InjectError("YAML nested too deeply") from None
    _bounded(documents)
    return documents


def _bounded(documents: list[Any]) -> None:
    """Refuse more than MAX_NODES values (aliases counted as often as they are used) or
    more than MAX_DEPTH levels: the walk stops at the limit, so a bomb costs little."""
    count = 0
    stack: list[tuple[Any, int]] = [(doc, 1) for doc in documents]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise InjectError(f"more than {MAX_NODES} values (after expanding aliases)")
        if depth > MAX_DEPTH:
            raise InjectError(f"nested deeper than {MAX_DEPTH} levels")
        children: Iterator[Any] = iter(())
        if isinstance(value, dict):
            children = (item for pair in value.items() for item in pair)
        elif isinstance(value, list):
            children = iter(value)
        stack.extend((child, depth + 1) for child in children)


_PLAIN_TEXT = re.compile(r"[!-~]+( [!-~]+)*")  # printable ASCII, single inner spaces


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors even where the input shared a value, block style, and
    strings exact: any string with other characters (line or paragraph separators,
    control characters, runs or edges of spaces) is written double-quoted with escapes,
    the one YAML style that neither folds nor trims, so load(dump(x)) == x."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None if _PLAIN_TEXT.fullmatch(value) else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(documents: list[Any]) -> str:
    """Serialise documents in a stable form: dump(load(dump(x))) == dump(x)."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False,
                         default_flow_style=False, allow_unicode=False, width=2**30)
