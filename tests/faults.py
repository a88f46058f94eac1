"""Fault scenarios against a real `guardrail serve` process, shared by tests/test_faults.py
and scripts/faults.py (which runs them all and prints a table).

Each scenario breaks one thing an operator can break (a key, the model, the policy
directory, the audit database, the disk) and checks what the sidecar promises: a clear
message or status, no traceback, no acknowledged record lost, and a way back.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from tests import conftest
from tests.conftest import REPO, TEST_POLICIES

SERVE = [*conftest.SERVE, "--workers", "1", "--policies", str(TEST_POLICIES)]
# Without the capabilities that let root read anything, as a sidecar's own user would run.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


STARTED: list[subprocess.Popen[str]] = []


def kill_leftovers() -> None:
    """Kill every sidecar a scenario started and did not stop (it failed midway)."""
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


class Sidecar:
    """`guardrail serve` in a child process; its JSON log lines are collected."""

    def __init__(self, data: Path, *extra: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(prefix or []), *SERVE, "--data-dir", str(data), *extra], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        STARTED.append(self.process)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stub: pb_grpc.GuardrailStub | None = None
        self.address = ""

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def logged(self, message: str) -> list[dict[str, object]]:
        found = []
        for line in list(self.lines):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("msg") == message:
                found.append(entry)
        return found

    def serving(self, timeout: float = 120) -> Sidecar:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if entries := self.logged("serving"):
                self.address = str(entries[0]["address"])
                self.stub = pb_grpc.GuardrailStub(grpc.insecure_channel(self.address))
                return self
            time.sleep(0.1)
        raise AssertionError("the sidecar did not serve:\n" + "".join(self.lines[-20:]))

    def exits(self, timeout: float = 120) -> tuple[int, str]:
        """(exit code, all it wrote) of a sidecar that is expected to refuse to start."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, "".join(self.lines)

    def prompt(self, text: str, **fields: object) -> pb.InspectResponse:
        assert self.stub is not None
        return self.stub.InspectPrompt(pb.InspectRequest(text=text, **fields), timeout=30)

    def refusal(self, text: str, **fields: object) -> grpc.RpcError:
        try:
            self.prompt(text, **fields)
        except grpc.RpcError as err:
            return err
        raise AssertionError("the call was answered; a refusal was expected")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


def guardrail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, **(env or {})},
                          timeout=120, check=False)


def no_traceback(output: str) -> None:
    assert "Traceback" not in output, output[-2000:]


def verify(data: Path) -> subprocess.CompletedProcess[str]:
    """`guardrail audit verify` with the trail's own public key pinned."""
    key = guardrail("audit", "public-key", "--data-dir", str(data)).stdout.strip()
    return guardrail("audit", "verify", "--data-dir", str(data), "--public-key", key)


# -- the scenarios -----------------------------------------------------------------------

def kek_missing(work: Path) -> str:
    code, output = Sidecar(work / "data", env={
        "GUARDRAIL_AUDIT_KEK_FILE": str(work / "no-such.kek")}).exits()
    assert code == 2, output
    assert "audit KEK file" in output and "does not exist" in output
    no_traceback(output)
    return "exit 2: " + output.strip().splitlines()[-1][:90]


def kek_wrong(work: Path) -> str:
    kek = work / "audit.kek"
    kek.write_text(base64.b64encode(os.urandom(32)).decode())
    kek.chmod(0o600)
    first = Sidecar(work / "data", env={"GUARDRAIL_AUDIT_KEK_FILE": str(kek)}).serving()
    assert first.prompt("mail a@example.com", subject_id="s1").audit_id
    assert first.stop() == 0
    other = base64.b64encode(os.urandom(32)).decode()
    code, output = Sidecar(work / "data", env={"GUARDRAIL_AUDIT_KEK": other}).exits()
    assert code == 2, output
    assert "KEK" in output and other not in output
    no_traceback(output)
    kek.chmod(0o644)  # a key others may read is refused too
    code, output = Sidecar(work / "data", env={"GUARDRAIL_AUDIT_KEK_FILE": str(kek)}).exits()
    assert code == 2 and "readable by group or others" in output, output
    return "exit 2: " + output.strip().splitlines()[-1][:90]


