"""The pseudonym vault: which placeholder stands for which value, per conversation.

`pseudonymize` replaces each distinct value with a placeholder (`<PERSON_1>`) that stays
the same across the turns of one conversation, so the model can refer to it, and
`restore` puts the values back into completions. The mapping is the most sensitive
thing the sidecar keeps, so:

- one row per conversation in `vault.db`, keyed by an HMAC of (tenant, subject,
  conversation): the database names no conversation and no person;
- the mapping is sealed with AES-256-GCM under the subject's data key (the tenant's
  when there is no subject), the same key hierarchy as audit payloads: erasing the
  subject destroys the key, which shreds every copy, and `AuditStore.erase` also
  deletes the rows;
- every exchange (look up, issue, store) is one `BEGIN IMMEDIATE` transaction, so
  concurrent turns of a conversation, in threads or in processes, never lose or fork a
  mapping: the second one sees what the first issued;
- a mapping lives `ttl` seconds after its last new value, then it is gone.

Identity: one value, one placeholder, whatever its case. `Jane Doe`, `JANE DOE` and
`jane  doe` in one conversation are one person, so they share `<PERSON_1>`; a model
that sees three placeholders believes it talks about three people. Values are compared
by `identity()`: NFKC, Unicode case folding, runs of whitespace read as one space. That
merges only what Unicode calls the same text in another case or another compatibility
form (fullwidth letters, ligatures); `Müller` and `Muller`, or `Jane Doe` and `Jane Do`,
stay two values. (Unicode's folding is language-blind: Turkish dotless i (U+0131) and `I` stay
two values, which costs a second placeholder, never a merge of two people.)

Restoration writes the first form the conversation used: `<PERSON_1>` restores as the
original text of the value it was issued for, whatever case later turns used. The
placeholder carries no case of its own, so any other rule would guess; the first-seen
form is what the user wrote and is predictable. Mappings stored before this rule may
hold case variants under placeholders of their own: they are read as they are (each
placeholder still restores its own value, nothing is lost) and a new variant takes the
first-issued of them.

synchronous=NORMAL (WAL): a process crash loses nothing; a power loss may forget the
last mappings, whose placeholders then stay unrestored. The audit trail, which must not
lose a record, keeps FULL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from audit import crypto
from audit.names import fold

if TYPE_CHECKING:
    from audit.store import AuditStore

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE conversations (
            ref TEXT PRIMARY KEY, subject_ref TEXT NOT NULL, dek_id TEXT NOT NULL,
            sealed BLOB NOT NULL, entries INTEGER NOT NULL, expires REAL NOT NULL,
            updated REAL NOT NULL)""",
        "CREATE INDEX conversations_subject ON conversations(subject_ref)",
        "CREATE INDEX conversations_expires ON conversations(expires)",
    ],
    # The tenant, so a legal hold on a tenant keeps its conversations past their TTL.
    2: ["ALTER TABLE conversations ADD COLUMN tenant TEXT NOT NULL DEFAULT ''"],
}
# A conversation that names more distinct values than this gets unnumbered placeholders
# (`<PERSON>`) for the rest: still redacted, never restorable. Bounds a row's size.
MAX_ENTRIES = 10_000


@dataclass
class Exchange:
    """What one inspection asks of the vault, and (once done) what it got."""

    # (entity type, value) pairs to pseudonymize, in text order.
    values: list[tuple[str, str]]
    # Placeholders seen in a completion, to restore.
    tokens: list[str]
    # Placeholders that must not be issued (they already occur in the request's text).
    avoid: set[str] = field(default_factory=set)
    placeholders: list[str] = field(default_factory=list)
    restored: dict[str, str] = field(default_factory=dict)


def identity(value: str) -> str:
    """What makes two values one for the vault (see the module docstring): NFKC, then
    Unicode case folding (NFKC again, as folding can denormalise), then whitespace runs
    as one space, no surrounding whitespace."""
    if value.isascii():
        folded = value.lower()
    else:
        folded = unicodedata.normalize(
            "NFKC", unicodedata.normalize("NFKC", value).casefold())
    return " ".join(folded.split())


@dataclass
class _Mapping:
    # (entity type, identity of the value) -> placeholder: what a new value looks up.
    forward: dict[tuple[str, str], str] = field(default_factory=dict)
    # placeholder -> the original form it was issued for: what restoration writes.
    reverse: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    # Every stored (entity, value, number), in issue order: what is sealed back.
    rows: list[tuple[str, str, int]] = field(default_factory=list)

    @classmethod
    def load(cls, blob: bytes) -> _Mapping:
        mapping = cls()
        for entity, value, number in json.loads(blob):
            mapping.add(entity, value, number)
        return mapping

    def add(self, entity: str, value: str, number: int) -> str:
        token = f"<{entity}_{number}>"
        # setdefault: of stored case variants with placeholders of their own (rows
        # written before identity() was the key), the first-issued one answers lookups.
        self.forward.setdefault((entity, identity(value)), token)
        self.reverse[token] = value
        self.counters[entity] = max(self.counters.get(entity, 0), number)
        self.rows.append((entity, value, number))
        return token

    def lookup(self, entity: str, value: str) -> str | None:
        return self.forward.get((entity, identity(value)))

    def dump(self) -> bytes:
        entries = [list(row) for row in self.rows]
        return json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode()

    def issue(self, entity: str, value: str, avoid: set[str]) -> str:
        number = self.counters.get(entity, 0) + 1
        while f"<{entity}_{number}>" in avoid:
            number += 1
        return self.add(entity, value, number)


