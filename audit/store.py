"""The audit trail on SQLite: encrypted, hash-chained records; erasure; verification.

Two files in the data directory:
- `audit.db` holds the records. Plain columns only for what compliance filters on
  (time, tenant, app, direction, decision, policy and revision, entity counts, rule ids,
  routing tags, retain_until, subject_ref = HMAC of the subject id); what was said lives
  only in the encrypted `payload`. Safe to back up: without the keys it is metadata.
- `audit-keys.db` holds the wrapped data keys. Erasing a subject deletes their wrapped
  keys here, so their payloads become unreadable in every copy of `audit.db`; for copies
  of this file, rotate the KEK after erasures and destroy the old one.
- `vault.db` holds the pseudonym vault (audit.vault), sealed under the same data keys;
  erasure also deletes the subject's rows, retention sweeps the expired ones.

Writes are batched: `append` takes many records and commits them in one transaction
(group commit), inside which the chain's tip is read, so two writers (the server and a
CLI erase) can never fork the chain. WAL mode, synchronous=FULL: a record that `append`
returned is on disk.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from audit import chain, crypto
from audit.vault import MIGRATIONS as VAULT_MIGRATIONS
from audit.vault import purge_expired, purge_subject, vault_path

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE records (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            time REAL NOT NULL,
            tenant TEXT NOT NULL, app TEXT NOT NULL, direction TEXT NOT NULL,
            decision TEXT NOT NULL, policy TEXT NOT NULL, revision TEXT NOT NULL,
            entities TEXT NOT NULL, rule_ids TEXT NOT NULL, tags TEXT NOT NULL,
            retain_until REAL NOT NULL, subject_ref TEXT NOT NULL,
            dek_id TEXT NOT NULL, payload BLOB, payload_digest TEXT NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
        "CREATE INDEX records_time ON records(time)",
        "CREATE INDEX records_subject ON records(subject_ref)",
        "CREATE INDEX records_tenant ON records(tenant, time)",
        "CREATE INDEX records_retain ON records(retain_until)",
        """CREATE TABLE checkpoints (
            seq INTEGER NOT NULL, hash TEXT NOT NULL, time REAL NOT NULL,
            extra TEXT NOT NULL, signature TEXT NOT NULL, public_key TEXT NOT NULL)""",
        """CREATE TABLE pruned (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL,
            prev_hash TEXT NOT NULL)""",
        """CREATE TABLE erasures (subject_ref TEXT NOT NULL, time REAL NOT NULL,
            fence_version INTEGER NOT NULL, keys_destroyed TEXT NOT NULL)""",
    ],
}
_MIGRATIONS[2] = [
    "ALTER TABLE pruned ADD COLUMN sweep TEXT NOT NULL DEFAULT ''",
    """CREATE TABLE holds (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, ref TEXT NOT NULL,
        reason TEXT NOT NULL, created REAL NOT NULL, released REAL)""",
]
# Events (erasures, sweeps) document what happened to other records: kept for good.
FOREVER = 253402300799.0  # 9999-12-31
MAX_CACHED_KEYS = 100_000
_KEY_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE data_keys (
            dek_id TEXT PRIMARY KEY, scope TEXT NOT NULL, ref TEXT NOT NULL,
            version INTEGER NOT NULL, wrapped BLOB, kek_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL, created REAL NOT NULL, destroyed_at REAL)""",
        "CREATE UNIQUE INDEX data_keys_scope ON data_keys(scope, ref, version)",
    ],
}
_METADATA = ("id", "kind", "time", "tenant", "app", "direction", "decision", "policy",
             "revision", "entities", "rule_ids", "tags", "retain_until", "subject_ref",
             "dek_id")
_INSERT = (f"INSERT INTO records (seq, {', '.join(_METADATA)}, payload, payload_digest, "  # noqa: S608 - fixed column names
           f"prev_hash, hash) VALUES ({', '.join('?' * (len(_METADATA) + 5))})")