def model_missing(work: Path) -> str:
    code, output = Sidecar(work / "data", "--spacy-model", "xx_no_such_model").exits()
    assert code == 2, output
    assert "not installed" in output and "never downloads" in output
    no_traceback(output)
    return "exit 2 before serving: " + output.strip().splitlines()[-1][:70]


def policy_dir_unreadable(work: Path) -> str:
    policies = work / "policies"
    subprocess.run(["cp", "-r", str(TEST_POLICIES), str(policies)], check=True)
    policies.chmod(0o000)
    try:
        code, output = Sidecar(work / "data", "--policies", str(policies),
                               prefix=UNPRIVILEGED).exits()
    finally:
        policies.chmod(0o755)
    assert code == 1, output  # a policy error, as for an invalid policy
    assert f"{policies}: cannot read: Permission denied" in output, output
    no_traceback(output)
    # While running: the last good revision keeps serving, the error is reported.
    running = Sidecar(work / "data", "--policies", str(policies),
                      prefix=UNPRIVILEGED).serving()
    try:
        policies.chmod(0o000)
        running.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not running.logged("policy change rejected; the previous revision keeps "
                                 "serving") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running.logged("policy change rejected; the previous revision keeps serving")
        assert running.prompt("card 4111 1111 1111 1111").decision == pb.BLOCK
    finally:
        policies.chmod(0o755)
    assert running.stop() == 0
    return "start: exit 1, 'cannot read: Permission denied'; running: last revision serves"


def db_deleted(work: Path) -> str:
    # Signed every 0.5 s, not every 5: the scenario waits for the first record's anchor.
    every_half_second = {"GUARDRAIL_AUDIT_CHECKPOINT_INTERVAL": "0.5"}
    running = Sidecar(work / "data", env=every_half_second).serving()
    assert running.prompt("mail a@example.com").audit_id
    anchor = work / "data" / "keys" / "audit-anchor.json"
    deadline = time.monotonic() + 30
    while not anchor.exists() and time.monotonic() < deadline:  # signed within the interval
        time.sleep(0.1)
    assert anchor.exists(), "the record was never signed and anchored"
    for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
        (work / "data" / "audit" / name).unlink(missing_ok=True)
    refused = running.refusal("mail b@example.com")
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "deleted or replaced" in (refused.details() or "")
    lenient = running.prompt("mail c@example.com", tenant="lenient")  # on_error: allow
    assert lenient.decision == pb.MODIFY and lenient.audit_id == ""
    assert running.stop() == 0
    restarted = Sidecar(work / "data").serving()  # recovery: a restart opens a new file
    assert restarted.prompt("mail d@example.com").audit_id
    assert restarted.stop() == 0
    # The anchor outside audit.db still names the lost record: verify says so until
    # someone accepts the loss, on the record.
    lost = verify(work / "data")
    assert lost.returncode == 1 and "head anchor" in lost.stderr, lost.stdout + lost.stderr
    reset = guardrail("audit", "reset-anchor", "--data-dir", str(work / "data"),
                      "--actor", "faults", "--reason", "audit.db deleted (fault scenario)")
    assert reset.returncode == 0, reset.stderr
    checked = verify(work / "data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return (f"UNAVAILABLE ({refused.details()[:60]}...); restart recovers; verify names the "
            "loss until reset-anchor")


def db_corrupted(work: Path) -> str:
    running = Sidecar(work / "data").serving()
    ids = [running.prompt(f"mail user{n}@example.com").audit_id for n in range(20)]
    assert all(ids)
    database = work / "data" / "audit" / "audit.db"
    with database.open("r+b") as damaged:  # the header and the first pages
        damaged.write(os.urandom(16 * 1024))
        damaged.flush()
        os.fsync(damaged.fileno())
    # SQLite notices when it next reads a damaged page: until then records still commit
    # (to the WAL). Either way every answer is a verdict or a clean UNAVAILABLE.
    outcomes = []
    for n in range(5):
        try:
            reply: pb.InspectResponse | grpc.RpcError = running.prompt(f"mail x{n}@example.com")
        except grpc.RpcError as err:
            reply = err
        if isinstance(reply, grpc.RpcError):
            assert reply.code() == grpc.StatusCode.UNAVAILABLE, reply
            assert "could not be recorded" in (reply.details() or "")
            outcomes.append("UNAVAILABLE")
        else:
            outcomes.append("recorded" if reply.audit_id else "unrecorded")
    running.stop()
    no_traceback("".join(running.lines))
    verify = guardrail("audit", "verify", "--data-dir", str(work / "data"))
    assert verify.returncode != 0 and "see README" in verify.stderr, verify.stderr
    no_traceback(verify.stdout + verify.stderr)
    code, output = Sidecar(work / "data").exits()  # it will not write to a damaged trail
    assert code == 2 and "When the audit database is damaged" in output, output
    no_traceback(output)
    aside = work / "damaged"  # the documented way back: keep it, start a new trail
    aside.mkdir()
    for path in (work / "data" / "audit").glob("audit.db*"):
        path.rename(aside / path.name)
    restarted = Sidecar(work / "data").serving()
    assert restarted.prompt("mail y@example.com").audit_id
    assert restarted.stop() == 0
    return (f"calls: {', '.join(sorted(set(outcomes)))}; verify exits {verify.returncode}; "
            "restart refused until the file is moved aside")


