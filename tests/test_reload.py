"""Live policy reload in a real `guardrail serve` process with a worker, under traffic."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import open_store
from tests.conftest import REPO, SERVE, make_settings
from tests.test_shutdown import wait_for_log

DEFAULT = """name: default
pii:
  entities:
    EMAIL_ADDRESS: {action: replace, replacement: "[v1]"}
"""
TEAM = """name: team
match: {tenants: [team]}
pii:
  entities:
    EMAIL_ADDRESS: {action: replace, replacement: "[team]"}
"""


@dataclass
class Traffic:
    """A client thread that keeps calling and records every answer and failure."""

    stub: pb_grpc.GuardrailStub
    tenant: str = ""
    replies: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                reply = self.stub.InspectPrompt(pb.InspectRequest(
                    text="write to jane@example.com", tenant=self.tenant), timeout=10)
                self.replies.append((time.monotonic(), reply.text))
            except grpc.RpcError as err:
                self.failures.append(err.code().name)

    def wait_for(self, text: str, since: float, timeout: float = 10) -> float:
        """Seconds from `since` until replies show `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, seen in list(self.replies):
                if at >= since and seen == text:
                    return at - since
            time.sleep(0.05)
        raise AssertionError(f"never saw {text!r}; last: {self.replies[-1:]}")


@dataclass
class Server:
    process: subprocess.Popen[str]
    stub: pb_grpc.GuardrailStub
    policies: Path
    data: Path
    initial: dict[str, str] = field(default_factory=dict)  # the revisions it started with

    def status(self) -> pb.PolicyStatusResponse:
        return self.stub.PolicyStatus(pb.PolicyStatusRequest(), timeout=5)

    def write(self, name: str, text: str) -> float:
        path = self.policies / name
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, path)  # as editors and ConfigMap updates do: atomically
        return time.monotonic()


def _start(work: Path, workers: str) -> Iterator[Server]:
    policies = work / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(DEFAULT)
    (policies / "team.yaml").write_text(TEAM)
    process = subprocess.Popen(
        [*SERVE, "--workers", workers,
         "--policies", str(policies), "--data-dir", str(work / "data")],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    serving = wait_for_log(process.stderr, "serving")
    drain = threading.Thread(target=process.stderr.read, daemon=True)  # keep the pipe open
    drain.start()
    channel = grpc.insecure_channel(str(serving["address"]))
    try:
        yield Server(process, pb_grpc.GuardrailStub(channel), policies, work / "data")
    finally:
        channel.close()
        process.terminate()
        process.wait(timeout=30)


class Servers:
    """One `guardrail serve` per worker count, started on first use and kept for the
    module (a start loads spaCy in a worker: seconds each)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.stack = contextlib.ExitStack()
        self.running: dict[str, Server] = {}

    def get(self, workers: str) -> Server:
        if workers not in self.running:
            work = self.factory.mktemp(f"reload-{workers}")
            self.running[workers] = self.stack.enter_context(
                contextlib.contextmanager(_start)(work, workers))
        return self.running[workers]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started = Servers(tmp_path_factory)
    with started.stack:
        yield started


@pytest.fixture
def server(servers: Servers, request: pytest.FixtureRequest) -> Server:
    """The module's server with `default.yaml` and `team.yaml` as they started (the
    revisions it first served), no errors, answering with them: a test starts from the
    same state as on a fresh server."""
    running = servers.get(getattr(request, "param", "1"))
    assert running.process.poll() is None, "the module's sidecar exited"
    if not running.initial:
        running.initial = {p.name: p.revision for p in running.status().policies}
    for name, text in (("default.yaml", DEFAULT), ("team.yaml", TEAM)):
        path = running.policies / name
        if not path.exists() or path.read_text() != text:
            running.write(name, text)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = running.status()
        if not status.errors and {p.name: p.revision for p in status.policies} == \
                running.initial and _replies(running) == ("write to [v1]", "write to [team]"):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the starting policies never served again: {running.status()}")
    return running


def _replies(server: Server) -> tuple[str, str]:
    """What the default policy and the team's answer now (a worker may swap snapshots a
    moment after the status shows the new revision)."""
    return tuple(str(server.stub.InspectPrompt(pb.InspectRequest(  # type: ignore[return-value]
        text="write to jane@example.com", tenant=tenant), timeout=10).text)
        for tenant in ("", "team"))


def with_traffic(server: Server, tenant: str = "") -> tuple[Traffic, Callable[[], Traffic]]:
    traffic = Traffic(server.stub, tenant)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()

    def stop() -> Traffic:
        traffic.stop.set()
        thread.join(timeout=20)
        return traffic

    traffic.wait_for("write to [v1]" if not tenant else "write to [team]", 0)
    return traffic, stop


@pytest.mark.slow
@pytest.mark.parametrize("server", ["0", "1"], indirect=True, ids=["inline", "one worker"])
def test_an_edit_serves_within_two_seconds_and_no_request_fails(server: Server) -> None:
    before = {p.name: p.revision for p in server.status().policies}
    traffic, stop = with_traffic(server)
    edited = server.write("default.yaml", DEFAULT.replace("[v1]", "[v2]"))
    took = traffic.wait_for("write to [v2]", edited)
    stopped = stop()
    assert took < 2.0, f"the edit took {took:.2f} s to serve"
    assert stopped.failures == []
    after = {p.name: p.revision for p in server.status().policies}
    assert after["default"] != before["default"]
    assert after["team"] == before["team"]
    # The change is in the audit trail: old and new revision, and the file's hash.
    store = open_store(make_settings(server.data.parent, data_dir=server.data))
    changes = [r for r in store.records("kind = 'policy'") if r["policy"] == "default"]
    assert changes and changes[-1]["revision"] == after["default"]
    tags = json.loads(str(changes[-1]["tags"]))
    assert tags["previous_revision"] == before["default"]
    assert tags["file_sha256"] == hashlib.sha256(
        (server.policies / "default.yaml").read_bytes()).hexdigest()
    store.close()


@pytest.mark.slow
def test_an_invalid_edit_keeps_the_old_revision_and_reports_the_error(server: Server) -> None:
    _, stop = with_traffic(server)
    server.write("default.yaml", DEFAULT.replace("action: replace", "acton: replace"))
    deadline = time.monotonic() + 5
    while not server.status().errors and time.monotonic() < deadline:
        time.sleep(0.1)
    status = server.status()
    traffic = stop()
    assert traffic.failures == []
    assert {text for _, text in traffic.replies} == {"write to [v1]"}
    located = {(e.file, e.line, e.path, e.reason) for e in status.errors}
    assert ("default.yaml", 4, "pii.entities.EMAIL_ADDRESS.acton", "unknown field") in located
    assert ("default.yaml", 4, "pii.entities.EMAIL_ADDRESS.action", "Field required") in located
    default = next(p for p in status.policies if p.name == "default")
    assert "acton" in default.last_error
    # Fixing the file applies it and clears the error.
    fixed = server.write("default.yaml", DEFAULT.replace("[v1]", "[v3]"))
    deadline = fixed + 5
    while server.status().errors and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(server.status().errors) == []
    reply = server.stub.InspectPrompt(pb.InspectRequest(text="write to jane@example.com"),
                                      timeout=10)
    assert reply.text == "write to [v3]"


@pytest.mark.slow
def test_deleting_a_policy_applies_only_if_the_set_stays_valid(server: Server) -> None:
    def team_reply() -> str:
        return str(server.stub.InspectPrompt(pb.InspectRequest(
            text="write to jane@example.com", tenant="team"), timeout=10).text)

    assert team_reply() == "write to [team]"
    (server.policies / "default.yaml").unlink()  # no default left: refused
    deadline = time.monotonic() + 5
    while not server.status().errors and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "exactly one default" in server.status().errors[0].reason or \
        "default" in server.status().errors[0].reason
    assert {p.name for p in server.status().policies} == {"default", "team"}
    server.write("default.yaml", DEFAULT)
    (server.policies / "team.yaml").unlink()  # a matched policy: removed
    deadline = time.monotonic() + 5
    while team_reply() != "write to [v1]" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert team_reply() == "write to [v1]"
    assert {p.name for p in server.status().policies} == {"default"}


@pytest.mark.slow
def test_a_file_still_open_for_writing_is_not_applied_half_written(server: Server) -> None:
    """A writer that pauses longer than the debounce with the file still open (a slow
    `kubectl cp`, a script writing line by line): what is on disk so far is valid YAML
    and a looser policy (no `pii:` yet), and must never serve."""
    traffic, stop = with_traffic(server, tenant="team")
    head, rest = TEAM.split("pii:")
    with open(server.policies / "team.yaml", "w") as writer:  # in place, same inode
        writer.write(head)
        writer.flush()
        os.fsync(writer.fileno())
        time.sleep(1.5)  # debounce is 200 ms: the watcher looks meanwhile
        writer.write("pii:" + rest.replace("[team]", "[team2]"))
    closed = time.monotonic()
    took = traffic.wait_for("write to [team2]", closed)
    stopped = stop()
    assert stopped.failures == []
    assert {text for _, text in stopped.replies} <= {"write to [team]", "write to [team2]"}
    assert took < 2.0, f"the finished file took {took:.2f} s to serve"
    assert list(server.status().errors) == []


def test_removing_a_policy_file_is_logged_as_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Renaming `team.yaml` to `.bak` sends its tenants to the default policy: an
    operator must see that in the log at WARNING, not among INFO lines."""
    from sidecar.policy.reload import PolicyManager
    from tests.conftest import DETECTION_RESOURCES

    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(DEFAULT)
    (policies / "team.yaml").write_text(TEAM)
    manager = PolicyManager(policies, tmp_path / "data", DETECTION_RESOURCES)
    (policies / "team.yaml").rename(policies / "team.yaml.bak")
    with caplog.at_level("INFO", logger="sidecar.policy.reload"):
        assert manager.reload()
    removed = [r for r in caplog.records if r.getMessage() == "policy removed"]
    assert [(r.levelname, getattr(r, "policy", "")) for r in removed] == [("WARNING", "team")]


@pytest.mark.slow
def test_policy_status_does_not_echo_a_long_key(server: Server) -> None:
    """A pasted secret as a mapping key (`sk_live_...: 1`) looks like a field name; the
    rejected edit's PolicyStatus shortens it instead of showing it whole."""
    secret = "sk_live_51h8xyzabcdefgh1234567890qwertyuiop"
    server.write("default.yaml", DEFAULT + f"{secret}: 1\n")
    deadline = time.monotonic() + 5
    while not server.status().errors and time.monotonic() < deadline:
        time.sleep(0.1)
    status = server.status()
    assert status.errors, "the edit was not rejected"
    shown = str(status)
    assert secret not in shown and secret[6:] not in shown
    assert any(e.reason == "unknown field" and e.line == 5 for e in status.errors)


@pytest.mark.slow
def test_sighup_forces_a_reload_attempt(server: Server) -> None:
    first = server.status().last_attempt_unix_ms
    time.sleep(0.05)
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while server.status().last_attempt_unix_ms == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.status().last_attempt_unix_ms > first
    assert server.process.poll() is None  # SIGHUP did not kill it


@pytest.mark.slow
def test_a_worker_started_after_a_reload_serves_the_new_policies(server: Server) -> None:
    edited = server.write("default.yaml", DEFAULT.replace("[v1]", "[v9]"))
    deadline = edited + 5
    while time.monotonic() < deadline:
        reply = server.stub.InspectPrompt(pb.InspectRequest(text="write to jane@example.com"),
                                          timeout=10)
        if reply.text == "write to [v9]":
            break
        time.sleep(0.05)
    workers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/status")
               if f"PPid:\t{server.process.pid}\n" in _read(p)
               and b"resource_tracker" not in _read_bytes(p.parent / "cmdline")]
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 90
    while True:  # the replacement loads its model; calls meanwhile are UNAVAILABLE
        call = server.stub.InspectPrompt.future(pb.InspectRequest(
            text="write to jane@example.com"), timeout=30)
        if call.code() == grpc.StatusCode.OK:
            break
        assert call.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert call.result().text == "write to [v9]"  # it loaded the current snapshot


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("refusal", [errno.EACCES, errno.EPERM, errno.EINVAL])
def test_where_a_lease_cannot_tell_a_file_being_written_it_is_read_as_before(
        refusal: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the file's owner, no CAP_LEASE, a filesystem without leases: the probe cannot
    tell, and reload behaves as it did before (reads the file); EAGAIN (a writer has
    it open) holds the read back."""
    from sidecar.policy import files

    (tmp_path / "default.yaml").write_text(DEFAULT)
    real = fcntl.fcntl

    def refusing(fd: int, command: int, arg: int = 0) -> object:
        if command == fcntl.F_SETLEASE and arg == fcntl.F_RDLCK:
            raise OSError(refusal, os.strerror(refusal))
        return real(fd, command, arg)

    with open(tmp_path / "default.yaml", "a"):  # a writer holds it open throughout
        with pytest.raises(files.StillWriting) as busy:
            files.read_tree(tmp_path, settled=True)
        assert busy.value.names == ["default.yaml"]
        monkeypatch.setattr(fcntl, "fcntl", refusing)
        tree = files.read_tree(tmp_path, settled=True)
    assert [item.name for item in tree.files] == ["default.yaml"]
