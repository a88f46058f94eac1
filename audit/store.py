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

import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from audit import anchor as anchor_file
from audit import chain, crypto
from audit.anchor import Anchor
from audit.names import fold
from audit.vault import MIGRATIONS as VAULT_MIGRATIONS
from audit.vault import purge_expired, purge_subject, vault_path
from audit.verify import MAX_PROBLEMS, Problem, Verification, foreign_objects, verify_trail

__all__ = ["MAX_PROBLEMS", "Problem", "Verification"]
log = logging.getLogger(__name__)

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
_MIGRATIONS[3] = [
    # Checkpoints chain among themselves (number, digest of the previous signature).
    "ALTER TABLE checkpoints ADD COLUMN n INTEGER",
    "ALTER TABLE checkpoints ADD COLUMN prev TEXT NOT NULL DEFAULT ''",
    "CREATE UNIQUE INDEX checkpoints_n ON checkpoints(n)",
    # Who did it. `chained` marks holds whose add/release are events in the chain
    # (every hold since this migration); older rows predate that and are reported.
    "ALTER TABLE holds ADD COLUMN actor TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE holds ADD COLUMN chained INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE erasures ADD COLUMN actor TEXT NOT NULL DEFAULT ''",
]
_MIGRATIONS[4] = [
    # The id of the index key each checkpoint signs (v3): a swapped key is found.
    "ALTER TABLE checkpoints ADD COLUMN index_id TEXT NOT NULL DEFAULT ''",
]
# Events (erasures, sweeps, holds, key rotations) document what happened to other
# records: kept for good.
FOREVER = 253402300799.0  # 9999-12-31
MAX_CACHED_KEYS = 100_000
SYSTEM_ACTOR = "sidecar"  # the server itself (timed sweeps, policy reloads)
_KEY_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE data_keys (
            dek_id TEXT PRIMARY KEY, scope TEXT NOT NULL, ref TEXT NOT NULL,
            version INTEGER NOT NULL, wrapped BLOB, kek_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL, created REAL NOT NULL, destroyed_at REAL)""",
        "CREATE UNIQUE INDEX data_keys_scope ON data_keys(scope, ref, version)",
    ],
    # Fleet mode: keys a pod made while the fleet store was unreachable wait here until
    # the shipper registers them centrally (shipped = 1), before the records using them.
    2: ["ALTER TABLE data_keys ADD COLUMN shipped INTEGER NOT NULL DEFAULT 0"],
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
    actor: str = ""
    reason: str = ""
    overrode_holds: list[int] = field(default_factory=list)


class LegalHoldError(Exception):
    """An erasure refused because active legal holds cover the subject. Safe to show:
    names the holds (id, scope, reason), never the subject id."""

    def __init__(self, holds: list[dict[str, Any]]) -> None:
        self.holds = holds
        named = "; ".join(
            f"hold {h['id']} ({h['scope']}{' ' + h['ref'] if h['scope'] == 'tenant' else ''}"
            f", reason {h['reason']!r}{', by ' + h['actor'] if h['actor'] else ''})"
            for h in holds)
        super().__init__(f"the subject is under legal hold: {named}. Erasure refused; to "
                         "erase anyway, override the hold with a reason (it is recorded)")


class OutboxFull(OSError):
    """Fleet mode: the local outbox holds its bound of records the store has not taken
    (PostgreSQL unreachable for long): the record is refused, and `on_error` decides."""


class Keyring(Protocol):
    """Where data keys live when not in audit-keys.db: the fleet store (audit.pgstore)
    holds one key per subject for every pod, and the pods cache them for a bounded time."""

    def load(self, scopes: Collection[tuple[str, str]]
             ) -> dict[tuple[str, str], tuple[str, bytes]]:
        """A live (dek_id, key) for each scope, created when it has none."""

    def key_by_id(self, dek_id: str) -> bytes | None:
        """The key, or None once an erasure destroyed it."""


class TamperedError(sqlite3.DatabaseError):
    """The evidence was altered: the chain since the last checkpoint does not verify (so
    nothing is signed over it), or a database holds a trigger or view the sidecar never
    makes (so an erasure is refused: a trigger could copy the keys it destroys).

    A DatabaseError, so every caller that handles a damaged database (the CLI's one-line
    error, the writer's failure path) handles this too."""


class AuditStore:
    def __init__(self, directory: Path, kek: crypto.Kek, signer: chain.Signer,
                 index_key: bytes, *, checkpoint_every: int = 1000,
                 anchor_path: Path | None = None, keyring: Keyring | None = None) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.kek = kek
        self.signer = signer
        self.index_key = index_key
        self.checkpoint_every = checkpoint_every
        # The head anchor (see audit.anchor): None keeps none (tests of the store alone).
        self.anchor_path = anchor_path
        self.anchor_problem = ""  # why the anchor could not advance, last time it could not
        self.db = open_database(directory / "audit.db", _MIGRATIONS)
        self.keys = open_database(directory / "audit-keys.db", _KEY_MIGRATIONS)
        self.db.conn.create_function("guardrail_fold", 1, fold, deterministic=True)
        self._identity = self._files()
        self._deks: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._since_checkpoint = 0
        self._vault: sqlite_utils.Database | None = None
        # Fleet mode (audit.pgstore): keys come from the store; this file is the outbox.
        self.keyring = keyring
        # The index key is pinned by every checkpoint's signature (chain v3): a key that
        # differs from the one the newest checkpoint names would make subject lookups
        # silently miss, so subject_ref() refuses and open_store refuses to start.
        # Fleet mode: the store holds the fleet's index key (audit.pgstore.Central), which
        # the checkpoints sign too (shipped, they pin it in the store: verify --store
        # names a swap); the data directory pins it in keys/fleet-index.json, checked at
        # start. Not checked here against older checkpoints: a directory that ran in
        # local mode before signed its own index key.
        self.index_id = chain.index_key_id(index_key)
        self.index_problem = self._index_pin_problem() if keyring is None else ""
        self.outbox_limit: int | None = None
        self.outbox_records = 0
        self._outbox_lock = threading.Lock()

    def bound_outbox(self, limit: int) -> None:
        """Refuse appends (OutboxFull) while `limit` records wait to be shipped."""
        self.outbox_records = int(self.db.conn.execute("SELECT COUNT(*) FROM records"
                                                       ).fetchone()[0])
        self.outbox_limit = limit

    def outbox_shipped(self, pruned: int) -> None:
        """The shipper pruned `pruned` records it had shipped (see audit.pgstore)."""
        with self._outbox_lock:
            self.outbox_records = max(0, self.outbox_records - pruned)

    def close(self) -> None:
        """Sign the head one last time (unless the chain is broken: then say so), close."""
        try:
            self.checkpoint()
        except (OSError, sqlite3.Error, crypto.AuditKeyError) as err:  # never raise here
            log.error("audit checkpoint at close failed: %s: %s", type(err).__name__, err)
        finally:
            self.db.close()
            self.keys.close()
            if self._vault is not None:
                self._vault.close()

    @property
    def records_since_checkpoint(self) -> int:
        """Records this store appended since it last signed (the unsigned tail it made)."""
        return self._since_checkpoint

    def subject_ref(self, subject_id: str) -> str:
        """HMAC of the subject id: lets compliance find a person's records, reveals nothing.

        Refuses (AuditKeyError) when the index key is not the one the trail pinned: every
        lookup would silently find nothing (an erasure erasing nothing)."""
        if not subject_id:
            return ""
        if self.index_problem:
            raise crypto.AuditKeyError(self.index_problem)
        return hmac.new(self.index_key, subject_id.encode(), hashlib.sha256).hexdigest()

    def _index_pin_problem(self) -> str:
        """"" when the newest checkpoint that names an index key names this one."""
        if not self.index_id:
            return ""
        row = self.db.conn.execute("SELECT n, index_id FROM checkpoints WHERE index_id != '' "
                                   "ORDER BY n DESC LIMIT 1").fetchone()
        if row is None or row[1] == self.index_id:
            return ""
        return (f"the audit index key (keys/audit-index.key, id {self.index_id[:12]}) is not "
                f"the one this trail's checkpoint #{row[0]} signed (id {str(row[1])[:12]}): "
                "subject lookups would find nothing. Put back the original index key")

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

    def _prepare(self, records: list[NewRecord], now: float
                 ) -> list[tuple[dict[str, Any], tuple[str, str], bytes | None]]:
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
        return prepared

    def _insert(self, conn: sqlite3.Connection,
                prepared: list[tuple[dict[str, Any], tuple[str, str], bytes | None]]
                ) -> list[tuple[Any, ...]]:
        """Seal, chain and insert, inside the caller's open transaction (the tip is read
        in it, so two writers never fork the chain)."""
        seq, prev = _tip(conn)  # may be a pruned record's stub: never reuse a number
        rows = []
        for metadata, scope, payload in prepared:
            sealed, digest = None, ""
            if payload is not None:
                dek_id, dek = self._deks[scope]
                metadata["dek_id"] = dek_id
                sealed = crypto.seal(dek, payload, _associated(metadata))
                digest = hashlib.sha256(sealed).hexdigest()
            seq += 1
            hash_ = chain.record_hash(prev, metadata, digest)
            rows.append((seq, *[metadata[k] for k in _METADATA], sealed, digest, prev, hash_))
            prev = hash_
        conn.executemany(_INSERT, rows)
        return rows

    def _event(self, conn: sqlite3.Connection, kind: str, decision: str,
               tags: dict[str, str], rule_ids: list[str] | None = None) -> int:
        """Chain an event (no payload) inside the caller's transaction; its seq."""
        record = NewRecord(kind=kind, decision=decision, retain_until=FOREVER,
                           rule_ids=rule_ids or [], tags=tags)
        rows = self._insert(conn, self._prepare([record], time.time()))
        self._since_checkpoint += 1
        return int(rows[0][0])

    def append(self, records: list[NewRecord]) -> list[str]:
        """Encrypt, chain and commit `records` in one transaction; return their ids."""
        self._check_files()
        if self.outbox_limit is not None and \
                self.outbox_records + len(records) > self.outbox_limit:
            raise OutboxFull(errno.ENOSPC, f"the audit outbox holds its bound of "
                             f"{self.outbox_limit} records the fleet store has not taken "
                             "(is PostgreSQL reachable?)")
        prepared = self._prepare(records, time.time())
        scopes = {scope for _, scope, payload in prepared if payload is not None}
        if self.keyring is not None:
            self._deks = self.keyring.load(scopes)  # its cache, its time bound
        else:
            self._forget_destroyed()  # one query per batch, not one per record
            self._load_keys(scopes)
        with immediate(self.db.conn) as conn:
            rows = self._insert(conn, prepared)
        with self._outbox_lock:
            self.outbox_records += len(rows)
        self._since_checkpoint += len(rows)
        if self._since_checkpoint >= self.checkpoint_every:
            try:
                self.checkpoint()
            except (TamperedError, OSError, sqlite3.Error) as err:
                # The records are committed: they must not be reported as failed.
                log.error("audit checkpoint failed: %s: %s", type(err).__name__, err)
        return [str(row[1]) for row in rows]

    def checkpoint(self, extra: str = "", *, reset_anchor: bool = False) -> tuple[int, str]:
        """Sign the chain's current tip (and `extra`, e.g. a pruned-list digest), then
        advance the head anchor.

        Nothing is signed over a chain that does not verify since the previous
        checkpoint (TamperedError): a signature must vouch for what it covers. With no
        new record and no `extra` the newest checkpoint stands and no new one is made.
        """
        self._check_files()
        if self.index_problem:  # never sign another index key into this trail
            raise crypto.AuditKeyError(self.index_problem)
        conn = self.db.conn
        with immediate(conn):
            seq, hash_ = _tip(conn)
            last = conn.execute(
                "SELECT n, seq, hash, time, extra, signature, public_key, prev, index_id "
                "FROM checkpoints WHERE n IS NOT NULL ORDER BY n DESC LIMIT 1").fetchone()
            if last is not None and not extra and not reset_anchor and \
                    (last[1], last[2]) == (seq, hash_):
                newest = _anchor_of(last)
            else:
                problem = _check_since(conn, last)
                if problem:
                    raise TamperedError(f"the trail does not verify since its last "
                                        f"checkpoint ({problem}): nothing was signed; run "
                                        "`guardrail audit verify`")
                n = last[0] + 1 if last is not None else 1
                prev = chain.signature_digest(last[5]) if last is not None else ""
                now = time.time()
                signature = self.signer.sign(chain.checkpoint_message(
                    seq, hash_, now, extra, n=n, prev=prev, index=self.index_id))
                conn.execute("INSERT INTO checkpoints (seq, hash, time, extra, signature, "
                             "public_key, n, prev, index_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (seq, hash_, now, extra, signature, self.signer.public_hex(),
                              n, prev, self.index_id))
                newest = Anchor(n, seq, hash_, now, prev, extra, signature,
                                self.signer.public_hex(), self.index_id)
        self._advance_anchor(newest, reset=reset_anchor)
        self._since_checkpoint = 0  # after the anchor: "nothing unsigned" means anchored too
        return int(seq), str(hash_)

    def _advance_anchor(self, newest: Anchor, *, reset: bool = False) -> None:
        """Move the head anchor to `newest` if it is newer and over the same trail."""
        if self.anchor_path is None:
            return
        with anchor_file.locked(self.anchor_path):
            try:
                current = anchor_file.read(self.anchor_path)
            except anchor_file.AnchorError as err:
                if not reset:
                    self.anchor_problem = str(err)
                    log.error("audit head anchor not advanced: %s", err)
                    return
                current = None
            if current is not None and not reset:
                row = self.db.conn.execute("SELECT signature FROM checkpoints WHERE n = ?",
                                           (current.n,)).fetchone()
                if row is None or row[0] != current.signature:
                    self.anchor_problem = (
                        f"audit.db does not hold checkpoint #{current.n} (seq {current.seq}) "
                        "that the head anchor names: the trail was rolled back, truncated or "
                        "replaced. Run `guardrail audit verify`; `guardrail audit "
                        "reset-anchor` records that you accept it")
                    log.error("audit head anchor not advanced: %s", self.anchor_problem)
                    return
                if current.n >= newest.n:
                    return  # another writer got there first: never move it back
            anchor_file.write(self.anchor_path, newest)
            self.anchor_problem = ""

    def reset_anchor(self, actor: str, reason: str) -> tuple[int, str]:
        """Accept the trail as it is now: chain an event naming the anchor it replaces
        (who, why), sign, and anchor the new head. For a restored backup or a new trail
        after a loss; `verify` reports every reset."""
        if not reason.strip():
            raise ValueError("resetting the head anchor needs a reason")
        if not actor.strip():
            raise ValueError("resetting the head anchor needs an actor")
        previous = None
        with contextlib.suppress(anchor_file.AnchorError):
            previous = anchor_file.read(self.anchor_path) if self.anchor_path else None
        with immediate(self.db.conn) as conn:
            erased = {json.loads(tags).get("subject_ref", "") for (tags,) in conn.execute(
                "SELECT tags FROM records WHERE kind = 'erasure'")}
            # A restored audit.db lacks the events of erasures made after the backup: the
            # keys they destroyed are accepted by name here (verify warns about resets).
            unexplained = sorted(
                dek_id for dek_id, scope, ref in self.keys.conn.execute(
                    "SELECT dek_id, scope, ref FROM data_keys WHERE wrapped IS NULL OR "
                    "destroyed_at IS NOT NULL")
                if scope != "subject" or ref not in erased)
            self._event(conn, "anchor", "RESET", {
                "actor": actor, "reason": reason,
                "previous_n": str(previous.n) if previous else "",
                "previous_seq": str(previous.seq) if previous else "",
                "previous_hash": previous.hash if previous else "",
                "unexplained_keys": ",".join(unexplained)})
        return self.checkpoint(extra="anchor-reset", reset_anchor=True)

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
            conn.executemany("INSERT INTO data_keys (dek_id, scope, ref, version, wrapped, "
                             "kek_id, fingerprint, created, destroyed_at) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, NULL)", created)
        self._deks.update(found)  # only once committed

    def data_key(self, subject_id: str, tenant: str) -> tuple[str, bytes]:
        """The live data key (id, key) of a subject, or of the tenant when there is none,
        created if needed. Checks the cached key is still alive (an erasure elsewhere)."""
        subject_ref = self.subject_ref(subject_id)
        scope = ("subject", subject_ref) if subject_ref else ("tenant", tenant)
        if self.keyring is not None:
            return self.keyring.load({scope})[scope]
        cached = self._deks.get(scope)
        if cached is not None and self.key_by_id(cached[0]) is not None:
            return cached
        self._deks.pop(scope, None)
        self._load_keys({scope})
        return self._deks[scope]

    def key_by_id(self, dek_id: str) -> bytes | None:
        """A data key by id; None once an erasure destroyed it."""
        if self.keyring is not None:
            return self.keyring.key_by_id(dek_id)
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

    def holds_covering(self, subject_ref: str) -> list[dict[str, Any]]:
        """Active holds on the subject, or on a tenant any of their records belong to."""
        return list(self.db.query(
            "SELECT id, scope, ref, reason, created, actor FROM holds WHERE released IS NULL "
            "AND ((scope = 'subject' AND ref = ?) OR (scope = 'tenant' AND guardrail_fold(ref) "
            "IN (SELECT DISTINCT guardrail_fold(tenant) FROM records WHERE subject_ref = ?))) "
            "ORDER BY id",
            (subject_ref, subject_ref)))

    def erase(self, subject_id: str, *, actor: str = SYSTEM_ACTOR, reason: str = "",
              override_hold: bool = False) -> ErasureReceipt:
        """Crypto-shred a data subject: destroy their keys, purge their payload bytes.

        A legal hold wins: with an active hold on the subject (or on a tenant of theirs)
        this raises LegalHoldError and changes nothing, unless `override_hold` is set
        with a reason; the override, who made it and why are then in the erasure event.
        """
        if not subject_id.strip():
            raise ValueError("an erasure needs a subject id (not blank)")
        if self.keyring is not None:
            raise ValueError("this sidecar is in fleet mode: erase in the store "
                             "(`guardrail audit erase --store URL`)")
        subject_ref = self.subject_ref(subject_id)
        # audit.db's write lock first, and held to the end: a hold added by another
        # process waits for this erasure or is seen by it, never slips in between the
        # check and the destruction.
        with immediate(self.db.conn) as conn:
            refuse_foreign_objects(self.db.conn, self.keys.conn)
            held = self.holds_covering(subject_ref)
            if held and not override_hold:
                raise LegalHoldError(held)
            if held and not reason.strip():
                raise ValueError("overriding a legal hold needs a reason (it is recorded)")
            now = time.time()
            # The keys the subject's records were sealed with (their dek_ids are chained)
            # go as well as those registered to them: a key row whose owner was edited
            # must not survive the erasure.
            used = [row[0] for row in conn.execute(
                "SELECT DISTINCT dek_id FROM records WHERE subject_ref = ? AND dek_id != ''",
                (subject_ref,))]
            keys = self._destroy_keys(subject_ref, used, now)
            self._deks.pop(("subject", subject_ref), None)
            fence = max((k[2] for k in keys), default=0)
            vault = self._vault_db()
            with immediate(vault.conn):
                conversations = purge_subject(vault.conn, subject_ref)
            vault.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fingerprints = [k[1] for k in keys]
            # The payloads go, the erasure row and the chained event come, in one
            # transaction: a NULL payload never exists without the event that explains it.
            affected = conn.execute(
                "UPDATE records SET payload = NULL WHERE subject_ref = ? AND payload IS NOT NULL",
                (subject_ref,)).rowcount
            conn.execute("INSERT INTO erasures (subject_ref, time, fence_version, "
                         "keys_destroyed, actor) VALUES (?, ?, ?, ?, ?)",
                         (subject_ref, now, fence, json.dumps(fingerprints), actor))
            tags = {"subject_ref": subject_ref, "records": str(affected),
                    "conversations": str(conversations), "keys": ",".join(fingerprints),
                    "actor": actor, "reason": reason}
            if held:
                tags["overrode_holds"] = ",".join(str(h["id"]) for h in held)
            self._event(conn, "erasure", "ERASED", tags, [f"erasure:{len(keys)}-keys"])
        seq, hash_ = self.checkpoint(extra=f"erasure:{subject_ref}")
        # Old page images in the write-ahead logs still hold the bytes: fold them back in.
        for database in (self.keys, self.db):
            database.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ErasureReceipt(subject_ref, affected, fingerprints, now, seq, hash_,
                              conversations, actor, reason, [int(h["id"]) for h in held])

    def _destroy_keys(self, subject_ref: str, used: list[str], now: float
                      ) -> list[tuple[str, str, int]]:
        """Destroy the subject's data keys: those registered to them and those their
        records name. Returns (dek_id, fingerprint, version) of each; raises
        TamperedError, undoing everything, if any of them is still live after."""
        with immediate(self.keys.conn) as keys_conn:
            wanted = sorted(set(used) | {row[0] for row in keys_conn.execute(
                "SELECT dek_id FROM data_keys WHERE scope = 'subject' AND ref = ?",
                (subject_ref,))})
            keys: list[tuple[str, str, int]] = []
            for start in range(0, len(wanted), 900):  # under SQLite's parameter limit
                chunk = wanted[start:start + 900]
                marks = ", ".join("?" * len(chunk))
                keys += keys_conn.execute(
                    f"SELECT dek_id, fingerprint, version FROM data_keys WHERE "  # noqa: S608
                    f"destroyed_at IS NULL AND dek_id IN ({marks}) ORDER BY rowid",
                    chunk).fetchall()
                keys_conn.execute(
                    f"UPDATE data_keys SET wrapped = NULL, destroyed_at = "  # noqa: S608
                    f"coalesce(destroyed_at, ?) WHERE dek_id IN ({marks})", (now, *chunk))
                alive = keys_conn.execute(
                    f"SELECT count(*) FROM data_keys WHERE wrapped IS NOT NULL "  # noqa: S608
                    f"AND dek_id IN ({marks})", chunk).fetchone()[0]
                if alive:
                    raise TamperedError(
                        "audit-keys.db kept a data key live through the erasure: the file "
                        "was altered (run `guardrail audit verify`); nothing was erased")
        return keys

    def _vault_db(self) -> sqlite_utils.Database:
        """The pseudonym vault's file (audit.vault), opened on first use."""
        if self._vault is None:
            self._vault = open_database(vault_path(self.directory), VAULT_MIGRATIONS,
                                        synchronous="NORMAL")
        return self._vault

    # -- key rotation -------------------------------------------------------------------

    def rotate_kek(self, new: crypto.Kek, old: crypto.Kek | None = None, *,
                   actor: str = SYSTEM_ACTOR, reason: str = "") -> int:
        """Re-wrap every live data key under `new`; returns how many were re-wrapped.

        Keys already under `new` are left alone, so rerunning after a crash or after a
        server wrote keys under the old KEK finishes the job. Afterwards destroy the old
        KEK: copies of audit-keys.db made before cannot be opened without it. The
        rotation (KEK ids, never keys; who, why) is a chained event.
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
        with immediate(self.db.conn) as conn:
            self._event(conn, "key", "ROTATED", {"from_kek": old.id, "to_kek": new.id,
                                                 "rewrapped": str(count), "actor": actor,
                                                 "reason": reason})
        self.checkpoint()
        return count

    # -- retention ----------------------------------------------------------------------

    def hold(self, scope: str, ref: str, reason: str, actor: str = SYSTEM_ACTOR) -> int:
        """Keep every record of a subject (ref = subject id) or tenant past retention,
        and out of reach of erasure. The hold is a chained event (who, why)."""
        if scope not in ("subject", "tenant"):
            raise ValueError("a hold covers a 'subject' or a 'tenant'")
        if not ref.strip():
            raise ValueError(f"a {scope} hold needs a {scope} id (not blank)")
        if not reason.strip():
            raise ValueError("a hold needs a reason (a case number)")
        key = self.subject_ref(ref) if scope == "subject" else ref
        with immediate(self.db.conn) as conn:
            cursor = conn.execute(
                "INSERT INTO holds (scope, ref, reason, created, actor, chained) "
                "VALUES (?, ?, ?, ?, ?, 1)", (scope, key, reason, time.time(), actor))
            hold_id = int(cursor.lastrowid or 0)
            self._event(conn, "hold", "ADDED", {"hold": str(hold_id), "scope": scope,
                                                "ref": key, "reason": reason,
                                                "actor": actor})
        self.checkpoint()
        return hold_id

    def release(self, hold_id: int, actor: str = SYSTEM_ACTOR, reason: str = "") -> bool:
        """End an active hold (a chained event with who and why); False when there is no
        such hold. Ending a hold lets erasures and sweeps through: it needs a reason."""
        if not reason.strip():
            raise ValueError("releasing a hold needs a reason (it is recorded)")
        with immediate(self.db.conn) as conn:
            changed = conn.execute("UPDATE holds SET released = ? WHERE id = ? AND released "
                                   "IS NULL", (time.time(), hold_id)).rowcount == 1
            if changed:
                self._event(conn, "hold", "RELEASED", {"hold": str(hold_id), "actor": actor,
                                                       "reason": reason})
        if changed:
            self.checkpoint()
        return changed

    def holds(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM holds ORDER BY id"))

    def record_access(self, actor: str, reason: str, filters: dict[str, str],
                      count: int) -> int:
        """Chain who read decrypted payloads (an --include-payload export, a GDPR Art. 15
        access request): actor, reason, the filters (a subject as its subject_ref, never
        the id) and how many records. Reading personal data is itself evidence."""
        with immediate(self.db.conn) as conn:
            seq = self._event(conn, "access", "EXPORTED", {
                **{f"filter_{k}": v for k, v in sorted(filters.items())},
                "records": str(count), "actor": actor, "reason": reason})
        self.checkpoint()
        return seq

    def sweep(self, now: float | None = None, actor: str = SYSTEM_ACTOR) -> SweepReport:
        """Delete expired records not under a legal hold, leaving signed stubs behind.

        Each removed record leaves (seq, hash, prev_hash) in `pruned`, so `verify` can
        bridge the gap. The stubs, the deletion and the retention event that names their
        digest and count are one transaction, and a signed checkpoint covers the digest
        too, so nobody can delete a record and pass it off as pruned.
        """
        now = time.time() if now is None else now
        sweep_id = secrets.token_hex(8)
        held_clause = ("EXISTS (SELECT 1 FROM holds h WHERE h.released IS NULL AND "
                       "((h.scope = 'subject' AND h.ref = records.subject_ref AND "
                       "records.subject_ref != '') OR (h.scope = 'tenant' AND "
                       "guardrail_fold(h.ref) = guardrail_fold(records.tenant))))")
        with immediate(self.db.conn) as conn:
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
                self._event(conn, "retention", "PRUNED", {
                    "removed": str(len(expired)), "held": str(held), "sweep": sweep_id,
                    "stubs_sha256": _stub_digest(expired), "actor": actor})
        seq, _ = self.checkpoint(extra=f"prune:{sweep_id}:{_stub_digest(expired)}"
                                 if expired else "")
        vault = self._vault_db()
        active = [h for h in self.holds() if h["released"] is None]
        with immediate(vault.conn):
            conversations = purge_expired(
                vault.conn, now, {h["ref"] for h in active if h["scope"] == "subject"},
                {fold(h["ref"]) for h in active if h["scope"] == "tenant"})
        for database in (self.db, vault):
            database.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return SweepReport(len(expired), held, seq, conversations)

    # -- verification -------------------------------------------------------------------

    def verify(self, trusted_keys: Collection[str] | None = None, *,
               anchor_path: Path | None = None,
               expect_head: tuple[int, int, str] | None = None) -> Verification:
        """Check the whole trail (see audit.verify); every problem found, first first.

        `trusted_keys`: the pinned checkpoint public keys (hex). None accepts any key a
        checkpoint names, which proves nothing against someone who can write the
        database: `authenticated` is then False. `anchor_path`: the head anchor to check
        against (default: the store's own). `expect_head`: (n, seq, hash) of a checkpoint
        recorded outside the pod (`guardrail audit head`): the trail must still hold it.
        The KEK and the index key are checked too (every live data key opens, every
        checkpoint names this index key).
        """
        return verify_trail(self.db.conn, self.keys.conn, _METADATA, trusted_keys,
                            anchor_path or self.anchor_path, expect_head=expect_head,
                            kek=self.kek if self.keyring is None else None,
                            index_id=self.index_id if self.keyring is None else "")


def snapshot(directory: Path, target: Path) -> None:
    """A private, consistent copy of `audit.db` and `audit-keys.db` (WAL content
    included) into `target`, without changing a byte of the originals.

    `verify` reads the copy: opening the evidence itself for writing would run
    migrations, merge its write-ahead log into the file and delete the -wal and -shm
    files, changing every file an investigator may want to hash. Each database and its
    WAL are copied byte for byte while they hold still; while a server keeps writing,
    the database is opened read-only (`mode=ro`) and read with SQLite's backup API,
    which sees one snapshot.
    """
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("audit.db", "audit-keys.db"):
        if (directory / name).exists() and not _copy_still(directory, target, name):
            _backup(directory / name, target / name)


def _copy_still(directory: Path, target: Path, name: str, tries: int = 5) -> bool:
    """Copy the database and its WAL byte for byte, if they hold still meanwhile (a
    stopped trail, the auditor's usual case); False when a writer kept changing them.
    The -shm index is not copied: SQLite rebuilds it from the WAL in the copy."""
    files = [name, f"{name}-wal"]

    def state() -> list[tuple[int, int] | None]:
        found: list[tuple[int, int] | None] = []
        for file in files:
            try:
                info = (directory / file).stat()
                found.append((info.st_size, info.st_mtime_ns))
            except FileNotFoundError:
                found.append(None)
        return found

    for _ in range(tries):
        before = state()
        for file, seen in zip(files, before, strict=True):
            (target / file).unlink(missing_ok=True)
            if seen is not None:
                fd = os.open(target / file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out, (directory / file).open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
        if state() == before:
            return True
    for file in files:
        (target / file).unlink(missing_ok=True)
    return False


def _backup(source_path: Path, target_path: Path) -> None:
    """One consistent snapshot of a database a server is writing, opened read-only (its
    live -shm index is shared with the server; the database and WAL are not written)."""
    source = sqlite3.connect(f"{source_path.absolute().as_uri()}?mode=ro", uri=True,
                             timeout=30)
    try:
        os.close(os.open(target_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        copy = sqlite3.connect(target_path)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()


def _tip(conn: sqlite3.Connection) -> tuple[int, str]:
    """The newest (seq, hash), a record or a pruned record's stub."""
    tips = [conn.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"  # noqa: S608 - fixed table names
                         ).fetchone() for table in ("records", "pruned")]
    seq, hash_ = max((t for t in tips if t), default=(0, chain.GENESIS))
    return int(seq), str(hash_)


def _anchor_of(row: tuple[Any, ...]) -> Anchor:
    n, seq, hash_, time_, extra, signature, public_key, prev, index = row
    return Anchor(n, seq, hash_, time_, prev, extra, signature, public_key, index)


def _check_since(conn: sqlite3.Connection, last: tuple[Any, ...] | None) -> str:
    """'' when the records after the newest checkpoint chain onto it; else what is wrong.

    Bounded work: only what was written since that checkpoint is read.
    """
    start, prev = (0, chain.GENESIS) if last is None else (int(last[1]), str(last[2]))
    if start > 0:
        row = conn.execute("SELECT hash FROM records WHERE seq = ? UNION ALL "
                           "SELECT hash FROM pruned WHERE seq = ?", (start, start)).fetchone()
        if row is None or row[0] != prev:
            return (f"seq {start}, signed by checkpoint #{last[0] if last else 0}, is "
                    f"{'missing' if row is None else 'altered'}")
    stubs = dict(conn.execute("SELECT seq, hash FROM pruned WHERE seq > ?", (start,)).fetchall())
    expected = start + 1
    for row in conn.execute(f"SELECT seq, {', '.join(_METADATA)}, payload_digest, "  # noqa: S608 - fixed column names
                            "prev_hash, hash FROM records WHERE seq > ? ORDER BY seq", (start,)):
        seq = row[0]
        while expected < seq:
            if expected not in stubs:
                return f"record {expected} is missing"
            prev, expected = stubs[expected], expected + 1
        metadata = dict(zip(_METADATA, row[1:-3], strict=True))
        digest, prev_hash, hash_ = row[-3:]
        if prev_hash != prev or chain.record_hash(prev, metadata, digest) != hash_:
            return f"record {seq} does not verify"
        prev, expected = hash_, seq + 1
    return ""


def _stub_digest(rows: list[tuple[int, str, str]]) -> str:
    digest = hashlib.sha256()
    for seq, hash_, prev_hash in rows:
        digest.update(f"{seq}:{hash_}:{prev_hash}\n".encode())
    return digest.hexdigest()


def refuse_foreign_objects(*connections: sqlite3.Connection) -> None:
    """TamperedError when a database holds a trigger or a view: the sidecar makes
    neither, and one planted by hand can copy a destroyed key aside or hide rows."""
    found = [name for conn in connections for name in foreign_objects(conn)]
    if found:
        raise TamperedError(f"{', '.join(found[:5])} in the audit files: the sidecar makes "
                            "none, so they were added by hand; nothing was changed (run "
                            "`guardrail audit verify`)")


def _associated(metadata: dict[str, Any]) -> bytes:
    """AEAD associated data: binds a ciphertext to its record id and metadata."""
    bound = {k: v for k, v in metadata.items() if k != "dek_id"}
    return str(metadata["id"]).encode() + b"\n" + hashlib.sha256(chain.canonical(bound)).digest()


def open_database(path: Path, migrations: dict[int, list[str]],
                  synchronous: str = "FULL") -> sqlite_utils.Database:
    """A 0600 SQLite file in WAL mode, migrated to the latest version."""
    assert synchronous in ("FULL", "NORMAL")
    # Created 0600 before SQLite opens it: SQLite makes the -wal and -shm files with the
    # database file's mode, so they are 0600 from the first run too.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            name.chmod(0o600)  # also files an older version left readable
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