@dataclass(frozen=True)
class NewRecord:
    """What the sidecar knows about one decision. `payload` is encrypted before storage."""

    kind: str = "inspection"
    tenant: str = ""
    app: str = ""
    direction: str = ""
    decision: str = ""
    policy: str = ""
    revision: str = ""
    entities: dict[str, int] = field(default_factory=dict)
    rule_ids: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    retain_until: float = 0.0
    subject_id: str = ""
    payload: bytes | None = None


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    first_bad_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class SweepReport:
    removed: int
    held: int  # expired but kept because a legal hold covers them
    checkpoint_seq: int
    conversations: int = 0  # pseudonym-vault mappings past their TTL, deleted


@dataclass(frozen=True)
class ErasureReceipt:
    subject_ref: str
    records_affected: int
    keys_destroyed: list[str]  # fingerprints
    time: float
    checkpoint_seq: int
    checkpoint_hash: str
    conversations: int = 0  # pseudonym-vault mappings deleted


class AuditStore:
    def __init__(self, directory: Path, kek: crypto.Kek, signer: chain.Signer,
                 index_key: bytes, checkpoint_every: int = 1000) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.kek = kek
        self.signer = signer
        self.index_key = index_key
        self.checkpoint_every = checkpoint_every
        self.db = open_database(directory / "audit.db", _MIGRATIONS)
        self.keys = open_database(directory / "audit-keys.db", _KEY_MIGRATIONS)
        self._identity = self._files()
        self._deks: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._since_checkpoint = 0
        self._vault: sqlite_utils.Database | None = None

    def close(self) -> None:
        self.checkpoint()
        self.db.close()
        self.keys.close()
        if self._vault is not None:
            self._vault.close()

    def subject_ref(self, subject_id: str) -> str:
        """HMAC of the subject id: lets compliance find a person's records, reveals nothing."""
        if not subject_id:
            return ""
        return hmac.new(self.index_key, subject_id.encode(), hashlib.sha256).hexdigest()

    # -- writing ------------------------------------------------------------------------

    def _files(self) -> list[tuple[int, int]]:
        return [(info.st_dev, info.st_ino) for info in (
            (self.directory / name).stat() for name in ("audit.db", "audit-keys.db"))]

    def _check_files(self) -> None:
        """A database deleted or replaced under an open connection would take writes
        into an unlinked inode and lose them at the next start: refuse instead."""
        try:
            same = self._files() == self._identity
        except FileNotFoundError:
            same = False
        if not same:
            raise OSError(errno.ENOENT, "the audit database was deleted or replaced while "
                          "the sidecar ran; restart it (see README: recovery)")

    def append(self, records: list[NewRecord]) -> list[str]:
        """Encrypt, chain and commit `records` in one transaction; return their ids."""
        self._check_files()
        now = time.time()
        prepared = []
        for record in records:
            subject_ref = self.subject_ref(record.subject_id)
            scope = ("subject", subject_ref) if subject_ref else ("tenant", record.tenant)
            metadata = {
                "id": secrets.token_hex(16), "kind": record.kind, "time": now,
                "tenant": record.tenant, "app": record.app, "direction": record.direction,
                "decision": record.decision, "policy": record.policy,
                "revision": record.revision,
                "entities": json.dumps(record.entities, sort_keys=True),
                "rule_ids": json.dumps(sorted(set(record.rule_ids))),
                "tags": json.dumps(record.tags, sort_keys=True),
                "retain_until": record.retain_until, "subject_ref": subject_ref,
                "dek_id": "",
            }
            prepared.append((metadata, scope, record.payload))
        self._forget_destroyed()  # one query per batch, not one per record
        self._load_keys({scope for _, scope, payload in prepared if payload is not None})
        conn = self.db.conn
        with immediate(conn):
            # The tip may be a pruned record (its stub): never reuse a sequence number.
            tips = [conn.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"  # noqa: S608
                                 ).fetchone() for table in ("records", "pruned")]
            seq, prev = max((t for t in tips if t), default=(0, chain.GENESIS))
            rows = []
            for metadata, scope, payload in prepared:
                sealed, digest = None, ""
                if payload is not None:
                    dek_id, dek = self._deks[scope]
                    metadata["dek_id"] = dek_id
                    associated = _associated(metadata)
                    sealed = crypto.seal(dek, payload, associated)
                    digest = hashlib.sha256(sealed).hexdigest()
                seq += 1
                hash_ = chain.record_hash(prev, metadata, digest)
                rows.append((seq, *[metadata[k] for k in _METADATA], sealed, digest, prev,
                             hash_))
                prev = hash_
            conn.executemany(_INSERT, rows)
        self._since_checkpoint += len(rows)
        if self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        return [str(row[1]) for row in rows]

    def checkpoint(self, extra: str = "") -> tuple[int, str]:
        """Sign the chain's current tip (and `extra`, e.g. a pruned-list digest)."""
        conn = self.db.conn
        with immediate(conn):
            tip = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"
                               ).fetchone() or (0, chain.GENESIS)
            now = time.time()
            signature = self.signer.sign(chain.checkpoint_message(tip[0], tip[1], now, extra))
            conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
                         (tip[0], tip[1], now, extra, signature, self.signer.public_hex()))
        self._since_checkpoint = 0
        return int(tip[0]), str(tip[1])

    def _forget_destroyed(self) -> None:
        """Drop cached keys an erasure destroyed since (maybe in another process)."""
        if not self._deks:
            return
        cached = [dek_id for dek_id, _ in self._deks.values()]
        alive: set[str] = set()
        for start in range(0, len(cached), 900):  # under SQLite's bound-parameter limit
            chunk = cached[start:start + 900]
            alive.update(row[0] for row in self.keys.conn.execute(
                f"SELECT dek_id FROM data_keys WHERE destroyed_at IS NULL AND dek_id IN "  # noqa: S608
                f"({', '.join('?' * len(chunk))})", chunk))
        for scope, (dek_id, _) in list(self._deks.items()):
            if dek_id not in alive:
                del self._deks[scope]

    def _load_keys(self, scopes: set[tuple[str, str]]) -> None:
        """Make sure every scope has a live data key in the cache: reuse the newest live
        one, or create a new one, all new keys of a batch in one transaction."""
        if len(self._deks) + len(scopes) > MAX_CACHED_KEYS:
            self._deks.clear()  # bounded memory; keys are reloaded as needed
        missing = [scope for scope in scopes if scope not in self._deks]
        if not missing:
            return
        found: dict[tuple[str, str], tuple[str, bytes]] = {}
        with immediate(self.keys.conn) as conn:
            created = []
            for scope in missing:
                row = conn.execute(
                    "SELECT dek_id, wrapped, destroyed_at, version FROM data_keys "
                    "WHERE scope = ? AND ref = ? ORDER BY version DESC LIMIT 1", scope).fetchone()
                if row is not None and row[2] is None:
                    found[scope] = (row[0], crypto.unwrap(self.kek, row[1], row[0]))
                    continue
                # No key yet, or the newest was destroyed by an erasure: a new random key
                # at a higher version (the erasure fence), never derivable from the old.
                dek, dek_id = crypto.new_dek(), secrets.token_hex(16)
                created.append((dek_id, scope[0], scope[1], (row[3] + 1) if row else 1,
                                crypto.wrap(self.kek, dek, dek_id), self.kek.id,
                                crypto.fingerprint(dek), time.time()))
                found[scope] = (dek_id, dek)
            conn.executemany("INSERT INTO data_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                             created)
        self._deks.update(found)  # only once committed

    def data_key(self, subject_id: str, tenant: str) -> tuple[str, bytes]:
        """The live data key (id, key) of a subject, or of the tenant when there is none,
        created if needed. Checks the cached key is still alive (an erasure elsewhere)."""
        subject_ref = self.subject_ref(subject_id)
        scope = ("subject", subject_ref) if subject_ref else ("tenant", tenant)
        cached = self._deks.get(scope)
        if cached is not None and self.key_by_id(cached[0]) is not None:
            return cached
        self._deks.pop(scope, None)
        self._load_keys({scope})
        return self._deks[scope]

    def key_by_id(self, dek_id: str) -> bytes | None:
        """A data key by id; None once an erasure destroyed it."""
        row = self.keys.conn.execute(
            "SELECT wrapped FROM data_keys WHERE dek_id = ? AND destroyed_at IS NULL",
            (dek_id,)).fetchone()
        return None if row is None else crypto.unwrap(self.kek, row[0], dek_id)

    # -- reading ------------------------------------------------------------------------

    def records(self, where: str = "", params: tuple[Any, ...] = ()) -> Iterator[dict[str, Any]]:
        """Records in chain order. `where` is SQL written by this package's callers (fixed
        column names); every value goes through `params`."""
        sql = "SELECT * FROM records" + (f" WHERE {where}" if where else "")  # noqa: S608
        yield from self.db.query(sql + " ORDER BY seq", params)

    def payload(self, record: dict[str, Any]) -> bytes | None:
        """Decrypted payload of a record; None when it had none or it was erased."""
        if record["payload"] is None or not record["dek_id"]:
            return None
        dek = self.key_by_id(record["dek_id"])
        if dek is None:
            return None
        metadata = {k: record[k] for k in _METADATA}
        return crypto.open_sealed(dek, record["payload"], _associated(metadata))

    # -- erasure ------------------------------------------------------------------------

    def erase(self, subject_id: str) -> ErasureReceipt:
        """Crypto-shred a data subject: destroy their keys, purge their payload bytes."""
        subject_ref = self.subject_ref(subject_id)
        now = time.time()
        with immediate(self.keys.conn):
            keys = self.keys.conn.execute(
                "SELECT dek_id, fingerprint, version FROM data_keys "
                "WHERE scope = 'subject' AND ref = ? AND destroyed_at IS NULL",
                (subject_ref,)).fetchall()
            self.keys.conn.execute(
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = ? "
                "WHERE scope = 'subject' AND ref = ?", (now, subject_ref))
        self._deks.pop(("subject", subject_ref), None)
        fence = max((k[2] for k in keys), default=0)
        vault = self._vault_db()
        with immediate(vault.conn):
            conversations = purge_subject(vault.conn, subject_ref)
        vault.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with immediate(self.db.conn):
            affected = self.db.conn.execute(
                "UPDATE records SET payload = NULL WHERE subject_ref = ? AND payload IS NOT NULL",
                (subject_ref,)).rowcount
            self.db.conn.execute("INSERT INTO erasures VALUES (?, ?, ?, ?)",
                                 (subject_ref, now, fence,
                                  json.dumps([k[1] for k in keys])))
        self.append([NewRecord(kind="erasure", decision="ERASED", retain_until=FOREVER,
                               rule_ids=[f"erasure:{len(keys)}-keys"],
                               tags={"subject_ref": subject_ref, "records": str(affected),
                                     "conversations": str(conversations)})])
        seq, hash_ = self.checkpoint(extra=f"erasure:{subject_ref}")
        # Old page images in the write-ahead logs still hold the bytes: fold them back in.
        for database in (self.keys, self.db):
            database.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ErasureReceipt(subject_ref, affected, [k[1] for k in keys], now, seq, hash_,
                              conversations)

    def _vault_db(self) -> sqlite_utils.Database:
        """The pseudonym vault's file (audit.vault), opened on first use."""
        if self._vault is None:
            self._vault = open_database(vault_path(self.directory), VAULT_MIGRATIONS,
                                        synchronous="NORMAL")
        return self._vault

    # -- key rotation -------------------------------------------------------------------

    def rotate_kek(self, new: crypto.Kek, old: crypto.Kek | None = None) -> int:
        """Re-wrap every live data key under `new`; returns how many were re-wrapped.

        Keys already under `new` are left alone, so rerunning after a crash or after a
        server wrote keys under the old KEK finishes the job. Afterwards destroy the old
        KEK: copies of audit-keys.db made before cannot be opened without it.
        """
        old = old or self.kek
        count = 0
        with immediate(self.keys.conn) as conn:
            rows = conn.execute("SELECT dek_id, wrapped FROM data_keys WHERE wrapped IS NOT "
                                "NULL AND kek_id != ?", (new.id,)).fetchall()
            for dek_id, wrapped in rows:
                dek = crypto.unwrap(old, wrapped, dek_id)
                conn.execute("UPDATE data_keys SET wrapped = ?, kek_id = ? WHERE dek_id = ?",
                             (crypto.wrap(new, dek, dek_id), new.id, dek_id))
                count += 1
        self.kek = new
        self._deks.clear()
        self.keys.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count

    # -- retention ----------------------------------------------------------------------

    def hold(self, scope: str, ref: str, reason: str) -> int:
        """Keep every record of a subject (ref = subject id) or tenant past retention."""
        if scope not in ("subject", "tenant"):
            raise ValueError("a hold covers a 'subject' or a 'tenant'")
        key = self.subject_ref(ref) if scope == "subject" else ref
        with immediate(self.db.conn) as conn:
            cursor = conn.execute(
                "INSERT INTO holds (scope, ref, reason, created) VALUES (?, ?, ?, ?)",
                (scope, key, reason, time.time()))
        return int(cursor.lastrowid or 0)

    def release(self, hold_id: int) -> bool:
        with immediate(self.db.conn) as conn:
            return conn.execute("UPDATE holds SET released = ? WHERE id = ? AND released IS "
                                "NULL", (time.time(), hold_id)).rowcount == 1

    def holds(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM holds ORDER BY id"))

    def sweep(self, now: float | None = None) -> SweepReport:
        """Delete expired records not under a legal hold, leaving signed stubs behind.

        Each removed record leaves (seq, hash, prev_hash) in `pruned`, so `verify` can
        bridge the gap; the stubs of one sweep are covered by a signed checkpoint over
        their digest, so nobody can delete a record and pass it off as pruned.
        """
        now = time.time() if now is None else now
        conn = self.db.conn
        sweep_id = secrets.token_hex(8)
        held_clause = ("EXISTS (SELECT 1 FROM holds h WHERE h.released IS NULL AND "
                       "((h.scope = 'subject' AND h.ref = records.subject_ref AND "
                       "records.subject_ref != '') OR (h.scope = 'tenant' AND "
                       "h.ref = records.tenant)))")
        with immediate(conn):
            # held_clause is fixed text above; the only value is bound.
            held = conn.execute(f"SELECT COUNT(*) FROM records WHERE retain_until < ? AND "  # noqa: S608
                                f"{held_clause}", (now,)).fetchone()[0]
            expired = conn.execute(f"SELECT seq, hash, prev_hash FROM records WHERE "  # noqa: S608
                                   f"retain_until < ? AND NOT {held_clause} ORDER BY seq",
                                   (now,)).fetchall()
            conn.executemany("INSERT INTO pruned (seq, hash, prev_hash, sweep) "
                             "VALUES (?, ?, ?, ?)", [(*row, sweep_id) for row in expired])
            conn.executemany("DELETE FROM records WHERE seq = ?", [(row[0],) for row in expired])
        if expired:
            self.append([NewRecord(kind="retention", decision="PRUNED", retain_until=FOREVER,
                                   tags={"removed": str(len(expired)), "held": str(held),
                                         "sweep": sweep_id})])
        seq, _ = self.checkpoint(extra=f"prune:{sweep_id}:{_stub_digest(expired)}"
                                 if expired else "")
        vault = self._vault_db()
        with immediate(vault.conn):
            conversations = purge_expired(vault.conn, now)
        for database in (self.db, vault):
            database.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return SweepReport(len(expired), held, seq, conversations)

    # -- verification -------------------------------------------------------------------

    def verify(self) -> Verification:
        """Walk the whole chain; name the first record that does not verify."""
        conn = self.db.conn
        for seq, hash_, time_, extra, signature, public in conn.execute(
                "SELECT seq, hash, time, extra, signature, public_key FROM checkpoints"):
            if not chain.verify_signature(public, chain.checkpoint_message(
                    seq, hash_, time_, extra), signature):
                return Verification(False, 0, seq, "", "a checkpoint signature is invalid")
        stubs = {row[0]: (row[1], row[2]) for row in conn.execute(
            "SELECT seq, hash, prev_hash FROM pruned")}
        signed_sweeps = {extra.split(":")[1]: extra.split(":")[2] for (extra,) in conn.execute(
            "SELECT extra FROM checkpoints WHERE extra LIKE 'prune:%'")}
        by_sweep: dict[str, list[tuple[int, str, str]]] = {}
        for seq, hash_, prev_hash, sweep in conn.execute(
                "SELECT seq, hash, prev_hash, sweep FROM pruned ORDER BY seq"):
            by_sweep.setdefault(sweep, []).append((seq, hash_, prev_hash))
        for sweep, rows in by_sweep.items():
            if signed_sweeps.get(sweep) != _stub_digest(rows):
                return Verification(False, 0, rows[0][0], "",
                                    "a retention stub is not covered by a signed checkpoint")
        checkpoints = {row[0]: row[1] for row in conn.execute(
            "SELECT seq, hash FROM checkpoints")}
        prev = chain.GENESIS
        expected_seq = 1
        checked = 0
        for record in self.db.query("SELECT * FROM records ORDER BY seq"):
            seq = record["seq"]
            while expected_seq < seq:  # a gap: pruned by retention, bridged by its stub
                stub = stubs.get(expected_seq)
                if stub is None or stub[1] != prev:
                    return Verification(False, checked, expected_seq, "",
                                        "record missing (deleted without a retention stub)")
                prev = stub[0]
                expected_seq += 1
            metadata = {k: record[k] for k in _METADATA}
            if record["prev_hash"] != prev:
                return Verification(False, checked, seq, record["id"],
                                    "does not link to the previous record")
            payload_ok = record["payload"] is None or hashlib.sha256(
                record["payload"]).hexdigest() == record["payload_digest"]
            if not payload_ok:
                return Verification(False, checked, seq, record["id"],
                                    "encrypted payload altered")
            if chain.record_hash(prev, metadata, record["payload_digest"]) != record["hash"]:
                return Verification(False, checked, seq, record["id"], "metadata altered")
            if seq in checkpoints and checkpoints[seq] != record["hash"]:
                return Verification(False, checked, seq, record["id"],
                                    "differs from its signed checkpoint")
            prev = record["hash"]
            expected_seq = seq + 1
            checked += 1
        return Verification(True, checked)


def _stub_digest(rows: list[tuple[int, str, str]]) -> str:
    digest = hashlib.sha256()
    for seq, hash_, prev_hash in rows:
        digest.update(f"{seq}:{hash_}:{prev_hash}\n".encode())
    return digest.hexdigest()


def _associated(metadata: dict[str, Any]) -> bytes:
    """AEAD associated data: binds a ciphertext to its record id and metadata."""
    bound = {k: v for k, v in metadata.items() if k != "dek_id"}
    return str(metadata["id"]).encode() + b"\n" + hashlib.sha256(chain.canonical(bound)).digest()


def open_database(path: Path, migrations: dict[int, list[str]],
                  synchronous: str = "FULL") -> sqlite_utils.Database:
    """A 0600 SQLite file in WAL mode, migrated to the latest version."""
    assert synchronous in ("FULL", "NORMAL")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    # Erased payloads and destroyed keys are overwritten on disk, not just unlinked.
    conn.execute("PRAGMA secure_delete=ON")
    db = sqlite_utils.Database(conn)
    with immediate(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version INTEGER PRIMARY KEY, applied REAL NOT NULL)")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version in sorted(migrations):
            if version not in done:
                for statement in migrations[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                             (version, time.time()))
    path.chmod(0o600)
    return db


class immediate:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error): one writer, the chain tip read inside."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error:
                if self.conn.in_transaction:  # a failed COMMIT leaves it open: undo it
                    self.conn.execute("ROLLBACK")
                raise
        elif self.conn.in_transaction:  # SQLite may already have rolled back (disk full)
            self.conn.execute("ROLLBACK")
