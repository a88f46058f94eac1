"""A whole `guardrail serve` with no network but loopback, and no raw content anywhere.

The sidecar runs in its own network namespace (an unprivileged user namespace: only a
loopback interface exists) with a socket guard in every one of its processes (a
sitecustomize audit hook: it records any connect or name lookup that is not loopback or
a Unix socket, because libraries that catch network errors would hide a failed attempt).
The test reaches it over a Unix socket, which crosses namespaces. A workload of known
PII values goes through every call (prompt, completion, chat, stream, schema,
pseudonyms, refused requests), logging at DEBUG. Then none of the values may appear in
the logs, the metrics page, error messages, any file of the data directory (databases,
WAL and SHM files, the vault, keys) or the export without --include-payload.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from tests.conftest import REPO, TEST_POLICIES, raw_bytes

GUARD = """
import socket, sys
_LOG = {log!r}

def _local(address):
    if isinstance(address, (str, bytes)):
        return True  # a Unix socket path
    host = str(address[0]) if isinstance(address, tuple) and address else str(address)
    return host.startswith(("127.", "::1", "localhost")) or host in ("", "None", "0.0.0.0")

def _hook(event, args):
    if event == "socket.connect" and not _local(args[1]):
        _record(f"connect {{args[1]!r}}")
    elif event == "socket.getaddrinfo" and not _local((args[0],)):
        _record(f"resolve {{args[0]!r}}")

def _record(what):
    with open(_LOG, "a") as log:
        log.write(what + "\\n")

sys.addaudithook(_hook)
"""

# Known values: none of them may be found anywhere but in the encrypted payloads.
PII = {
    "email": "zelda.quartermain@example.com",
    "name": "Zelda Quartermain",
    "phone": "+1 212 555 0187",
    "card": "4111 1111 1111 1111",
    "ssn": "078-05-1120",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "ip": "203.0.113.77",
    "subject": "subject-zq-4471",
}
FORMS = {*PII.values(), "4111111111111111", "GB82WEST12345698765432", "zelda.quartermain"}
SENTENCE = (f"I am {PII['name']}, mail {PII['email']} or call {PII['phone']}; card "
            f"{PII['card']}, SSN {PII['ssn']}, IBAN {PII['iban']}, from {PII['ip']}.")


@dataclass
class Isolated:
    process: subprocess.Popen[str]
    stub: pb_grpc.GuardrailStub
    data: Path
    attempts: Path
    log: Path

    def scrape(self) -> str:
        """The metrics page, fetched from inside the sidecar's network namespace."""
        entry = next(json.loads(line) for line in self.log.read_text().splitlines()
                     if '"metrics listening"' in line)
        fetch = ("import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                 f"'http://{entry['address']}/metrics', timeout=10).read().decode())")
        return subprocess.run(
            ["nsenter", f"--target={self.process.pid}", "--user", "--net",
             "--preserve-credentials", sys.executable, "-c", fetch],
            capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    work = tmp_path_factory.mktemp("isolated")
    attempts = work / "attempts.txt"
    attempts.touch()
    guard = work / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD.format(log=str(attempts)))
    socket_path = work / "guardrail.sock"
    log = work / "sidecar.log"
    env = {**os.environ, "PYTHONPATH": f"{guard}:{REPO}", "HOME": str(work),
           "GUARDRAIL_LOG_LEVEL": "DEBUG"}
    command = ["unshare", "--user", "--map-root-user", "--net", "sh", "-c",
               'ip link set lo up && exec "$0" "$@"', sys.executable, "-m", "sidecar",
               "serve", "--listen", f"unix:{socket_path}", "--metrics-listen", "127.0.0.1:0",
               "--policies", str(TEST_POLICIES), "--data-dir", str(work / "data"),
               "--workers", "2"]
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stderr=log_file, text=True, env=env)
    deadline = time.monotonic() + 120
    while '"serving"' not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    try:
        yield Isolated(process, pb_grpc.GuardrailStub(channel), work / "data", attempts, log)
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def workload(stub: pb_grpc.GuardrailStub) -> list[str]:
    """Every kind of call, carrying the known values; the error details it got back."""
    details = []
    fields = {"subject_id": PII["subject"], "request_id": "iso"}
    for tenant in ("", "acme", "content", "lenient", "eu-bank", "shadow-mode"):
        stub.InspectPrompt(pb.InspectRequest(text=SENTENCE, tenant=tenant, **fields),
                           timeout=60)
        stub.InspectCompletion(pb.InspectRequest(text=SENTENCE, tenant=tenant, **fields),
                               timeout=60)
    chat = pb.Messages(messages=[pb.Message(role="user", content=SENTENCE)] * 3)
    stub.InspectPrompt(pb.InspectRequest(messages=chat, **fields), timeout=60)
    for turn in range(2):  # pseudonyms: the vault holds the values, sealed
        ask = stub.InspectPrompt(pb.InspectRequest(
            text=SENTENCE, tenant="pseudo", conversation_id="c-iso", **fields), timeout=60)
        stub.InspectCompletion(pb.InspectRequest(
            text=f"Dear {ask.text.split()[2]} (turn {turn})", tenant="pseudo",
            conversation_id="c-iso", **fields), timeout=60)
    document = json.dumps({"title": SENTENCE, "priority": "low",
                           "reporter": {"name": PII["name"], "email": PII["email"]}})
    stub.InspectCompletion(pb.InspectRequest(text=document, tenant="schema",
                                             output_schema="ticket", **fields), timeout=60)
    chunks = [pb.CompletionChunk(request=pb.InspectRequest(**fields))]
    chunks += [pb.CompletionChunk(text=SENTENCE[i:i + 7]) for i in range(0, len(SENTENCE), 7)]
    list(stub.InspectCompletionStream(iter([*chunks, pb.CompletionChunk(end=True)]),
                                      timeout=60))
    for bad in (pb.InspectRequest(text=SENTENCE * 50_000),  # over the size limit
                pb.InspectRequest(text=SENTENCE, output_schema="ticket"),  # prompt + schema
                pb.InspectRequest(text=SENTENCE, tenant="schema", request_id="r" * 200),
                pb.InspectRequest(text=SENTENCE, attributes={PII["email"]: PII["card"]} |
                                  {f"k{i}": "v" for i in range(80)})):
        try:
            stub.InspectPrompt(bad, timeout=60)
        except grpc.RpcError as err:
            details.append(err.details() or "")
    return details


def leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return sorted(value for value in FORMS if value.encode() in data)


def test_a_full_workload_runs_offline_and_leaves_no_raw_content(isolated: Isolated) -> None:
    details = workload(isolated.stub)
    # It worked without a network: the email (which needs tldextract's suffix list) and
    # the name (which needs the spaCy model) were both found.
    reply = isolated.stub.InspectPrompt(pb.InspectRequest(text=SENTENCE), timeout=60)
    assert {"EMAIL_ADDRESS", "PERSON"} <= {f.entity_type for f in reply.findings}
    assert isolated.attempts.read_text() == "", "outbound attempts were made"
    assert len(details) == 4 and all(leaks(d) == [] for d in details), details

    metrics = isolated.scrape()
    assert "guardrail_requests_total" in metrics
    assert leaks(metrics) == []

    running = [path for path in isolated.data.rglob("*") if path.is_file()]
    assert any(path.name.endswith("-wal") for path in running)  # live WAL files too
    assert any(path.name == "vault.db" for path in running)
    for path in running:
        assert leaks(raw_bytes(path)) == [], path

    isolated.process.send_signal(signal.SIGTERM)
    assert isolated.process.wait(timeout=60) == 0
    log = isolated.log.read_text()
    assert '"level": "debug"' in log  # DEBUG was on: the strictest case for the logs
    assert leaks(log) == []
    for path in isolated.data.rglob("*"):
        if path.is_file():
            assert leaks(raw_bytes(path)) == [], path

    export = subprocess.run([sys.executable, "-m", "sidecar", "audit", "export",
                             "--data-dir", str(isolated.data)], cwd=REPO, text=True,
                            capture_output=True, timeout=120, check=True)
    assert export.stdout.count("\n") >= 20
    assert leaks(export.stdout + export.stderr) == []


def test_control_the_guard_sees_an_attempt_in_the_namespace(tmp_path: Path) -> None:
    """The guard and the namespace of the test above do catch a lookup and a connect."""
    attempts = tmp_path / "attempts.txt"
    (tmp_path / "sitecustomize.py").write_text(GUARD.format(log=str(attempts)))
    probe = ("import socket\nfor call in (lambda: socket.getaddrinfo('example.org', 443),"
             " lambda: socket.create_connection(('192.0.2.1', 443), timeout=1)):\n"
             "    try: call()\n    except OSError as err: print(type(err).__name__)")
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
        timeout=60, check=True)
    seen = attempts.read_text().splitlines()
    assert "resolve 'example.org'" in seen and "connect ('192.0.2.1', 443)" in seen
    assert result.stdout.split() == ["gaierror", "OSError"]  # and the network is not there
