"""Fleet mode: one PostgreSQL store for the audit chains, data keys and pseudonym vault
of every pod (GUARDRAIL_STORE=postgresql://...).

Each pod keeps committing every record to its local SQLite trail before it answers; that
file becomes an outbox. `ship` moves committed records to the store, in chain order:

- one chain per sidecar instance (`chains`), many chains in one table (`records`, keyed
  by chain id and seq); each chain's public key, checkpoints and head anchor live here
  too, so a pod cannot roll its own history back unseen;
- idempotent (`ON CONFLICT (chain_id, seq) DO NOTHING`) and checked: each batch must
  link to the last record shipped for its chain, every record must hash to its stored
  hash; a pod whose trail no longer holds what it shipped (rolled back, replaced) is
  refused and recorded in `chain_conflicts`, which `verify` names;
- pruned from the outbox only after the central commit (`prune_outbox`).

Keys: one data key per subject for the whole fleet (`data_keys`, wrapped by the fleet
KEK), which pods cache for `cache_seconds`; an erasure destroys it centrally in the same
transaction as the erasure fence and the chained event, and `NOTIFY guardrail_keys`
tells every listening pod at once (`KeyRing.listen`). A pod that cannot reach the store
makes a pending key of its own (kept in its outbox's key file, registered before the
records using it; registered destroyed when an erasure of its subject came after it).

The vault: one row per conversation, each exchange one transaction serialised per
conversation by an advisory lock, so turns on different pods never fork a mapping.

Schema migrations are numbered and applied under an advisory lock: pods starting at
once on an empty database apply each exactly once.

Like the rest of `audit/`, this module never imports `sidecar`, grpc or HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit import chain, crypto
from audit.anchor import Anchor
from audit.names import fold
from audit.store import (
    _KEY_MIGRATIONS,
    _METADATA,
    _MIGRATIONS,
    FOREVER,
    SYSTEM_ACTOR,
    ErasureReceipt,
    LegalHoldError,
    SweepReport,
    TamperedError,
    _associated,
    _stub_digest,
)
from audit.vault import Exchange, apply_exchange
from audit.verify import Elsewhere, Problem, Verification, verify_trail

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from audit.store import AuditStore

log = logging.getLogger(__name__)
# A psycopg connection. Typed loosely: its rows come from the fixed schema above, and
# `fetchone()` on a row this module just locked or inserted is never None.
Conn = Any
MIGRATION_LOCK = 0x6775617264  # pg_advisory_xact_lock key: 'guard'
CHANNEL = "guardrail_keys"
INDEX_KEY = "index"

_RECORD_COLUMNS = ("chain_id", "seq", *_METADATA, "payload", "payload_digest", "prev_hash",
                   "hash")
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE chains (
            chain_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, kind TEXT NOT NULL,
            registered DOUBLE PRECISION NOT NULL,
            shipped_seq BIGINT NOT NULL DEFAULT 0, shipped_hash TEXT NOT NULL,
            anchor_n BIGINT NOT NULL DEFAULT 0, anchor TEXT NOT NULL DEFAULT '',
            updated DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE records (
            chain_id TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL, tenant TEXT NOT NULL, app TEXT NOT NULL,
            direction TEXT NOT NULL, decision TEXT NOT NULL, policy TEXT NOT NULL,
            revision TEXT NOT NULL, entities TEXT NOT NULL, rule_ids TEXT NOT NULL,
            tags TEXT NOT NULL, retain_until DOUBLE PRECISION NOT NULL,
            subject_ref TEXT NOT NULL, dek_id TEXT NOT NULL, payload BYTEA,
            payload_digest TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
            PRIMARY KEY (chain_id, seq))""",
        "CREATE INDEX records_time ON records(time)",
        "CREATE INDEX records_subject ON records(subject_ref)",
        "CREATE INDEX records_tenant ON records(tenant, time)",
        "CREATE INDEX records_retain ON records(retain_until)",
        """CREATE TABLE checkpoints (
            chain_id TEXT NOT NULL, n BIGINT NOT NULL, seq BIGINT NOT NULL,
            hash TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, extra TEXT NOT NULL,
            signature TEXT NOT NULL, public_key TEXT NOT NULL, prev TEXT NOT NULL,
            PRIMARY KEY (chain_id, n))""",
        """CREATE TABLE pruned (
            chain_id TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL,
            prev_hash TEXT NOT NULL, sweep TEXT NOT NULL, PRIMARY KEY (chain_id, seq))""",
        """CREATE TABLE chain_conflicts (
            chain_id TEXT NOT NULL, seq BIGINT NOT NULL, local_hash TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
            PRIMARY KEY (chain_id, seq, local_hash))""",
        """CREATE TABLE data_keys (
            dek_id TEXT PRIMARY KEY, scope TEXT NOT NULL, ref TEXT NOT NULL,
            version INTEGER NOT NULL, wrapped BYTEA, kek_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
            destroyed_at DOUBLE PRECISION)""",
        "CREATE INDEX data_keys_scope ON data_keys(scope, ref, version)",
        """CREATE TABLE erasures (
            id BIGSERIAL PRIMARY KEY, subject_ref TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL, fence_version INTEGER NOT NULL,
            keys_destroyed TEXT NOT NULL, actor TEXT NOT NULL, chain_id TEXT NOT NULL)""",
        "CREATE INDEX erasures_subject ON erasures(subject_ref)",
        """CREATE TABLE holds (
            id BIGSERIAL PRIMARY KEY, scope TEXT NOT NULL, ref TEXT NOT NULL,
            reason TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
            released DOUBLE PRECISION, actor TEXT NOT NULL, chained INTEGER NOT NULL,
            chain_id TEXT NOT NULL)""",
        """CREATE TABLE conversations (
            ref TEXT PRIMARY KEY, subject_ref TEXT NOT NULL, tenant TEXT NOT NULL,
            dek_id TEXT NOT NULL, sealed BYTEA NOT NULL, entries INTEGER NOT NULL,
            expires DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX conversations_subject ON conversations(subject_ref)",
        "CREATE INDEX conversations_expires ON conversations(expires)",
        """CREATE TABLE fleet_keys (
            name TEXT PRIMARY KEY, wrapped BYTEA NOT NULL, kek_id TEXT NOT NULL)""",
    ],
    # The index key's id each checkpoint signed (chain v3): shipped with the checkpoint,
    # so its signature verifies in the store and a swapped index key shows.
    2: ["ALTER TABLE checkpoints ADD COLUMN index_id TEXT NOT NULL DEFAULT ''"],
}


class StoreUnavailable(ConnectionError):
    """The fleet store cannot be reached (or failed): safe to show, names no secret."""


class StoreRefused(StoreUnavailable):
    """The store answered, and no retry will change its answer: a malformed URL, a
    refused password or role, a missing database, a schema newer than this code, an
    index or chain key other than the one pinned. Fatal at start; in the background the
    shipper keeps shipping nothing, and says why."""


# What the server says when it answered and refused us (psycopg gives no SQLSTATE for
# a failed connection, only libpq's message). Everything else (refused, timed out,
# starting up, too many clients) is worth retrying.
_REFUSALS = ("password authentication failed", "authentication failed", "does not exist",
             "no pg_hba.conf entry", "permission denied", "certificate verify failed",
             "server does not support ssl", "sslmode value", "root certificate file")


def _scrub(text: str, url: str) -> str:
    """`text` (libpq's message about `url`) without the URL's password: libpq quotes the
    token it could not parse, which may be the password itself."""
    import re

    credentials = url.partition("://")[2].rpartition("@")[0]
    passwords = [credentials.partition(":")[2], *re.findall(r"password=([^&]*)", url)]
    passwords += [word for value in passwords for word in value.split()]
    for value in sorted({v for v in [url, credentials, *passwords] if len(v) >= 3},
                        key=len, reverse=True):
        text = text.replace(value, "***")
    for value in passwords:  # a part of a password is still too much
        if any(value[i:i + 4] in text for i in range(len(value) - 3)) or \
                (0 < len(value) < 4 and f'"{value}"' in text):
            return "libpq cannot parse it (check percent-encoding, spaces and brackets)"
    return text


def _connect_error(url: str, err: BaseException) -> StoreUnavailable:
    """StoreRefused for a configuration the server refuses, StoreUnavailable if not."""
    import psycopg

    reason = _scrub(_first_line(err), url)
    fatal = isinstance(err, psycopg.ProgrammingError) or \
        any(text in str(err).lower() for text in _REFUSALS)
    kind = StoreRefused if fatal else StoreUnavailable
    return kind(f"cannot reach the fleet store {redact_url(url)}: {reason}")


def check_url(url: str) -> None:
    """StoreRefused when `url` is not a connection string libpq accepts (no I/O)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except (psycopg.Error, ValueError) as err:  # "%80": not even UTF-8
        raise StoreRefused(f"the fleet store URL {redact_url(url)} is malformed: "
                           f"{_scrub(_first_line(err), url)}") from None


def redact_url(url: str) -> str:
    """The store URL without its password, for messages and logs: rebuilt from what
    libpq parses (user, host, port, database), never cut out of the text, where a
    password holding an "@", "/" or "?" would defeat any split."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = {k: str(v) for k, v in conninfo_to_dict(url).items()}
    except Exception:
        return "postgresql://(a URL libpq cannot parse)"
    user = parts.get("user", "")
    if any("@" in parts.get(k, "") for k in ("user", "host", "port", "dbname")):
        # An "@" libpq did not take as the end of the credentials: the password's own?
        return "postgresql://(a URL with an unencoded '@'; percent-encode it as %40)"
    credentials = f"{user}:***@" if "password" in parts else (f"{user}@" if user else "")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{credentials}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def connect(url: str, *, timeout: float = 5.0) -> psycopg.Connection[Any]:
    """One connection (migrations, LISTEN); StoreUnavailable with the reason if not."""
    import psycopg

    check_url(url)
    try:
        return psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True)
    except psycopg.Error as err:
        raise _connect_error(url, err) from None


def migrate(url: str, *, timeout: float = 5.0) -> list[int]:
    """Apply the missing schema migrations (numbered, each once); the versions applied.

    Under a transaction-scoped advisory lock: pods starting at once on an empty database
    queue here, and the second finds everything already done.
    """
    import psycopg

    with connect(url, timeout=timeout) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                             "PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)")
                done = {row[0] for row in conn.execute("SELECT version FROM "
                                                       "schema_migrations")}
                applied = []
                for version in sorted(MIGRATIONS):
                    if version in done:
                        continue
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement.encode())
                    conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)",
                                 (version, time.time()))
                    applied.append(version)
                newer = sorted(v for v in done if v not in MIGRATIONS)
                if newer:
                    raise StoreRefused(f"the fleet store has schema version {newer[-1]}, "
                                       f"newer than this sidecar knows ({max(MIGRATIONS)}): "
                                       "upgrade the sidecar")
        except psycopg.errors.InsufficientPrivilege as err:
            raise StoreRefused(f"migrating the fleet store failed: {_first_line(err)}"
                               ) from None
        except psycopg.Error as err:
            raise StoreUnavailable(f"migrating the fleet store failed: {_first_line(err)}"
                                   ) from None
    return applied


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


class Central:
    """A pool of connections to the store, and the fleet-wide index key.

    `index_key` is created once per fleet (wrapped by the KEK, in `fleet_keys`), so every
    pod computes the same subject_ref for a subject; a KEK that does not open it is a
    wrong KEK, refused at start.

    `pinned`: the index key this data directory saw in the store before (its pin). The
    store must still hold that one (StoreRefused if not: a swapped index key would make
    every erasure miss); and with a pin, an unreachable store is not fatal: the object
    starts `ready = False` and `prepare()` (the shipper, in the background) migrates and
    checks once the store answers. Until then `transaction()` refuses (StoreUnavailable),
    so nothing reads or writes a store whose schema and index key are unchecked.
    """

    def __init__(self, url: str, kek: crypto.Kek, *, pool_size: int = 4,
                 timeout: float = 5.0, pinned: bytes | None = None,
                 rotating_to: crypto.Kek | None = None) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        self.kek = kek
        # rotate-kek --store, rerun: the index key may already be under the new KEK.
        self.rotating_to = rotating_to
        self.timeout = timeout
        self.ready = False
        self.problem = "not reached yet"
        self._prepare_lock = threading.Lock()
        check_url(url)
        self.index_key = pinned or b""
        try:
            migrate(url, timeout=timeout)
        except StoreRefused:
            raise
        except StoreUnavailable as err:
            if pinned is None:
                raise
            self.problem = str(err)
        self.pool: ConnectionPool[Any] = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=True, timeout=timeout,
            kwargs={"connect_timeout": max(1, int(timeout))},
            check=ConnectionPool.check_connection, reconnect_timeout=0,
            name="guardrail-store")
        if self.problem == "not reached yet":  # migrated: check the index key now
            try:
                self.index_key = self._index_key(pinned)
            except StoreUnavailable as err:  # gone again between the two steps?
                if pinned is None or isinstance(err, StoreRefused):
                    self.pool.close()
                    raise
                self.problem = str(err)
            except BaseException:  # a wrong KEK: no pool left behind
                self.pool.close()
                raise
            else:
                self.ready, self.problem = True, ""

    def prepare(self) -> None:
        """Migrate and check the index key against the pin (after a start without the
        store, or an outage: the store that came back may not be the one that left).
        StoreRefused or StoreUnavailable when it cannot be used (yet)."""
        with self._prepare_lock:
            try:
                migrate(self.url, timeout=self.timeout)
                self._index_key(self.index_key or None)
            except StoreUnavailable as err:
                self.ready, self.problem = False, str(err)
                raise
            self.ready, self.problem = True, ""

    def unready(self, reason: str) -> None:
        """The store failed: `prepare()` again before anything else uses it."""
        self.ready, self.problem = False, reason

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def transaction(self, *, unchecked: bool = False) -> Iterator[Conn]:
        """A pooled connection inside one transaction; StoreUnavailable when unreachable,
        or not yet prepared (`unchecked`: for `prepare` itself)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if not self.ready and not unchecked:
            raise StoreUnavailable(f"the fleet store is not usable yet: {self.problem}")
        try:
            with self.pool.connection(timeout=self.timeout) as conn, conn.transaction():
                yield conn
        except PoolTimeout:
            raise StoreUnavailable("the fleet store is unreachable (no connection within "
                                   f"{self.timeout:g} s)") from None
        except psycopg.Error as err:  # connection lost, server restarting, ...
            raise StoreUnavailable(f"the fleet store failed: {_first_line(err)}") from None

    def _index_key(self, pinned: bytes | None) -> bytes:
        """The fleet's index key: made on first use (the pinned one, if this pod had a
        pin: a store that lost its keys is re-seeded, not re-keyed), else the stored one,
        which must be the pinned one."""
        proposed = pinned or secrets.token_bytes(32)
        with self.transaction(unchecked=True) as conn:
            conn.execute("INSERT INTO fleet_keys VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                         (INDEX_KEY, crypto.wrap(self.kek, proposed, INDEX_KEY), self.kek.id))
            wrapped, kek_id = conn.execute("SELECT wrapped, kek_id FROM fleet_keys WHERE "
                                           "name = %s", (INDEX_KEY,)).fetchone()
        try:
            key = crypto.unwrap(self.rotating_to if self.rotating_to is not None and
                                kek_id == self.rotating_to.id else self.kek,
                                bytes(wrapped), INDEX_KEY)
        except crypto.AuditKeyError:
            raise crypto.AuditKeyError(
                f"the audit KEK (id {self.kek.id}) does not open the fleet store's keys "
                f"(wrapped by KEK {kek_id}): every pod needs the fleet's KEK") from None
        if pinned is not None and not hmac.compare_digest(key, pinned):
            raise StoreRefused(
                f"the fleet store's index key (id {chain.index_key_id(key)[:12]}) is not the "
                f"one this sidecar pinned (id {chain.index_key_id(pinned)[:12]}): every "
                "subject lookup and erasure would miss. A store replaced or altered: "
                "restore the fleet's index key, see README 'Fleet mode'")
        return key

    def subject_ref(self, subject_id: str) -> str:
        if not subject_id:
            return ""
        return hmac.new(self.index_key, subject_id.encode(), hashlib.sha256).hexdigest()

    def register_chain(self, chain_id: str, public_key: str, kind: str = "pod") -> None:
        """Name a chain and the key that signs it (first come; a new key is refused)."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO chains (chain_id, public_key, kind, registered, "
                         "shipped_hash, updated) VALUES (%s, %s, %s, %s, %s, %s) "
                         "ON CONFLICT DO NOTHING",
                         (chain_id, public_key, kind, time.time(), chain.GENESIS, time.time()))
            row = conn.execute("SELECT public_key FROM chains WHERE chain_id = %s",
                               (chain_id,)).fetchone()
        if row[0] != public_key:
            raise StoreRefused(f"chain {chain_id} is registered with another signing key "
                                   f"({row[0][:16]}…): a second sidecar with the same "
                                   "instance id, or a changed key")


def instance_id(directory: Path) -> str:
    """This sidecar's chain id: host name plus a random suffix kept in `directory`, so a
    restarted container (same emptyDir) continues its chain and two pods never share."""
    path = directory / "instance-id"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
    path.write_text(value + "\n")
    return value


# -- keys ------------------------------------------------------------------------------


class KeyRing:
    """The pod's view of the fleet's data keys (an `audit.store.Keyring`).

    A key fetched from the store is used for at most `cache_seconds`; an erasure
    notification drops it at once. When the store cannot be reached, a scope with no
    fresh key gets a pending key kept in `local` (the outbox's audit-keys.db) until the
    shipper registers it. Thread-safe: the writer, the vault and the listener share it.
    """

    def __init__(self, central: Central, local: sqlite3.Connection, *,
                 cache_seconds: float = 30.0) -> None:
        self.central = central
        self.local = local
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._local_lock = threading.Lock()  # `local` is one SQLite connection
        self._scopes: dict[tuple[str, str], tuple[str, bytes, float]] = {}
        self._ids: dict[str, tuple[bytes, float]] = {}
        self.pending_created = 0
        self.listening = False
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def load(self, scopes: Collection[tuple[str, str]]
             ) -> dict[tuple[str, str], tuple[str, bytes]]:
        now = time.monotonic()
        found: dict[tuple[str, str], tuple[str, bytes]] = {}
        with self._lock:
            for scope in scopes:
                cached = self._scopes.get(scope)
                if cached is not None and cached[2] > now:
                    found[scope] = (cached[0], cached[1])
        missing = [scope for scope in scopes if scope not in found]
        if not missing:
            return found
        try:
            fetched = self._fetch(missing)
        except StoreUnavailable:
            fetched = {scope: self._pending(scope) for scope in missing}
        except crypto.AuditKeyError:
            # Wrapped by another KEK: a fleet KEK rotation is rolling out (rotate-kek
            # --store, then the pods restarted with the new KEK). Write with a pending key
            # of this pod's KEK, as in an outage; rerunning the rotation re-wraps it.
            log.warning("a data key in the fleet store is wrapped by another KEK (a KEK "
                        "rotation in progress?); using a pending key",
                        extra={"kek_id": self.central.kek.id})
            fetched = {scope: self._pending(scope) for scope in missing}
        else:
            with self._lock:
                for scope, (dek_id, dek) in fetched.items():
                    self._scopes[scope] = (dek_id, dek, now + self.cache_seconds)
                    self._ids[dek_id] = (dek, now + self.cache_seconds)
        found.update(fetched)
        return found

    def _fetch(self, scopes: list[tuple[str, str]]
               ) -> dict[tuple[str, str], tuple[str, bytes]]:
        """The newest live key of each scope, created (above every destroyed version:
        the erasure fence) when there is none, in one transaction."""
        kek = self.central.kek
        out: dict[tuple[str, str], tuple[str, bytes]] = {}
        with self.central.transaction() as conn:
            for scope in sorted(scopes):
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))",
                             (f"{scope[0]}:{scope[1]}",))
                row = conn.execute(
                    "SELECT dek_id, wrapped, destroyed_at, version FROM data_keys WHERE "
                    "scope = %s AND ref = %s ORDER BY version DESC, created LIMIT 1",
                    scope).fetchone()
                if row is not None and row[2] is None:
                    out[scope] = (row[0], crypto.unwrap(kek, bytes(row[1]), row[0]))
                    continue
                dek, dek_id = crypto.new_dek(), secrets.token_hex(16)
                conn.execute("INSERT INTO data_keys VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                             "NULL)", (dek_id, scope[0], scope[1], (row[3] + 1) if row else 1,
                                       crypto.wrap(kek, dek, dek_id), kek.id,
                                       crypto.fingerprint(dek), time.time()))
                out[scope] = (dek_id, dek)
        return out

    def _pending(self, scope: tuple[str, str]) -> tuple[str, bytes]:
        """A key made here while the store is unreachable (registered later)."""
        from audit.store import immediate

        with self._local_lock:
            row = self.local.execute(
                "SELECT dek_id, wrapped FROM data_keys WHERE scope = ? AND ref = ? AND "
                "shipped = 0 AND destroyed_at IS NULL ORDER BY created DESC LIMIT 1",
                scope).fetchone()
        if row is not None:
            dek = crypto.unwrap(self.central.kek, row[1], row[0])
        else:
            dek, dek_id = crypto.new_dek(), secrets.token_hex(16)
            with self._local_lock, immediate(self.local) as conn:
                conn.execute("INSERT INTO data_keys (dek_id, scope, ref, version, wrapped, "
                             "kek_id, fingerprint, created, destroyed_at, shipped) VALUES "
                             "(?, ?, ?, 0, ?, ?, ?, ?, NULL, 0)",
                             (dek_id, scope[0], scope[1],
                              crypto.wrap(self.central.kek, dek, dek_id),
                              self.central.kek.id, crypto.fingerprint(dek), time.time()))
            self.pending_created += 1
            row = (dek_id, None)
        # Cached briefly: the next batch asks the store again.
        with self._lock:
            self._scopes[scope] = (row[0], dek, time.monotonic() + 1.0)
        return row[0], dek

    def key_by_id(self, dek_id: str) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            cached = self._ids.get(dek_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            with self.central.transaction() as conn:
                row = conn.execute("SELECT wrapped, destroyed_at FROM data_keys WHERE "
                                   "dek_id = %s", (dek_id,)).fetchone()
        except StoreUnavailable:
            local = self._local_key(dek_id)
            if local is not None:
                return local
            raise
        if row is None:  # maybe pending here, not yet registered
            return self._local_key(dek_id)
        if row[1] is not None or row[0] is None:
            return None
        try:
            dek = crypto.unwrap(self.central.kek, bytes(row[0]), dek_id)
        except crypto.AuditKeyError:  # another KEK (a rotation rolling out): not erased
            raise StoreUnavailable("a data key is wrapped by another KEK than this "
                                   "sidecar's (a KEK rotation in progress?)") from None
        with self._lock:
            self._ids[dek_id] = (dek, now + self.cache_seconds)
        return dek

    def _local_key(self, dek_id: str) -> bytes | None:
        """A pending key made here (the store does not know it yet)."""
        with self._local_lock:
            row = self.local.execute("SELECT wrapped FROM data_keys WHERE dek_id = ? AND "
                                     "destroyed_at IS NULL AND wrapped IS NOT NULL",
                                     (dek_id,)).fetchone()
        return None if row is None else crypto.unwrap(self.central.kek, row[0], dek_id)

    def forget(self, subject_ref: str = "") -> None:
        """Drop cached keys: a subject's (an erasure said so) or all of them; destroy a
        pending key of that subject kept here too."""
        from audit.store import immediate

        with self._lock:
            if not subject_ref:
                self._scopes.clear()
                self._ids.clear()
            else:
                gone = self._scopes.pop(("subject", subject_ref), None)
                if gone is not None:
                    self._ids.pop(gone[0], None)
                self._ids.clear()  # ids do not name their subject: refetch is cheap
        if subject_ref:
            with self._local_lock, immediate(self.local) as conn:
                conn.execute("UPDATE data_keys SET wrapped = NULL, destroyed_at = ? WHERE "
                             "scope = 'subject' AND ref = ? AND destroyed_at IS NULL",
                             (time.time(), subject_ref))

    # LISTEN/NOTIFY: erasures reach every pod as they commit.

    def listen(self) -> None:
        """Start the listener thread (reconnects; on reconnect, forgets every key)."""
        self._listener = threading.Thread(target=self._listen, name="store-listen",
                                          daemon=True)
        self._listener.start()

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with connect(self.central.url, timeout=self.central.timeout) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Whatever happened while we were not listening: start afresh.
                    self.forget()
                    self._destroy_erased_pending(conn)
                    self.listening = True
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=100):
                            self.forget(note.payload)
            except (OSError, psycopg.Error):
                pass
            self.listening = False
            self._stop.wait(0.5)

    def _destroy_erased_pending(self, conn: Conn) -> None:
        """Destroy the pending keys made here before an erasure of their subject that
        this pod missed (it was offline): the same fence `_register_pending_keys` applies.
        A pending key made after the erasure is a new key for new records, never the
        erased one (that one only ever lived in the store), and stays."""
        from audit.store import immediate

        with self._local_lock:
            pending = self.local.execute("SELECT dek_id, ref, created FROM data_keys WHERE "
                                         "scope = 'subject' AND shipped = 0 AND "
                                         "destroyed_at IS NULL").fetchall()
        if not pending:
            return
        erased = dict(conn.execute("SELECT subject_ref, MAX(time) FROM erasures WHERE "
                                   "subject_ref = ANY(%s) GROUP BY subject_ref",
                                   (sorted({row[1] for row in pending}),)).fetchall())
        doomed = [(erased[ref], dek_id) for dek_id, ref, created in pending
                  if ref in erased and erased[ref] >= created]
        if doomed:
            with self._lock:
                self._scopes = {scope: value for scope, value in self._scopes.items()
                                if value[0] not in {d for _, d in doomed}}
                self._ids.clear()
            with self._local_lock, immediate(self.local) as local:
                local.executemany("UPDATE data_keys SET wrapped = NULL, destroyed_at = ? "
                                  "WHERE dek_id = ? AND destroyed_at IS NULL", doomed)


# -- shipping ---------------------------------------------------------------------------


@dataclass
class ShipResult:
    shipped: int = 0
    acked_seq: int = 0
    checkpoints: int = 0
    problem: str = ""


def ship(central: Central, outbox: sqlite3.Connection, keys: sqlite3.Connection,
         chain_id: str, *, batch: int = 5000) -> ShipResult:
    """Send the next `batch` committed records of this pod's chain to the store.

    One PostgreSQL transaction: lock the chain's row, check the outbox still holds what
    was shipped last (else the pod was rolled back: refused, recorded), check each
    record links and hashes, register pending keys, insert (idempotent), advance the
    chain's shipped position and head anchor with the checkpoints now covered.

    A data directory that ran in local mode before may hold the stubs of a local
    retention sweep where records were: they ship as the store's stubs of that chain
    (the chained retention event and the signed checkpoint that vouch for them ship as
    records and checkpoints), and the chain goes on after them.
    """
    result = ShipResult()
    registered: list[str] = []
    with central.transaction() as conn:
        shipped_seq, shipped_hash, anchor_n = conn.execute(
            "SELECT shipped_seq, shipped_hash, anchor_n FROM chains WHERE chain_id = %s "
            "FOR UPDATE", (chain_id,)).fetchone()
        result.acked_seq = shipped_seq
        outbox.execute("BEGIN")  # one snapshot of the outbox
        try:
            problem = _check_continuity(outbox, shipped_seq, shipped_hash)
            if problem:
                conn.execute("INSERT INTO chain_conflicts VALUES (%s, %s, %s, %s, %s) "
                             "ON CONFLICT DO NOTHING",
                             (chain_id, shipped_seq, problem[1], time.time(), problem[0]))
                result.problem = problem[0]
                return result
            rows = outbox.execute(
                f"SELECT seq, {', '.join(_METADATA)}, payload, payload_digest, prev_hash, "  # noqa: S608 - fixed column names
                "hash FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (shipped_seq, batch)).fetchall()
            last = int(rows[-1][0]) if rows else shipped_seq
            stubs = {int(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in outbox.execute(
                "SELECT seq, hash, prev_hash, sweep FROM pruned WHERE seq > ? AND seq < ? "
                "AND sweep != 'shipped'", (shipped_seq, last))}
            checkpoints = outbox.execute(
                "SELECT n, seq, hash, time, extra, signature, public_key, prev, index_id "
                "FROM checkpoints WHERE n > ? ORDER BY n", (anchor_n,)).fetchall()
        finally:
            outbox.execute("COMMIT")
        good, bridged, result.problem = _linked(rows, stubs, shipped_seq, shipped_hash)
        if good:
            registered = _register_pending_keys(conn, keys)
            _insert_records(conn, chain_id, good)
        if bridged:
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO pruned VALUES (%s, %s, %s, %s, %s) "
                                   "ON CONFLICT DO NOTHING",
                                   [(chain_id, *stub) for stub in bridged])
        last_seq = int(good[-1][0]) if good else shipped_seq
        last_hash = str(good[-1][-1]) if good else shipped_hash
        covered = [c for c in checkpoints if c[1] <= last_seq]
        if covered:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO checkpoints (chain_id, n, seq, hash, time, extra, signature, "
                    "public_key, prev, index_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "%s) ON CONFLICT DO NOTHING", [(chain_id, *c) for c in covered])
            n, seq, hash_, when, extra, signature, public_key, link, index = covered[-1]
            newest = Anchor(n, seq, hash_, when, link, extra, signature, public_key, index)
            conn.execute("UPDATE chains SET anchor_n = %s, anchor = %s WHERE chain_id = %s "
                         "AND anchor_n < %s", (newest.n, newest.to_json(), chain_id, newest.n))
        if good:
            conn.execute("UPDATE chains SET shipped_seq = %s, shipped_hash = %s, updated = %s "
                         "WHERE chain_id = %s", (last_seq, last_hash, time.time(), chain_id))
        result.shipped, result.acked_seq, result.checkpoints = len(good), last_seq, len(covered)
    _forget_registered(keys, registered)  # only now: the store has committed them
    return result


def _linked(rows: list[Any], stubs: dict[int, tuple[str, str, str]], shipped_seq: int,
            shipped_hash: str) -> tuple[list[Any], list[tuple[int, str, str, str]], str]:
    """(the records that follow the shipped position, each linked and hashing to its
    hash; the local sweep stubs between them; why it stops early, or "")."""
    good: list[Any] = []
    bridged: list[tuple[int, str, str, str]] = []
    prev, expected, problem = shipped_hash, shipped_seq + 1, ""
    for row in rows:
        while expected < row[0] and expected in stubs and stubs[expected][1] == prev:
            hash_, prev_hash, sweep = stubs[expected]
            bridged.append((expected, hash_, prev_hash, sweep))
            prev, expected = hash_, expected + 1
        metadata = dict(zip(_METADATA, row[1:1 + len(_METADATA)], strict=True))
        digest, prev_hash, hash_ = row[-3:]
        if row[0] != expected or prev_hash != prev or \
                chain.record_hash(prev, metadata, digest) != hash_:
            problem = (f"the outbox record at seq {expected} does not verify (missing, "
                       "altered or out of order): shipping stops there")
            break
        good.append(row)
        prev, expected = hash_, expected + 1
    return good, [stub for stub in bridged if good and stub[0] < good[-1][0]], problem


def _insert_records(conn: Conn, chain_id: str, good: list[Any]) -> None:
    """Insert (idempotent); a payload whose key an erasure destroyed while the record
    waited in the outbox arrives without its bytes."""
    dek_ids = list({str(r[_METADATA.index("dek_id") + 1]) for r in good} - {""})
    destroyed = {row[0] for row in conn.execute(
        "SELECT dek_id FROM data_keys WHERE dek_id = ANY(%s) AND destroyed_at IS NOT "
        "NULL", (dek_ids,))} if dek_ids else set()
    payload_at = 1 + len(_METADATA)
    values = []
    for row in good:
        values_row = [chain_id, *row]
        if row[_METADATA.index("dek_id") + 1] in destroyed:
            values_row[1 + payload_at] = None  # erased while it waited in the outbox
        values.append(values_row)
    with conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO records ({', '.join(_RECORD_COLUMNS)}) VALUES "  # noqa: S608 - fixed column names
            f"({', '.join(['%s'] * len(_RECORD_COLUMNS))}) "
            "ON CONFLICT (chain_id, seq) DO NOTHING", values)


def _check_continuity(outbox: sqlite3.Connection, shipped_seq: int,
                      shipped_hash: str) -> tuple[str, str] | None:
    """(reason, local hash) when the outbox no longer holds what the store took last."""
    if shipped_seq == 0:
        return None
    row = outbox.execute("SELECT hash FROM records WHERE seq = ? UNION ALL SELECT hash FROM "
                         "pruned WHERE seq = ?", (shipped_seq, shipped_seq)).fetchone()
    if row is not None and row[0] == shipped_hash:
        return None
    tip = outbox.execute("SELECT MAX(seq) FROM (SELECT seq FROM records UNION ALL "
                         "SELECT seq FROM pruned)").fetchone()[0] or 0
    if row is None:
        return (f"rolled back: the pod's trail ends at seq {tip}, but the store already "
                f"holds seq {shipped_seq} of this chain (an older copy of its audit.db, or "
                "its records deleted)", f"tip:{tip}")
    return (f"rolled back or forked: the pod's record at seq {shipped_seq} differs from the "
            "one the store holds (its audit.db was replaced or rewritten)", str(row[0]))


def _register_pending_keys(conn: Conn, keys: sqlite3.Connection) -> list[str]:
    """Register keys a pod made offline before the records that use them (inside the
    caller's transaction); their ids. A key whose subject was erased after it was made
    is registered destroyed (the erasure fence)."""
    pending = keys.execute("SELECT dek_id, scope, ref, wrapped, kek_id, fingerprint, created, "
                           "destroyed_at FROM data_keys WHERE shipped = 0").fetchall()
    if not pending:
        return []
    for dek_id, scope, ref, sealed, kek_id, fingerprint, created, was_destroyed in pending:
        erased = conn.execute("SELECT MAX(time) FROM erasures WHERE subject_ref = %s",
                              (ref,)).fetchone()[0] if scope == "subject" else None
        wrapped, destroyed_at = sealed, was_destroyed
        if erased is not None and erased >= created:
            wrapped, destroyed_at = None, was_destroyed or erased
        conn.execute("INSERT INTO data_keys VALUES (%s, %s, %s, 0, %s, %s, %s, %s, %s) "
                     "ON CONFLICT (dek_id) DO NOTHING",
                     (dek_id, scope, ref, wrapped, kek_id, fingerprint, created, destroyed_at))
    return [str(row[0]) for row in pending]


def _forget_registered(keys: sqlite3.Connection, dek_ids: list[str]) -> None:
    """After the store committed them: mark the pending keys registered and drop the
    local copy, so the store is the only place a registered key lives (an erasure there
    reaches it; a copy here would outlive it while the pod is offline). Marked only
    after the commit: a commit that failed leaves them pending, registered again next
    time (idempotent), never lost."""
    from audit.store import immediate

    if not dek_ids:
        return
    with immediate(keys) as local:
        local.executemany("UPDATE data_keys SET shipped = 1, wrapped = NULL WHERE dek_id = ?",
                          [(dek_id,) for dek_id in dek_ids])


def prune_outbox(outbox: sqlite3.Connection, acked_seq: int) -> int:
    """Delete shipped records, up to the newest checkpoint the store holds; leave one
    stub where they end (the chain continues from it). Returns how many went."""
    from audit.store import immediate

    with immediate(outbox) as conn:
        row = conn.execute("SELECT MAX(seq) FROM checkpoints WHERE seq <= ?",
                           (acked_seq,)).fetchone()
        bound = int(row[0] or 0)
        if bound <= 0:
            return 0
        edge = conn.execute("SELECT hash, prev_hash FROM records WHERE seq = ?",
                            (bound,)).fetchone()
        removed = conn.execute("DELETE FROM records WHERE seq <= ?", (bound,)).rowcount
        if edge is not None:
            conn.execute("INSERT OR REPLACE INTO pruned (seq, hash, prev_hash, sweep) "
                         "VALUES (?, ?, ?, 'shipped')", (bound, edge[0], edge[1]))
        conn.execute("DELETE FROM pruned WHERE sweep = 'shipped' AND seq < ?", (bound,))
        conn.execute("DELETE FROM checkpoints WHERE n < (SELECT MAX(n) FROM checkpoints "
                     "WHERE seq <= ?)", (bound,))
    return removed


# -- the vault ---------------------------------------------------------------------------


class CentralVault:
    """The fleet's pseudonym vault: the same exchange as audit.vault.Vault, one PostgreSQL
    transaction each, serialised per conversation by an advisory lock."""

    def __init__(self, central: Central, store: AuditStore) -> None:
        self.central = central
        self.store = store

    def close(self) -> None:
        """Nothing of its own to close (the pool belongs to the sidecar)."""

    def conversation_ref(self, tenant: str, subject_id: str, conversation_id: str) -> str:
        message = json.dumps(["conversation", tenant, subject_id, conversation_id]).encode()
        return hmac.new(self.central.index_key, message, hashlib.sha256).hexdigest()

    def exchange(self, tenant: str, subject_id: str, conversation_id: str,
                 exchange: Exchange, *, ttl: float, now: float | None = None) -> Exchange:
        now = time.time() if now is None else now
        ref = self.conversation_ref(tenant, subject_id, conversation_id)
        with self.central.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 2))", (ref,))
            row = conn.execute("SELECT dek_id, sealed, expires FROM conversations WHERE "
                               "ref = %s", (ref,)).fetchone()
            update = apply_exchange(self.store, ref, row, exchange, subject_id=subject_id,
                                    tenant=tenant, now=now)
            if update is not None:
                conn.execute(
                    "INSERT INTO conversations VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (ref) DO UPDATE SET dek_id = EXCLUDED.dek_id, sealed = "
                    "EXCLUDED.sealed, entries = EXCLUDED.entries, expires = EXCLUDED.expires, "
                    "updated = EXCLUDED.updated",
                    (ref, self.store.subject_ref(subject_id), tenant, *update, now + ttl, now))
        return exchange


# -- compliance across the fleet -------------------------------------------------------


class FleetStore:
    """The compliance view of the whole store: the same operations as
    audit.store.AuditStore (records, payload, erase, hold, release, holds, sweep, verify,
    checkpoint), across every chain. Holds, erasures and sweeps are events of a
    compliance chain of their own (`admin-<key>`), signed and anchored at once by the
    operator's key (`signer`)."""

    def __init__(self, central: Central, signer: chain.Signer) -> None:
        self.central = central
        self.signer = signer
        self.kek = central.kek
        self.index_key = central.index_key
        self.chain_id = f"admin-{signer.public_hex()[:16]}"
        central.register_chain(self.chain_id, signer.public_hex(), kind="admin")
        self._index_problem: str | None = None

    def close(self) -> None:
        self.central.close()

    def subject_ref(self, subject_id: str) -> str:
        """As AuditStore.subject_ref: refuses (AuditKeyError) when the store's index key
        is not the one the pods' signed checkpoints name, since an erasure, hold or
        export by subject would silently find nothing."""
        if not subject_id:
            return ""
        if self._index_problem is None:
            with self.central.transaction() as conn:
                self._index_problem = "; ".join(index_pin_problems(conn, self.index_key))
        if self._index_problem:
            raise crypto.AuditKeyError(f"the fleet store's index key was replaced: "
                                       f"{self._index_problem}. Restore the fleet's index "
                                       "key (see README 'Fleet mode')")
        return self.central.subject_ref(subject_id)

    def trusted_keys(self) -> list[str]:
        """The keys of every registered chain (what AuditAdmin checks against)."""
        return sorted({key for _, key in self.chains()})

    def chains(self) -> list[tuple[str, str]]:
        with self.central.transaction() as conn:
            return [(str(a), str(b)) for a, b in conn.execute(
                "SELECT chain_id, public_key FROM chains ORDER BY chain_id")]

    # reading

    def records(self, where: str = "", params: tuple[Any, ...] = ()
                ) -> Iterator[dict[str, Any]]:
        """Records of every chain, oldest first. `where` is audit.export's SQL with `?`."""
        from psycopg.rows import dict_row

        sql = "SELECT * FROM records" + (f" WHERE {where.replace('?', '%s')}" if where  # noqa: S608
                                         else "") + " ORDER BY time, chain_id, seq"
        with self.central.pool.connection(timeout=self.central.timeout) as conn, \
                conn.transaction(), conn.cursor(name="export", row_factory=dict_row) as cur:
            cur.itersize = 5000
            cur.execute(sql.encode(), params)
            for row in cur:
                if row["payload"] is not None:
                    row["payload"] = bytes(row["payload"])
                yield row

    def payload(self, record: dict[str, Any]) -> bytes | None:
        if record["payload"] is None or not record["dek_id"]:
            return None
        with self.central.transaction() as conn:
            row = conn.execute("SELECT wrapped FROM data_keys WHERE dek_id = %s AND "
                               "destroyed_at IS NULL", (record["dek_id"],)).fetchone()
        if row is None or row[0] is None:
            return None
        dek = crypto.unwrap(self.kek, bytes(row[0]), record["dek_id"])
        metadata = {k: record[k] for k in _METADATA}
        return crypto.open_sealed(dek, record["payload"], _associated(metadata))

    # the compliance chain

    def _event(self, conn: Conn, kind: str, decision: str,
               tags: dict[str, str], extra: str = "") -> tuple[int, str]:
        """Chain an event in the compliance chain, sign it and anchor it, inside the
        caller's transaction: (seq, hash) of the checkpoint."""
        seq, prev, anchor_n, anchor_json = conn.execute(
            "SELECT shipped_seq, shipped_hash, anchor_n, anchor FROM chains WHERE "
            "chain_id = %s FOR UPDATE", (self.chain_id,)).fetchone()
        now = time.time()
        metadata = {"id": secrets.token_hex(16), "kind": kind, "time": now, "tenant": "",
                    "app": "", "direction": "", "decision": decision, "policy": "",
                    "revision": "", "entities": "{}", "rule_ids": "[]",
                    "tags": json.dumps(tags, sort_keys=True), "retain_until": FOREVER,
                    "subject_ref": "", "dek_id": ""}
        seq += 1
        hash_ = chain.record_hash(prev, metadata, "")
        conn.execute(f"INSERT INTO records ({', '.join(_RECORD_COLUMNS)}) VALUES "  # noqa: S608 - fixed column names
                     f"({', '.join(['%s'] * len(_RECORD_COLUMNS))})",
                     (self.chain_id, seq, *[metadata[k] for k in _METADATA], None, "", prev,
                      hash_))
        previous = Anchor.from_json(anchor_json, "store") if anchor_json else None
        n = anchor_n + 1
        link = chain.signature_digest(previous.signature) if previous else ""
        signature = self.signer.sign(chain.checkpoint_message(seq, hash_, now, extra, n=n,
                                                              prev=link))
        newest = Anchor(n, seq, hash_, now, link, extra, signature, self.signer.public_hex())
        conn.execute("INSERT INTO checkpoints VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (self.chain_id, n, seq, hash_, now, extra, signature,
                      self.signer.public_hex(), link))
        conn.execute("UPDATE chains SET shipped_seq = %s, shipped_hash = %s, anchor_n = %s, "
                     "anchor = %s, updated = %s WHERE chain_id = %s",
                     (seq, hash_, n, newest.to_json(), now, self.chain_id))
        return seq, hash_

    def checkpoint(self, extra: str = "") -> tuple[int, str]:
        """For an export's manifest: (records in the store, SHA-256 over every chain's
        head), signed into the compliance chain."""
        with self.central.transaction() as conn:
            heads = conn.execute("SELECT chain_id, shipped_seq, shipped_hash FROM chains "
                                 "ORDER BY chain_id").fetchall()
            digest = hashlib.sha256("".join(f"{c}:{s}:{h}\n" for c, s, h in heads).encode()
                                    ).hexdigest()
            count = int(sum(row[1] for row in heads))
            self._event(conn, "export", "EXPORTED", {"heads_sha256": digest,
                                                     "chains": str(len(heads))},
                        extra=f"{extra or 'export'}:{digest}")
        return count, digest

    # holds, erasure, retention

    def hold(self, scope: str, ref: str, reason: str, actor: str = SYSTEM_ACTOR) -> int:
        if scope not in ("subject", "tenant"):
            raise ValueError("a hold covers a 'subject' or a 'tenant'")
        if not ref.strip():
            raise ValueError(f"a {scope} hold needs a {scope} id (not blank)")
        if not reason.strip():
            raise ValueError("a hold needs a reason (a case number)")
        key = self.subject_ref(ref) if scope == "subject" else ref
        with self.central.transaction() as conn:
            hold_id = int(conn.execute(
                "INSERT INTO holds (scope, ref, reason, created, actor, chained, chain_id) "
                "VALUES (%s, %s, %s, %s, %s, 1, %s) RETURNING id",
                (scope, key, reason, time.time(), actor, self.chain_id)).fetchone()[0])
            self._event(conn, "hold", "ADDED", {"hold": str(hold_id), "scope": scope,
                                                "ref": key, "reason": reason, "actor": actor})
        return hold_id

    def release(self, hold_id: int, actor: str = SYSTEM_ACTOR, reason: str = "") -> bool:
        if not reason.strip():
            raise ValueError("releasing a hold needs a reason (it is recorded)")
        with self.central.transaction() as conn:
            changed = bool(conn.execute("UPDATE holds SET released = %s WHERE id = %s AND "
                                        "released IS NULL", (time.time(), hold_id)
                                        ).rowcount == 1)
            if changed:
                self._event(conn, "hold", "RELEASED", {"hold": str(hold_id), "actor": actor,
                                                       "reason": reason})
        return changed

    def rotate_kek(self, new: crypto.Kek, old: crypto.Kek | None = None, *,
                   actor: str = SYSTEM_ACTOR, reason: str = "") -> int:
        """Re-wrap every live data key of the fleet, and the fleet's index key, under
        `new` in one transaction; how many data keys. The rotation (KEK ids, who, why)
        is an event of the compliance chain, and NOTIFY drops every pod's cached keys.

        Pods still running with the old KEK cannot open re-wrapped keys: they write with
        pending keys of their own until they restart with the new KEK, and a rerun
        (still holding the old KEK) re-wraps what they registered meanwhile, as it
        leaves keys already under `new` alone. Then destroy the old KEK.
        """
        old = old or self.kek
        count = 0
        with self.central.transaction() as conn:
            rows = conn.execute("SELECT dek_id, wrapped, kek_id FROM data_keys WHERE wrapped "
                                "IS NOT NULL AND kek_id != %s FOR UPDATE", (new.id,)).fetchall()
            foreign = sorted({str(k) for _, _, k in rows} - {old.id})
            if foreign:
                raise crypto.AuditKeyError(
                    f"data keys in the store are wrapped by KEK(s) {', '.join(foreign)}, "
                    f"neither the current one ({old.id}) nor the new one ({new.id}): "
                    "nothing was re-wrapped")
            with conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE data_keys SET wrapped = %s, kek_id = %s WHERE dek_id = %s",
                    [(crypto.wrap(new, crypto.unwrap(old, bytes(wrapped), dek_id), dek_id),
                      new.id, dek_id) for dek_id, wrapped, _ in rows])
            count = len(rows)
            wrapped, kek_id = conn.execute("SELECT wrapped, kek_id FROM fleet_keys WHERE "
                                           "name = %s FOR UPDATE", (INDEX_KEY,)).fetchone()
            if kek_id != new.id:
                index_key = crypto.unwrap(old, bytes(wrapped), INDEX_KEY)
                conn.execute("UPDATE fleet_keys SET wrapped = %s, kek_id = %s WHERE name = %s",
                             (crypto.wrap(new, index_key, INDEX_KEY), new.id, INDEX_KEY))
            self._event(conn, "key", "ROTATED", {"from_kek": old.id, "to_kek": new.id,
                                                 "rewrapped": str(count), "actor": actor,
                                                 "reason": reason})
            conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        self.kek = new
        return count

    def record_access(self, actor: str, reason: str, filters: dict[str, str],
                      count: int) -> int:
        """Chain a decrypted export (who, why, filters, count) in the compliance chain."""
        with self.central.transaction() as conn:
            seq, _ = self._event(conn, "access", "EXPORTED", {
                **{f"filter_{k}": v for k, v in sorted(filters.items())},
                "records": str(count), "actor": actor, "reason": reason})
        return seq

    def holds(self) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self.central.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute("SELECT * FROM holds ORDER BY id"))

    def holds_covering(self, conn: Conn, subject_ref: str
                       ) -> list[dict[str, Any]]:
        """Active holds on the subject, or on a tenant any of their records belong to,
        tenants compared folded (audit.names.fold) as local mode and policies compare
        them: SQL's lower(btrim()) would let fullwidth `GLOBEX` or `globex<NBSP>` slip past a
        hold on `globex`. Call under `LOCK TABLE holds IN SHARE MODE` (erase does)."""
        names = ("id", "scope", "ref", "reason", "created", "actor")
        tenants = {fold(row[0]) for row in conn.execute(
            "SELECT DISTINCT tenant FROM records WHERE subject_ref = %s", (subject_ref,))}
        return [dict(zip(names, row, strict=True)) for row in conn.execute(
            "SELECT id, scope, ref, reason, created, actor FROM holds WHERE released IS NULL "
            "AND ((scope = 'subject' AND ref = %s) OR scope = 'tenant') ORDER BY id",
            (subject_ref,))
            if row[1] == "subject" or fold(row[2]) in tenants]

    def erase(self, subject_id: str, *, actor: str = SYSTEM_ACTOR, reason: str = "",
              override_hold: bool = False) -> ErasureReceipt:
        """Crypto-shred a subject fleet-wide, in one transaction: destroy their keys,
        purge their payloads and conversations, write the fence and the chained event;
        on commit every listening pod is told (NOTIFY) and drops its cached key."""
        if not subject_id.strip():
            raise ValueError("an erasure needs a subject id (not blank)")
        subject_ref = self.subject_ref(subject_id)
        with self.central.transaction() as conn:
            # A hold added meanwhile waits for this transaction (or this one for it).
            conn.execute("LOCK TABLE holds IN SHARE MODE")
            held = self.holds_covering(conn, subject_ref)
            if held and not override_hold:
                raise LegalHoldError(held)
            if held and not reason.strip():
                raise ValueError("overriding a legal hold needs a reason (it is recorded)")
            now = time.time()
            planted = foreign_triggers(conn)
            if planted:
                raise TamperedError(f"{', '.join(planted[:5])} in the fleet store: the sidecar "
                                    "makes none, so they were added by hand; nothing was "
                                    "changed (run `guardrail audit verify --store`)")
            # The keys registered to the subject and those their records name (chained):
            # a key row whose owner was edited must not survive the erasure.
            theirs = ("((scope = 'subject' AND ref = %s) OR dek_id IN (SELECT DISTINCT "
                      "dek_id FROM records WHERE subject_ref = %s AND dek_id != ''))")
            keys = conn.execute(
                f"UPDATE data_keys SET wrapped = NULL, destroyed_at = %s WHERE {theirs} "  # noqa: S608
                "AND destroyed_at IS NULL RETURNING fingerprint, version",
                (now, subject_ref, subject_ref)).fetchall()
            if conn.execute(f"SELECT count(*) FROM data_keys WHERE wrapped IS NOT NULL AND "  # noqa: S608
                            f"{theirs}", (subject_ref, subject_ref)).fetchone()[0]:
                raise TamperedError("the fleet store kept a data key live through the "
                                    "erasure: it was altered (run `guardrail audit verify "
                                    "--store`); nothing was erased")
            fence = conn.execute("SELECT COALESCE(MAX(version), 0) FROM data_keys WHERE "
                                 "scope = 'subject' AND ref = %s", (subject_ref,)).fetchone()[0]
            conversations = conn.execute("DELETE FROM conversations WHERE subject_ref = %s",
                                         (subject_ref,)).rowcount
            affected = conn.execute("UPDATE records SET payload = NULL WHERE subject_ref = %s "
                                    "AND payload IS NOT NULL", (subject_ref,)).rowcount
            fingerprints = sorted(str(k[0]) for k in keys)
            conn.execute("INSERT INTO erasures (subject_ref, time, fence_version, "
                         "keys_destroyed, actor, chain_id) VALUES (%s, %s, %s, %s, %s, %s)",
                         (subject_ref, now, fence, json.dumps(fingerprints), actor,
                          self.chain_id))
            tags = {"subject_ref": subject_ref, "records": str(affected),
                    "conversations": str(conversations), "keys": ",".join(fingerprints),
                    "actor": actor, "reason": reason}
            if held:
                tags["overrode_holds"] = ",".join(str(h["id"]) for h in held)
            seq, hash_ = self._event(conn, "erasure", "ERASED", tags,
                                     extra=f"erasure:{subject_ref}")
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, subject_ref))
        return ErasureReceipt(subject_ref, affected, fingerprints, now, seq, hash_,
                              conversations, actor, reason, [int(h["id"]) for h in held])

    def sweep(self, now: float | None = None, actor: str = SYSTEM_ACTOR) -> SweepReport:
        """Delete expired records of every chain not under a legal hold, leaving stubs;
        the chained retention event names each chain's stub digest; expired vault
        conversations go too, unless a hold covers them."""
        now = time.time() if now is None else now
        sweep_id = secrets.token_hex(8)
        held_clause = ("(EXISTS (SELECT 1 FROM holds h WHERE h.released IS NULL AND "
                       "h.scope = 'subject' AND h.ref = r.subject_ref AND "
                       "r.subject_ref != '') OR r.tenant = ANY(%s))")
        with self.central.transaction() as conn:
            # One snapshot, taken after every hold added before has committed and while
            # new ones wait: tenants are folded in Python (audit.names.fold, as local
            # mode), so what is held must not change between reading and deleting.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("LOCK TABLE holds IN SHARE MODE")
            held_tenants = _held_tenants(conn, "SELECT DISTINCT tenant FROM records WHERE "
                                         "retain_until < %s", now)
            held = conn.execute(f"SELECT COUNT(*) FROM records r WHERE retain_until < %s "  # noqa: S608
                                f"AND {held_clause}", (now, held_tenants)).fetchone()[0]
            expired = conn.execute(
                f"DELETE FROM records r WHERE retain_until < %s AND NOT {held_clause} "  # noqa: S608
                "RETURNING chain_id, seq, hash, prev_hash", (now, held_tenants)).fetchall()
            by_chain: dict[str, list[tuple[int, str, str]]] = {}
            for chain_id, seq, hash_, prev_hash in sorted(expired):
                by_chain.setdefault(chain_id, []).append((seq, hash_, prev_hash))
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO pruned VALUES (%s, %s, %s, %s, %s)",
                                   [(c, *row, sweep_id) for c, rows in by_chain.items()
                                    for row in rows])
            conversations = _purge_conversations(conn, now)
            seq = 0
            if expired or conversations:
                digests = {c: _stub_digest(rows) for c, rows in by_chain.items()}
                seq, _ = self._event(conn, "retention", "PRUNED", {
                    "removed": str(len(expired)), "held": str(held), "sweep": sweep_id,
                    "chains": json.dumps(digests, sort_keys=True),
                    "conversations": str(conversations), "actor": actor},
                    extra=f"prune:{sweep_id}:fleet")
        return SweepReport(len(expired), int(held), seq, conversations)

    # verification

    def verify(self, trusted_keys: Collection[str] | None = None, *,
               anchor_path: Path | None = None,
               expect_head: tuple[int, int, str] | None = None) -> Verification:
        """Verify every chain (audit.verify, chain by chain) plus what only the store
        knows: conflicts (a pod rolled back), a chain signed by a key other than its
        registered one or not pinned. Problems name their chain. The store holds each
        chain's anchor and shipped position: it is the external head (`expect_head` is
        for one data directory's trail)."""
        del anchor_path  # the anchors are in the store
        if expect_head is not None:
            raise ValueError("--expect-head checks one data directory's trail; with the "
                             "fleet store, the store's anchors play that role")
        return verify_fleet(self.central, trusted_keys)


