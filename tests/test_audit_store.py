"""The audit store on real SQLite files: encryption, chain, erasure, tampering, keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import chain, crypto
from audit.store import AuditStore, NewRecord
from tests.conftest import raw_bytes


def open_store(directory: Path, kek: crypto.Kek | None = None) -> AuditStore:
    kek = kek or (crypto.Kek.from_file(directory / "kek") if (directory / "kek").exists()
                  else crypto.Kek.create_file(directory / "kek"))
    return AuditStore(directory / "audit", kek, chain.Signer.load_or_create(
        directory / "signing.key"), b"\x07" * 32, checkpoint_every=50)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def record(subject: str = "", payload: bytes | None = b"x", **fields: object) -> NewRecord:
    values: dict[str, object] = {"tenant": "acme", "app": "web", "direction": "prompt",
                                 "decision": "MODIFY", "policy": "default", "revision": "r1",
                                 "entities": {"EMAIL_ADDRESS": 1}, "rule_ids": ["pii.X"],
                                 "subject_id": subject, "payload": payload}
    values.update(fields)
    return NewRecord(**values)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.tuples(st.sampled_from(["", "alice", "bob", "carol"]),
                                st.one_of(st.none(), st.binary(max_size=300))),
                      min_size=1, max_size=20))
def test_every_payload_decrypts_to_what_was_written(store: AuditStore,
                                                    batch: list[tuple[str, bytes | None]]) -> None:
    ids = store.append([record(subject, payload) for subject, payload in batch])
    by_id = {r["id"]: r for r in store.records()}
    for record_id, (_, payload) in zip(ids, batch, strict=True):
        assert store.payload(by_id[record_id]) == payload
    store.checkpoint()  # a trail with records and no signature fails verify
    assert store.verify().ok


def test_erasure_shreds_one_subject_and_the_chain_still_verifies(store: AuditStore) -> None:
    store.append([record("alice", b"alice's secret %d" % i) for i in range(30)]
                 + [record("bob", b"bob's note")] + [record("", b"tenant-wide")])
    receipt = store.erase("alice")
    assert receipt.records_affected == 30
    assert len(receipt.keys_destroyed) == 1
    payloads = {r["subject_ref"]: store.payload(r) for r in store.records("kind = 'inspection'")}
    assert payloads[store.subject_ref("alice")] is None
    assert payloads[store.subject_ref("bob")] == b"bob's note"
    assert payloads[""] == b"tenant-wide"
    assert store.verify().ok
    erasure = list(store.records("kind = 'erasure'"))
    assert len(erasure) == 1 and erasure[0]["decision"] == "ERASED"


def test_a_later_write_never_revives_an_erased_key(store: AuditStore) -> None:
    store.append([record("alice", b"before")])
    before = store.keys.conn.execute("SELECT fingerprint FROM data_keys").fetchone()[0]
    store.erase("alice")
    store.append([record("alice", b"after")])
    rows = store.keys.conn.execute(
        "SELECT version, fingerprint, wrapped IS NULL FROM data_keys ORDER BY version").fetchall()
    assert rows[0] == (1, before, 1)  # destroyed, bytes gone
    assert rows[1][0] == 2 and rows[1][1] != before and rows[1][2] == 0  # a new key, fenced
    latest = list(store.records("kind = 'inspection'"))[-1]
    assert store.payload(latest) == b"after"


def test_raw_database_and_wal_files_hold_no_plaintext(store: AuditStore, tmp_path: Path) -> None:
    secrets = [b"jane.roe@example.org", b"4111 1111 1111 1111", b"Jane Roe"]
    store.append([record("jane", b"mail " + secrets[0] + b" card " + secrets[1]
                         + b" name " + secrets[2]) for _ in range(20)])
    files = list((tmp_path / "audit").iterdir())
    assert any(f.name.endswith("-wal") for f in files)
    for path in files:
        raw = raw_bytes(path)
        assert not any(secret in raw for secret in secrets), path.name
        assert b"jane" not in raw  # the subject id is only ever stored as an HMAC


# Every column of the records table but `seq` (tested as a deletion below).
COLUMNS = ["id", "kind", "time", "tenant", "app", "direction", "decision", "policy",
           "revision", "entities", "rule_ids", "tags", "retain_until", "subject_ref", "dek_id",
           "payload", "payload_digest", "prev_hash", "hash"]


@pytest.mark.parametrize("column", COLUMNS)
def test_altering_any_column_of_any_row_is_detected_at_that_row(store: AuditStore,
                                                               column: str) -> None:
    store.append([record(f"s{i % 3}", b"payload %d" % i) for i in range(12)])
    conn = store.db.conn
    value = conn.execute(f"SELECT {column} FROM records WHERE seq = 7").fetchone()[0]
    if isinstance(value, bytes):
        altered: object = bytes([value[0] ^ 1]) + value[1:]
    elif isinstance(value, float):
        altered = value + 1
    else:
        altered = ("0" if value[:1] != "0" else "1") + value[1:]
    conn.execute(f"UPDATE records SET {column} = ? WHERE seq = 7", (altered,))
    result = store.verify()
    assert not result.ok
    # prev_hash on 7 breaks 7's link; a changed hash on 7 is caught at 7 too.
    assert result.first_bad_seq == 7, result


def test_a_deleted_record_is_detected(store: AuditStore) -> None:
    store.append([record() for _ in range(5)])
    store.db.conn.execute("DELETE FROM records WHERE seq = 3")
    result = store.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "missing" in result.reason


def test_a_forged_checkpoint_is_detected(store: AuditStore) -> None:
    store.append([record() for _ in range(5)])
    store.checkpoint()
    store.db.conn.execute("UPDATE checkpoints SET hash = ?", ("f" * 64,))
    result = store.verify()
    assert not result.ok and "signature" in result.reason


def test_a_wrong_kek_refuses_with_a_clear_message(tmp_path: Path) -> None:
    first = open_store(tmp_path)
    first.append([record("alice", b"secret")])
    first.close()
    stranger = open_store(tmp_path, crypto.Kek(b"\x01" * 32))
    with pytest.raises(crypto.AuditKeyError, match="does not open with this KEK"):
        stranger.payload(next(stranger.records()))
    with pytest.raises(crypto.AuditKeyError, match="does not open with this KEK"):
        stranger.append([record("alice", b"more")])


@pytest.mark.parametrize(("content", "message"), [
    ("not base64!!", "not base64"), ("AAAA", "must be 32 bytes")])
def test_a_bad_kek_file_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "kek"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(crypto.AuditKeyError, match=message):
        crypto.Kek.from_file(path)
    path.chmod(0o644)
    with pytest.raises(crypto.AuditKeyError, match="readable by group or others"):
        crypto.Kek.from_file(path)
    with pytest.raises(crypto.AuditKeyError, match="does not exist"):
        crypto.Kek.from_file(tmp_path / "missing")


def test_two_writers_on_one_database_never_fork_the_chain(tmp_path: Path) -> None:
    first, second = open_store(tmp_path), open_store(tmp_path)
    for i in range(20):
        (first if i % 2 else second).append([record(f"s{i}"), record()])
    second.erase("s3")
    first.append([record("s3", b"new")])
    assert first.verify().ok and second.verify().ok
    assert first.verify().checked == 42
    first.close()
    second.close()


def test_the_databases_are_private_files(store: AuditStore, tmp_path: Path) -> None:
    for name in ("audit.db", "audit-keys.db"):
        assert (tmp_path / "audit" / name).stat().st_mode & 0o077 == 0
    with sqlite3.connect(tmp_path / "audit" / "audit.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sweeping_removes_expired_records_except_under_legal_hold(store: AuditStore) -> None:
    import time

    past, future = time.time() - 60, time.time() + 3600
    store.append([record("alice", retain_until=past), record("bob", retain_until=past),
                  record("", retain_until=past, tenant="globex"),
                  record("carol", retain_until=future)] * 3)
    subject_hold = store.hold("subject", "alice", "case 42")
    store.hold("tenant", "globex", "audit 2026")
    report = store.sweep()
    assert (report.removed, report.held) == (3, 6)
    left = [(r["subject_ref"], r["tenant"]) for r in store.records("kind = 'inspection'")]
    assert store.subject_ref("bob") not in {ref for ref, _ in left}
    assert left.count((store.subject_ref("alice"), "acme")) == 3
    assert store.verify().ok  # the gaps are bridged by signed stubs
    retention = list(store.records("kind = 'retention'"))
    assert retention[0]["decision"] == "PRUNED"
    assert store.release(subject_hold, reason="case closed")
    assert not store.release(subject_hold, reason="again")
    assert store.sweep().removed == 3  # alice's expire once released; globex still held
    assert store.verify().ok
    assert store.sweep().removed == 0  # events are kept for good


def test_a_record_deleted_and_passed_off_as_pruned_is_detected(store: AuditStore) -> None:
    store.append([record() for _ in range(6)])
    row = store.db.conn.execute("SELECT seq, hash, prev_hash FROM records WHERE seq = 3"
                                ).fetchone()
    store.db.conn.execute("INSERT INTO pruned (seq, hash, prev_hash, sweep) "
                          "VALUES (?, ?, ?, 'forged')", row)
    store.db.conn.execute("DELETE FROM records WHERE seq = 3")
    result = store.verify()
    assert not result.ok and "not covered by a signed checkpoint" in result.reason


def test_rotating_the_kek_rewraps_every_live_key(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([record("alice", b"a"), record("bob", b"b"), record("", b"t")])
    store.erase("bob")
    new = crypto.Kek.create_file(tmp_path / "new.kek")
    assert store.rotate_kek(new) == 2  # alice's and the tenant's; bob's is destroyed
    assert store.rotate_kek(new) == 0  # idempotent
    store.close()
    rotated = open_store(tmp_path, new)
    assert sorted(filter(None, (rotated.payload(r) for r in rotated.records()))) == [b"a", b"t"]
    rotated.close()
    old = open_store(tmp_path, crypto.Kek.from_file(tmp_path / "kek"))
    with pytest.raises(crypto.AuditKeyError, match="does not open with this KEK"):
        old.payload(next(old.records()))
    old.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(st.text(max_size=80), min_size=1, max_size=8))
def test_export_rows_round_trip_the_payloads(store: AuditStore, contents: list[str]) -> None:
    import json

    from audit.export import rows

    subject = f"export-{len(contents)}-{hash(tuple(contents)) & 0xffff}"
    payloads = [json.dumps({"messages": [{"role": "user", "content": c}]}).encode()
                for c in contents]
    store.append([record(subject, p) for p in payloads])
    exported = list(rows(store, subject_id=subject, include_payload=True))
    assert [r["payload"]["messages"][0]["content"] for r in exported] == contents
    assert all(r["subject_ref"] == store.subject_ref(subject) for r in exported)


def test_the_audit_package_never_imports_sidecar_or_grpc() -> None:
    import subprocess
    import sys

    code = ("import sys, audit.crypto, audit.chain, audit.store, audit.export; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sidecar', 'grpc')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_sidecar_refuses_to_start_with_a_kek_that_does_not_fit(tmp_path: Path) -> None:
    from sidecar.auditing import open_store as open_sidecar_store
    from sidecar.errors import ConfigError
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    first = open_sidecar_store(settings)
    first.append([record("alice", b"x")])
    first.close()
    other = crypto.Kek.create_file(tmp_path / "other.kek")
    with pytest.raises(ConfigError, match="does not open the data keys"):
        open_sidecar_store(make_settings(tmp_path, audit_kek_file=tmp_path / "other.kek"))
    assert other.id != first.kek.id