def disk_full(work: Path) -> str:
    """A real full disk: the data directory on a 4 MiB tmpfs in a private mount namespace."""
    data = work / "data"
    data.mkdir()
    mount = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             f'mount -t tmpfs -o size=4m,mode=0700 none "{data}" && exec "$0" "$@"']
    running = Sidecar(data, prefix=mount,
                      env={"GUARDRAIL_AUDIT_CHECKPOINT_INTERVAL": "0.5"}).serving()
    assert running.prompt("mail a@example.com").audit_id
    filler = Path(f"/proc/{running.process.pid}/root") / str(data).lstrip("/") / "filler"
    # Unbuffered: a buffered file would flush its leftover bytes at close, and fail.
    with filler.open("wb", buffering=0) as fill:  # fill what is left, from outside
        try:
            while True:
                fill.write(b"\0" * 65536)
        except OSError:
            pass
    text = "mail b@example.com. " + "The quick brown fox. " * 3000  # needs new pages
    refused = running.refusal(text)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "No space left on device" in (refused.details() or "")
    assert running.prompt(text, tenant="lenient").audit_id == ""
    filler.unlink()  # space again: records are written again, the chain intact
    assert running.prompt("mail c@example.com").audit_id
    # verify fails records that no checkpoint signed: wait for the timer to sign both
    # (the anchor exists from the start, naming the empty trail at seq 0).
    anchor = Path(f"/proc/{running.process.pid}/root") / str(data).lstrip("/") / "keys" / \
        "audit-anchor.json"

    def signed_through() -> int:
        try:
            return int(json.loads(anchor.read_text())["seq"])
        except (OSError, ValueError, KeyError):
            return -1

    deadline = time.monotonic() + 30
    while signed_through() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert signed_through() >= 2, "the records were never signed and anchored"
    inside = ["nsenter", f"--target={running.process.pid}", "--user", "--mount",
              "--preserve-credentials", sys.executable, "-m", "sidecar", "audit", "verify",
              "--data-dir", str(data), "--insecure-any-key"]  # integrity after ENOSPC
    verify = subprocess.run(inside, cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert running.stop() == 0
    return "UNAVAILABLE (No space left on device); writes resume, chain verifies"


def sigkill_under_load(work: Path) -> str:
    running = Sidecar(work / "data").serving()
    acknowledged: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            try:
                acknowledged.append(running.prompt(f"mail u{n}@example.com",
                                                   subject_id=f"s{n}").audit_id)
            except grpc.RpcError:
                return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    running.process.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    running.process.wait(timeout=30)
    found = guardrail("audit", "export", "--data-dir", str(work / "data"))
    stored = {json.loads(line)["id"] for line in found.stdout.splitlines() if line}
    lost = [record for record in acknowledged if record not in stored]
    assert len(acknowledged) > 50, "too few acknowledged writes to prove anything"
    assert not lost, f"{len(lost)} acknowledged records lost"
    checked = verify(work / "data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return f"{len(acknowledged)} acknowledged, 0 lost; {checked.stdout.strip()}"


SCENARIOS: dict[str, Callable[[Path], str]] = {
    "KEK missing": kek_missing,
    "KEK wrong or loose": kek_wrong,
    "spaCy model missing": model_missing,
    "policy directory unreadable": policy_dir_unreadable,
    "audit database deleted": db_deleted,
    "audit database corrupted": db_corrupted,
    "disk full": disk_full,
    "SIGKILL under load": sigkill_under_load,
}