def foreign_triggers(conn: Conn) -> list[str]:
    """User triggers and rules on the store's tables ("trigger NAME on TABLE"): the
    sidecar makes none; one planted by hand can copy a key aside as an erasure destroys
    it, or rewrite rows as they are written."""
    return [f"{kind} {name!r} on {table!r}" for kind, name, table in conn.execute(
        "SELECT 'trigger', t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON "
        "c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relnamespace = "
        "current_schema()::regnamespace UNION ALL SELECT 'rule', r.rulename, c.relname "
        "FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relkind = 'r' "
        "AND c.relnamespace = current_schema()::regnamespace ORDER BY 2")]


def _held_tenants(conn: Conn, tenants_sql: str, now: float) -> list[str]:
    """The tenants (as written) that `tenants_sql` names and an active tenant hold
    covers, compared folded (audit.names.fold) as local mode and policies compare them,
    for `= ANY(%s)`. Call inside the snapshot and lock the caller deletes under."""
    holds = {fold(row[0]) for row in conn.execute(
        "SELECT ref FROM holds WHERE released IS NULL AND scope = 'tenant'")}
    return [str(row[0]) for row in conn.execute(tenants_sql, (now,))
            if fold(row[0]) in holds] if holds else []


def _purge_conversations(conn: Conn, now: float) -> int:
    """Delete vault conversations past their TTL that no active hold covers (call
    under the sweep's snapshot and lock on holds)."""
    held_tenants = _held_tenants(conn, "SELECT DISTINCT tenant FROM conversations WHERE "
                                 "expires <= %s", now)
    return int(conn.execute(
        "DELETE FROM conversations c WHERE expires <= %s AND NOT c.tenant = ANY(%s) AND "
        "NOT EXISTS (SELECT 1 FROM holds h WHERE h.released IS NULL AND h.scope = "
        "'subject' AND h.ref = c.subject_ref AND c.subject_ref != '')",
        (now, held_tenants)).rowcount)