def local_exchange(exchange: Exchange) -> Exchange:
    """Placeholders that hold within one request only (no conversation, or no vault)."""
    mapping = _Mapping()
    exchange.placeholders = [mapping.lookup(entity, value)
                             or mapping.issue(entity, value, exchange.avoid)
                             for entity, value in exchange.values]
    return exchange


class Mappings(Protocol):
    """A vault: this file's (Vault) or the fleet store's (audit.pgstore.CentralVault)."""

    def exchange(self, tenant: str, subject_id: str, conversation_id: str,
                 exchange: Exchange, *, ttl: float, now: float | None = None) -> Exchange:
        """Issue or look up placeholders, restore tokens: one transaction."""

    def close(self) -> None:
        """Release what it holds."""


class Vault:
    """The mappings of `store`'s data directory. Not thread-safe: use one per thread."""

    def __init__(self, store: AuditStore) -> None:
        from audit.store import open_database

        self.store = store
        self.db = open_database(vault_path(store.directory), MIGRATIONS, synchronous="NORMAL")

    def close(self) -> None:
        self.db.close()

    def conversation_ref(self, tenant: str, subject_id: str, conversation_id: str) -> str:
        message = json.dumps(["conversation", tenant, subject_id, conversation_id]).encode()
        return hmac.new(self.store.index_key, message, hashlib.sha256).hexdigest()

    def exchange(self, tenant: str, subject_id: str, conversation_id: str,
                 exchange: Exchange, *, ttl: float, now: float | None = None) -> Exchange:
        """Issue or look up a placeholder for each value; find the tokens' values."""
        from audit.store import immediate

        now = time.time() if now is None else now
        ref = self.conversation_ref(tenant, subject_id, conversation_id)
        conn = self.db.conn
        with immediate(conn):
            row = conn.execute("SELECT dek_id, sealed, expires FROM conversations "
                               "WHERE ref = ?", (ref,)).fetchone()
            update = apply_exchange(self.store, ref, row, exchange, subject_id=subject_id,
                                    tenant=tenant, now=now)
            if update is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO conversations (ref, subject_ref, dek_id, sealed, "
                    "entries, expires, updated, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (ref, self.store.subject_ref(subject_id), update[0], update[1],
                     update[2], now + ttl, now, tenant))
        return exchange


def apply_exchange(store: AuditStore, ref: str, row: Any, exchange: Exchange, *,
                   subject_id: str, tenant: str, now: float
                   ) -> tuple[str, bytes, int] | None:
    """Do `exchange` against a conversation's stored row (dek_id, sealed, expires), inside
    the caller's transaction (SQLite here, PostgreSQL in fleet mode); what to store
    back (dek_id, sealed mapping, entries), or None when nothing new was issued."""
    associated = b"guardrail-vault\0" + ref.encode()
    mapping = _Mapping()
    if row is not None and row[2] > now:
        dek = store.key_by_id(row[0])
        if dek is not None:  # else the subject was erased meanwhile: start afresh
            mapping = _Mapping.load(crypto.open_sealed(dek, bytes(row[1]), associated))
    size = len(mapping.rows)
    for entity, value in exchange.values:
        token = mapping.lookup(entity, value)
        if token is None:
            token = mapping.issue(entity, value, exchange.avoid) \
                if len(mapping.rows) < MAX_ENTRIES else f"<{entity}>"
        exchange.placeholders.append(token)
    exchange.restored = {token: mapping.reverse[token] for token in exchange.tokens
                         if token in mapping.reverse}
    if len(mapping.rows) == size:
        return None
    dek_id, dek = store.data_key(subject_id, tenant)
    return dek_id, crypto.seal(dek, mapping.dump(), associated), len(mapping.rows)


def purge_subject(conn: sqlite3.Connection, subject_ref: str) -> int:
    """Delete a subject's mappings (their key is already destroyed); how many."""
    return conn.execute("DELETE FROM conversations WHERE subject_ref = ?",
                        (subject_ref,)).rowcount


def purge_expired(conn: sqlite3.Connection, now: float,
                  held_subjects: Collection[str] = (), held_tenants: Collection[str] = ()
                  ) -> int:
    """Delete mappings past their TTL, except those a legal hold covers (on their subject
    or their tenant): a hold keeps everything about its subject, the vault included."""
    expired = conn.execute("SELECT ref, subject_ref, tenant FROM conversations "
                           "WHERE expires <= ?", (now,)).fetchall()
    tenants = {fold(tenant) for tenant in held_tenants}  # folded, as policies match them
    gone = [(ref,) for ref, subject_ref, tenant in expired
            if not ((subject_ref and subject_ref in held_subjects)
                    or (tenant and fold(tenant) in tenants))]
    conn.executemany("DELETE FROM conversations WHERE ref = ?", gone)
    return len(gone)


def vault_path(directory: Path) -> Path:
    return directory / "vault.db"
