"""Audit records written by the serving sidecar: content, keys, crashes, a full disk."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from audit.store import AuditStore
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import AuditWriter, open_store
from sidecar.pipeline import Pipeline
from sidecar.runner import make_runner
from tests.conftest import REPO, Sidecar, _ServerThread, copy_tree, make_settings, raw_bytes


def record_of(sidecar: Sidecar, audit_id: str) -> dict[str, object]:
    found = list(sidecar.audit.records("id = ?", (audit_id,)))
    assert len(found) == 1
    return found[0]


def test_every_answer_carries_the_id_of_its_committed_record(sidecar: Sidecar) -> None:
    text = "Mail John Smith at john.smith@example.com, card 4111 1111 1111 1111"
    reply = sidecar.prompt(text, tenant="nobody", app="web", request_id="a-1",
                           subject_id="customer-42")
    assert reply.audit_id
    row = record_of(sidecar, reply.audit_id)
    assert (row["tenant"], row["app"], row["direction"], row["decision"], row["policy"]) == \
        ("nobody", "web", "prompt", "BLOCK", "default")
    assert row["revision"] == reply.policy_revision
    assert json.loads(str(row["entities"])) == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1,
                                                "PERSON": 1}
    assert json.loads(str(row["rule_ids"])) == ["pii.CREDIT_CARD"]
    assert row["subject_ref"] == sidecar.audit.subject_ref("customer-42")
    assert "customer-42" not in json.dumps(row, default=str)
    assert float(row["retain_until"]) - float(row["time"]) == pytest.approx(365 * 86400)


def test_the_payload_holds_the_redacted_text_encrypted(sidecar: Sidecar) -> None:
    reply = sidecar.prompt("Write to john.smith@example.com", request_id="a-2")
    payload = json.loads(sidecar.audit.payload(record_of(sidecar, reply.audit_id)) or b"")
    assert payload["payload"] == "redacted"
    assert payload["messages"] == [{"role": "", "content": "Write to <EMAIL_ADDRESS>"}]
    assert payload["request_id"] == "a-2"
    assert payload["findings"] == [["EMAIL_ADDRESS", 9, 31, "replace", 0]]


def test_no_pii_sent_appears_in_the_database_or_wal_files(sidecar: Sidecar,
                                                         tmp_path: Path) -> None:
    values = ["rosalind.q@example.net", "5555 5555 5555 4444", "Rosalind Quist"]
    for _ in range(10):
        sidecar.prompt(f"I am {values[2]}, mail {values[0]}, card {values[1]}",
                       subject_id="rq-1")
    directory = Path(str(sidecar.audit.db.conn.execute("PRAGMA database_list").fetchone()[2]))
    for path in directory.parent.iterdir():
        raw = raw_bytes(path)
        for value in [*values, "rq-1"]:
            assert value.encode() not in raw, (path.name, value)


@pytest.fixture
def tiny_disk_server(tmp_path: Path) -> Iterator[tuple[str, AuditStore]]:
    """A sidecar whose audit database cannot grow: every write fails as on a full disk."""
    settings = make_settings(tmp_path, workers=0)
    pipeline = Pipeline.from_settings(settings)
    store = open_store(settings)
    pages = store.db.conn.execute("PRAGMA page_count").fetchone()[0]
    store.db.conn.execute(f"PRAGMA max_page_count = {pages}")
    writer = AuditWriter(store, lambda name: pipeline.policies.by_name[name].policy)
    server = _ServerThread(settings, make_runner(settings, pipeline), writer)
    try:
        yield server.running.address, store
    finally:
        server.stop()


@pytest.fixture
def tiny_disk(tiny_disk_server: tuple[str, AuditStore]
              ) -> Iterator[tuple[pb_grpc.GuardrailStub, AuditStore]]:
    address, store = tiny_disk_server
    channel = grpc.insecure_channel(address)
    try:
        yield pb_grpc.GuardrailStub(channel), store
    finally:
        channel.close()


def test_a_full_disk_fails_closed_or_open_as_the_policy_says(
        tiny_disk: tuple[pb_grpc.GuardrailStub, AuditStore]) -> None:
    stub, store = tiny_disk
    text = "mail a@example.com. " + "The quick brown fox. " * 2000  # needs new pages
    with pytest.raises(grpc.RpcError) as caught:
        stub.InspectPrompt(pb.InspectRequest(text=text), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not be recorded" in caught.value.details()
    assert "No space left on device" in caught.value.details()
    lenient = stub.InspectPrompt(pb.InspectRequest(text=text, tenant="lenient"), timeout=30)
    assert lenient.decision == pb.MODIFY and lenient.audit_id == ""
    store.db.conn.execute("PRAGMA max_page_count = 1000000")  # space again
    assert stub.InspectPrompt(pb.InspectRequest(text="hello"), timeout=10).audit_id
    store.checkpoint()
    assert store.verify().ok  # nothing half-written


def test_a_full_disk_is_not_retried_by_the_clients_channel(
        tiny_disk_server: tuple[str, AuditStore]) -> None:
    """The client package's channel retries UNAVAILABLE (a sidecar starting or draining);
    an unwritable trail says not to (grpc-retry-pushback-ms -1), so one call is one
    inspection and one refusal, not three."""
    from sidecar.client import GuardrailCallError, GuardrailClient

    address, _ = tiny_disk_server
    text = "mail a@example.com. " + "The quick brown fox. " * 2000  # needs new pages
    seen = []
    original = AuditWriter.record

    async def counted(self: AuditWriter, *args: Any, **kwargs: Any) -> str:
        seen.append(1)
        return await original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AuditWriter, "record", counted)
        with GuardrailClient(address, timeout=30) as guard, \
                pytest.raises(GuardrailCallError) as caught:
            guard.inspect_prompt(text)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "could not be recorded" in caught.value.details
    assert len(seen) == 1


def data_dir_of(sidecar: Sidecar) -> Path:
    database = Path(str(sidecar.audit.db.conn.execute("PRAGMA database_list").fetchone()[2]))
    return database.parent.parent


def cli(*args: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "sidecar", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow
def test_cli_exports_erases_and_verifies(sidecar: Sidecar, tmp_path: Path) -> None:
    for n in range(3):
        sidecar.prompt(f"Mail ann.lee{n}@example.com", subject_id="cli-subject")
    data = str(data_dir_of(sidecar))
    code, out, _ = cli("audit", "export", "--data-dir", data, "--subject", "cli-subject",
                       "--include-payload")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3
    assert rows[0]["payload"]["messages"][0]["content"] == "Mail <EMAIL_ADDRESS>"
    code, out, _ = cli("audit", "erase", "--data-dir", data, "--subject", "cli-subject")
    receipt = json.loads(out)
    assert code == 0 and receipt["records_affected"] == 3 and receipt["keys_destroyed"]
    code, out, _ = cli("audit", "export", "--data-dir", data, "--subject", "cli-subject",
                       "--include-payload", "--format", "csv")
    assert code == 0 and out.count("\n") == 4 and "ann.lee" not in out
    key = cli("audit", "public-key", "--data-dir", data)[1].strip()
    code, out, _ = cli("audit", "verify", "--data-dir", data, "--public-key", key)
    assert code == 0 and out.startswith("ok: ")
    # A signed export, checked offline; any change to the file or manifest is caught.
    exported = str(tmp_path / "export.jsonl")
    code, _, err = cli("audit", "export", "--data-dir", data, "--decision", "MODIFY",
                       "-o", exported)
    assert code == 0 and "manifest" in err
    manifest = json.loads(Path(exported + ".manifest.json").read_text())
    assert manifest["filters"] == {"decision": "MODIFY", "format": "jsonl"}
    assert manifest["records"] == len(Path(exported).read_text().splitlines())
    code, out, _ = cli("audit", "verify-export", exported, "--public-key",
                       manifest["public_key"])
    assert code == 0 and out.startswith("ok: ")
    Path(exported).write_text(Path(exported).read_text().replace("MODIFY", "ALLOW", 1))
    code, _, err = cli("audit", "verify-export", exported, "--public-key", key)
    assert code == 1 and "SHA-256" in err
    code, _, err = cli("audit", "verify-export", exported, "--public-key", "00" * 32)
    assert code == 1 and "another key" in err
    # A copy with one altered row fails, naming the row.
    copy = tmp_path / "copy"
    copy_tree(data, copy)
    with sqlite3.connect(copy / "audit" / "audit.db") as conn:
        # Always a change: seq 2 may already be an ALLOW when other tests shared the trail.
        conn.execute("UPDATE records SET decision = CASE decision WHEN 'ALLOW' THEN 'BLOCK' "
                     "ELSE 'ALLOW' END WHERE seq = 2")
    code, _, err = cli("audit", "verify", "--data-dir", str(copy), "--public-key", key)
    assert code == 1 and "seq=2" in err and "metadata altered" in err


def test_a_forged_export_fails_against_the_pinned_key(sidecar: Sidecar, tmp_path: Path) -> None:
    """An edited CSV, its SHA-256 recomputed, the manifest re-signed with a fresh key:
    verify-export with the pinned key fails; without one it says UNAUTHENTICATED and
    exits non-zero (on main it said ok)."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit import chain

    sidecar.prompt("Mail ann.lee@example.com", subject_id="forged-export")
    data = str(data_dir_of(sidecar))
    exported = tmp_path / "export.csv"
    code, _, _ = cli("audit", "export", "--data-dir", data, "--format", "csv",
                     "-o", str(exported))
    assert code == 0 and exported.stat().st_mode & 0o777 == 0o600
    exported.write_text(exported.read_text().replace("MODIFY", "ALLOW"))
    manifest_path = Path(f"{exported}.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    forger = chain.Signer(Ed25519PrivateKey.generate())
    body = {k: v for k, v in manifest.items() if k != "signature"}
    body.update(sha256=hashlib.sha256(exported.read_bytes()).hexdigest(),
                public_key=forger.public_hex())
    manifest_path.write_text(json.dumps({**body, "signature": forger.sign(
        chain.canonical(body))}))
    key = cli("audit", "public-key", "--data-dir", data)[1].strip()
    code, _, err = cli("audit", "verify-export", str(exported), "--public-key", key)
    assert code == 1 and "not the pinned key" in err
    code, _, err = cli("audit", "verify-export", str(exported))
    assert code == 3 and "UNAUTHENTICATED" in err


def test_requests_without_an_id_get_one_returned_audited_and_signed(sidecar: Sidecar) -> None:
    from sidecar import tags
    from tests.test_residency import tag_key

    first = sidecar.prompt("Hi, I am John Smith", tenant="eu-shop", user_region="eu-west-3")
    second = sidecar.prompt("Hi, I am John Smith", tenant="eu-shop", user_region="eu-west-3")
    assert first.request_id and second.request_id and first.request_id != second.request_id
    row = record_of(sidecar, first.audit_id)
    assert json.loads(str(row["tags"]))["request_id"] == first.request_id
    one, two = dict(first.routing_tags), dict(second.routing_tags)
    assert one["signature"] != two["signature"]  # never the same signature twice
    key = tag_key(sidecar)
    assert tags.verify(key, first.request_id, one, max_age=60)
    assert not tags.verify(key, second.request_id, one)  # not replayable onto another
    issued = int(one["issued_at"])
    assert not tags.verify(key, first.request_id, one, max_age=60, now=issued + 61)


def test_the_writer_signs_and_anchors_new_records_on_a_timer(tmp_path: Path) -> None:
    """The unsigned tail stays short without waiting for 1,000 records or a shutdown."""
    import time

    from audit.store import NewRecord
    from sidecar.auditing import anchor_path

    settings = make_settings(tmp_path)
    store = open_store(settings)
    assert store.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    writer = AuditWriter(store, lambda name: None, checkpoint_interval=0.2)
    try:
        writer.record_event(NewRecord(kind="policy", decision="APPLIED"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and store.records_since_checkpoint:
            time.sleep(0.05)
        key = store.signer.public_hex()
        check = open_store(settings)
        result = check.verify([key])
        check.db.close()
        check.keys.close()
        assert result.ok and result.unsigned == 0 and result.anchored, result
        assert anchor_path(settings.data_dir).stat().st_mode & 0o777 == 0o600
    finally:
        writer.close()