def index_pin_problems(conn: Conn, index_key: bytes) -> list[str]:
    """The chains whose newest checkpoint signed in fleet mode (after the chain was
    registered; before, a data directory ran in local mode with its own index key) names
    an index key other than the store's: the store's index key was swapped, and every
    subject lookup and erasure would silently miss. Only checkpoints whose signature
    verifies against the chain's registered key count: the store cannot forge them."""
    current = chain.index_key_id(index_key)
    problems = []
    for chain_id, public_key, n, seq, hash_, when, extra, signature, prev, index in \
            conn.execute(
                "SELECT DISTINCT ON (c.chain_id) c.chain_id, h.public_key, c.n, c.seq, c.hash, "
                "c.time, c.extra, c.signature, c.prev, c.index_id FROM checkpoints c JOIN "
                "chains h USING (chain_id) WHERE c.index_id != '' AND c.time >= h.registered "
                "ORDER BY c.chain_id, c.n DESC").fetchall():
        message = chain.checkpoint_message(seq, hash_, when, extra, n=n, prev=prev,
                                           index=index)
        if index != current and chain.verify_signature(public_key, message, signature):
            problems.append(f"chain {chain_id}: checkpoint #{n} signed index key id "
                            f"{index[:12]}, but the store's index key is {current[:12]} "
                            "(swapped in the store: subject lookups and erasures would "
                            "miss)")
    return problems


def verify_fleet(central: Central, trusted: Collection[str] | None) -> Verification:
    """One Verification for the whole store (problems prefixed with their chain)."""
    pinned = None if trusted is None else {key.lower() for key in trusted}
    with central.transaction() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        chains = conn.execute("SELECT chain_id, public_key, kind, anchor, shipped_seq, "
                              "shipped_hash FROM chains ORDER BY kind, chain_id").fetchall()
        keys = _memory(_KEY_MIGRATIONS)
        keys.executemany("INSERT INTO data_keys (dek_id, scope, ref, version, wrapped, "
                         "kek_id, fingerprint, created, destroyed_at) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(*row[:4], None if row[4] is None else b"1", *row[5:]) for row in
                          conn.execute("SELECT * FROM data_keys")])
        erasures = conn.execute("SELECT subject_ref, time, fence_version, keys_destroyed, "
                                "actor, chain_id FROM erasures ORDER BY id").fetchall()
        holds = conn.execute("SELECT id, scope, ref, reason, created, released, actor, "
                             "chained, chain_id FROM holds ORDER BY id").fetchall()
        conflicts = conn.execute("SELECT chain_id, seq, reason FROM chain_conflicts "
                                 "ORDER BY chain_id, time").fetchall()
        index_problems = index_pin_problems(conn, central.index_key)
        index_problems += [f"{thing} in the fleet store: the sidecar makes none, so it was "
                           "added by hand (a trigger can copy a destroyed key aside or "
                           "rewrite rows)" for thing in foreign_triggers(conn)]
        sweeps: dict[str, dict[str, str]] = {}  # chain -> sweep id -> digest
        shipped_problems: list[Problem] = []
        results = []
        for chain_id, public_key, kind, anchor_json, shipped_seq, shipped_hash in chains:
            db = _memory(_MIGRATIONS)
            _copy_chain(conn, db, chain_id)
            if kind == "admin":  # the holds and erasures this compliance chain recorded
                db.executemany("INSERT INTO erasures (subject_ref, time, fence_version, "
                               "keys_destroyed, actor) VALUES (?, ?, ?, ?, ?)",
                               [e[:5] for e in erasures if e[5] == chain_id])
                db.executemany("INSERT INTO holds (id, scope, ref, reason, created, released, "
                               "actor, chained) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               [h[:8] for h in holds if h[8] == chain_id])
            anchor = Anchor.from_json(anchor_json, f"store anchor of {chain_id}") \
                if anchor_json else None
            keys_for_chain = pinned if pinned is not None else {public_key}
            elsewhere = Elsewhere(anchor, f"the store's anchor of chain {chain_id}",
                                  frozenset(e[0] for e in erasures),
                                  sweeps.get(chain_id, {}))
            result = verify_trail(db, keys, _METADATA, keys_for_chain, None,
                                  elsewhere=elsewhere)
            if kind == "admin" and result.ok:
                for row in db.execute("SELECT tags FROM records WHERE kind = 'retention'"):
                    tags = json.loads(row[0])
                    for other, digest in json.loads(tags.get("chains", "{}")).items():
                        sweeps.setdefault(other, {})[tags["sweep"]] = digest
            results.append((chain_id, public_key, result))
            # The chain's shipped position is a second anchor: what the store took.
            row = db.execute("SELECT hash FROM records WHERE seq = ? UNION ALL SELECT hash "
                             "FROM pruned WHERE seq = ?", (shipped_seq, shipped_seq)).fetchone()
            if shipped_seq > result.head_seq:
                shipped_problems.append(Problem(result.head_seq + 1, (
                    f"chain {chain_id}: records {result.head_seq + 1}-{shipped_seq} are "
                    f"missing: the store took this chain up to seq {shipped_seq}, but it ends "
                    f"at {result.head_seq} (deleted in the store)"),
                    missing=(result.head_seq + 1, shipped_seq)))
            elif shipped_seq and (row is None or row[0] != shipped_hash):
                shipped_problems.append(Problem(shipped_seq, (
                    f"chain {chain_id}: seq {shipped_seq} differs from the record the store "
                    "took (rewritten in the store)")))
            db.close()
        keys.close()
    problems: list[Problem] = list(shipped_problems)
    problems += [Problem(None, problem) for problem in index_problems]
    notes: list[str] = []
    warnings: list[str] = []
    admins = {row[0] for row in chains if row[2] == "admin"}
    strays = {row[-1] for row in [*erasures, *holds]} - admins
    for chain_id in sorted(strays):
        problems.append(Problem(None, f"holds or erasures name compliance chain {chain_id}, "
                                      "which the store does not hold (inserted by hand?)"))
    for chain_id, seq, reason in conflicts:
        problems.append(Problem(int(seq), f"chain {chain_id}: {reason}"))
    for chain_id, public_key, result in results:
        if pinned is not None and public_key.lower() not in pinned:
            problems.append(Problem(None, f"chain {chain_id} is registered with key "
                                          f"{public_key[:16]}…, which is not a pinned key "
                                          "(a foreign signer)"))
        problems += [Problem(p.seq, f"chain {chain_id}: {p.reason}", p.id, p.missing)
                     for p in result.problems]
        notes += [f"chain {chain_id}: {note}" for note in result.notes]
        warnings += [f"chain {chain_id}: {warning}" for warning in result.warnings]
    first = problems[0] if problems else None
    return Verification(
        ok=not problems, checked=sum(r.checked for _, _, r in results),
        first_bad_seq=first.seq if first else None, first_bad_id=first.id if first else "",
        reason=first.reason if first else "", problems=tuple(problems),
        head_seq=sum(r.head_seq for _, _, r in results),
        signed_seq=sum(r.signed_seq for _, _, r in results),
        authenticated=pinned is not None,
        anchored=all(r.anchored for _, _, r in results), notes=tuple(notes),
        warnings=tuple(warnings))


def _memory(migrations: dict[int, list[str]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    for version in sorted(migrations):
        for statement in migrations[version]:
            db.execute(statement)
    return db


def _copy_chain(conn: Conn, db: sqlite3.Connection, chain_id: str) -> None:
    columns = ("seq", *_METADATA, "payload", "payload_digest", "prev_hash", "hash")
    insert = (f"INSERT INTO records ({', '.join(columns)}) VALUES "  # noqa: S608 - fixed names
              f"({', '.join('?' * len(columns))})")
    with conn.cursor(name=f"copy-{secrets.token_hex(4)}") as cursor:
        cursor.itersize = 10000
        cursor.execute(f"SELECT {', '.join(columns)} FROM records WHERE chain_id = %s "  # noqa: S608
                       "ORDER BY seq", (chain_id,))
        while batch := cursor.fetchmany(10000):
            db.executemany(insert, [(*row[:-4], None if row[-4] is None else bytes(row[-4]),
                                     *row[-3:]) for row in batch])
    db.executemany("INSERT INTO pruned (seq, hash, prev_hash, sweep) VALUES (?, ?, ?, ?)",
                   conn.execute("SELECT seq, hash, prev_hash, sweep FROM pruned WHERE "
                                "chain_id = %s", (chain_id,)).fetchall())
    db.executemany("INSERT INTO checkpoints (seq, hash, time, extra, signature, public_key, "
                   "n, prev, index_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   conn.execute("SELECT seq, hash, time, extra, signature, public_key, n, prev, "
                                "index_id FROM checkpoints WHERE chain_id = %s ORDER BY n",
                                (chain_id,)).fetchall())
