"""One audit record per decision, committed before the answer leaves (group commit).

The servicer awaits `AuditWriter.record(...)`; a single writer thread takes everything
that queued up while it was committing and appends it in one transaction, so under load
the fsync is shared by many requests and a lone request pays one commit.

Records of one worker batch arrive together (their verdicts are settled in one event
loop pass, and the writer gets the GIL when the loop next waits), so at 16 callers on
the PII corpus a commit holds 4-5 records without any waiting (`guardrail_audit_commits`
against `guardrail_audit_records_committed`). A writer that also waited up to 2 ms for
the records of inspections still running raised that to 5-6 and saved ~0.02 CPU-ms a
record, within noise, while a lone caller beside a slow request waited the whole window:
it was taken out. Answers go back to each event loop in one callback per batch, not
one wake-up per record.

The record holds metadata in plain columns and, as the policy's `audit.payload` says,
nothing, the redacted text or the original text, encrypted (see `audit/`).

The same thread signs a checkpoint (and advances the head anchor, `keys/audit-anchor.json`)
every `CHECKPOINT_INTERVAL` seconds when records came in, every 1,000 records, and on
shutdown: the unsigned tail `verify` cannot vouch for stays a few seconds long.

Fleet mode (`store` set, see audit.pgstore): the local trail is an outbox. Data keys
come from the store through the process's `KeyRing`, and a `Shipper` thread sends
committed records and checkpoints to the store, then prunes what the store took. The
answer never waits for PostgreSQL; when it is down the outbox grows up to
`store_outbox_max_records`, then records are refused and `on_error` decides.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from audit import chain, crypto
from audit.store import AuditStore, NewRecord, OutboxFull
from sidecar.aio import settle
from sidecar.config import Settings
from sidecar.errors import AuditUnavailable, ConfigError
from sidecar.keys import load_or_create_key
from sidecar.policy.model import AuditConfig, Policy
from sidecar.types import Inspection, Verdict

if TYPE_CHECKING:
    from audit.pgstore import Central, FleetStore, KeyRing

log = logging.getLogger(__name__)
MAX_BATCH = 1024
DAY = 86400.0
CHECKPOINT_INTERVAL = 5.0  # seconds: the longest a written record stays unsigned
ANCHOR_FILE = "audit-anchor.json"
SIGNING_KEY_FILE = "audit-signing.key"


def anchor_path(data_dir: Path) -> Path:
    """Where the head anchor lives: next to the keys, outside the audit database."""
    return Path(data_dir) / "keys" / ANCHOR_FILE


def open_store(settings: Settings, *, snapshot: Path | None = None) -> AuditStore:
    """The audit store of `settings.data_dir`, with its keys (a dev KEK is made if none).

    Refuses (ConfigError) an index key other than the one the trail's checkpoints signed:
    every subject lookup would silently miss. `snapshot`: open that private copy of the
    trail (audit.store.snapshot) to read it without changing the evidence; no key is
    created and nothing is refused that `verify` should name instead.
    """
    if snapshot is not None:
        return _open_snapshot(settings, snapshot)
    keys = Path(settings.data_dir) / "keys"
    try:
        if settings.audit_kek:
            kek = crypto.Kek.from_text(settings.audit_kek)
        elif settings.audit_kek_file is not None:
            kek = crypto.Kek.from_file(Path(settings.audit_kek_file))
        elif (keys / "audit.kek").exists():
            kek = crypto.Kek.from_file(keys / "audit.kek")
        else:
            kek = crypto.Kek.create_file(keys / "audit.kek")
            log.warning("generated a DEVELOPMENT audit key-encryption key; anyone who can "
                        "read it can read the audit payloads. Mount a managed KEK "
                        "(GUARDRAIL_AUDIT_KEK_FILE or GUARDRAIL_AUDIT_KEK) in production",
                        extra={"path": str(keys / "audit.kek"), "kek_id": kek.id})
        signer = _signer(settings, keys)
        if settings.store:
            fleet = fleet_of(settings, kek, signer)
            store = AuditStore(Path(settings.data_dir) / "audit", kek, signer,
                               fleet.central.index_key,
                               anchor_path=anchor_path(Path(settings.data_dir)),
                               keyring=fleet.keyring)
            store.bound_outbox(settings.store_outbox_max_records)
            return store
        index_key = load_or_create_key(keys / "audit-index.key")
        store = AuditStore(Path(settings.data_dir) / "audit", kek, signer, index_key,
                           anchor_path=anchor_path(Path(settings.data_dir)))
    except ConnectionError as err:  # audit.pgstore.StoreUnavailable
        raise ConfigError(str(err)) from None
    except crypto.AuditKeyError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"cannot open the audit trail in {settings.data_dir}: "
                          f"{err.strerror}") from None
    except sqlite3.DatabaseError as err:  # damaged, not a database, unopenable
        raise ConfigError(f"cannot open the audit trail in {settings.data_dir}: {err}; "
                          "see README, 'When the audit database is damaged'") from None
    _check_kek(store)
    if store.index_problem:
        store.close()
        raise ConfigError(store.index_problem)
    return store


def _open_snapshot(settings: Settings, directory: Path) -> AuditStore:
    """The store over a private copy, with the data directory's keys read, never made."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sidecar.keys import read_private_file

    keys = Path(settings.data_dir) / "keys"
    try:
        kek = _kek(settings, keys, create=False)
        if settings.audit_signing_key_file is None and \
                not (keys / SIGNING_KEY_FILE).exists():
            signer = chain.Signer(Ed25519PrivateKey.generate())  # never used to sign
        else:
            signer = _signer(settings, keys)
        index_key = read_private_file(keys / "audit-index.key", "audit index key")
        store = AuditStore(directory, kek, signer, index_key,
                           anchor_path=anchor_path(Path(settings.data_dir)))
    except crypto.AuditKeyError as err:
        raise ConfigError(str(err)) from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot open the audit trail in {settings.data_dir}: "
                          f"{getattr(err, 'strerror', None) or err}") from None
    except sqlite3.DatabaseError as err:
        raise ConfigError(f"cannot open the audit trail in {settings.data_dir}: {err}; "
                          "see README, 'When the audit database is damaged'") from None
    _check_kek(store)
    return store


def _signer(settings: Settings, keys: Path) -> chain.Signer:
    """The checkpoint signing key: the mounted one (a fleet's Secret), else the data
    directory's, generated on first start."""
    if settings.audit_signing_key_file is None:
        return chain.Signer.load_or_create(keys / SIGNING_KEY_FILE)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sidecar.keys import read_private_file

    raw = read_private_file(Path(settings.audit_signing_key_file), "audit signing key")
    if len(raw) != 32:
        raise ConfigError(f"audit signing key {settings.audit_signing_key_file} must hold "
                          f"32 raw bytes, not {len(raw)}")
    return chain.Signer(Ed25519PrivateKey.from_private_bytes(raw))


class Fleet:
    """This process's link to the fleet store: one pool, one key ring (and its LISTEN
    thread), one chain id, shared by the writer, the vault and the admin service."""

    def __init__(self, central: Central, keyring: KeyRing, chain_id: str,
                 public_key: str = "") -> None:
        self.central = central
        self.keyring = keyring
        self.chain_id = chain_id
        self.public_key = public_key

    def prepare(self) -> None:
        """Before shipping after a start without the store, or an outage: migrate, check
        the index key against the pin, register this chain (StoreRefused or
        StoreUnavailable when it cannot ship yet)."""
        self.central.prepare()
        self.central.register_chain(self.chain_id, self.public_key)


_fleets: dict[tuple[str, str], Fleet] = {}
_fleets_lock = threading.Lock()
INDEX_PIN_FILE = "fleet-index.json"


def fleet_of(settings: Settings, kek: crypto.Kek, signer: chain.Signer) -> Fleet:
    """The process's Fleet for `settings.store` (made on first use: migrate, register
    this sidecar's chain, start listening for erasures).

    What is fatal at start (StoreRefused, ConfigError: exit 2) and what is retried:
    a malformed URL, a password, role or database the server refuses, a schema newer
    than this code, an index key or chain key other than the pinned one are fatal (no
    retry changes them). An unreachable store (refused, timed out, restarting) is
    retried in the background by the shipper, provided this data directory reached the
    store once before: its pin (`keys/fleet-index.json`, the fleet's index key wrapped
    by the KEK) lets it name subjects the way the fleet does. A data directory that
    never reached the store cannot, and refuses to start until it does.
    """
    from audit.pgstore import Central, KeyRing, StoreRefused, StoreUnavailable, instance_id
    from audit.store import _KEY_MIGRATIONS, open_database

    assert settings.store is not None
    key = (settings.store, str(settings.data_dir))
    with _fleets_lock:
        if key in _fleets:
            return _fleets[key]
        directory = Path(settings.data_dir)
        pin_id, pinned = _read_index_pin(directory / "keys", kek)
        try:
            central = Central(settings.store, kek, pinned=pinned)
        except StoreRefused:
            raise
        except StoreUnavailable as err:
            why = ("its pinned index key is wrapped by another KEK (rotated?), so it cannot "
                   "name subjects" if pin_id else "this data directory never reached the "
                   "fleet store, so it does not know the fleet's index key (which names "
                   "subjects in its records)")
            raise StoreUnavailable(
                f"{err}; {why}: it starts once the store answers (a sidecar that reached "
                "it once restarts without it)") from None
        if pin_id and central.ready and chain.index_key_id(central.index_key) != pin_id:
            central.close()
            raise StoreRefused(f"the fleet store's index key (id "
                               f"{chain.index_key_id(central.index_key)[:12]}) is not the one "
                               f"this sidecar pinned (id {pin_id[:12]}): a store replaced or "
                               "altered; see README 'Fleet mode'")
        if central.ready and (pinned is None or not pin_id):
            _write_index_pin(directory / "keys", kek, central.index_key)
        chain_id = settings.instance_id or instance_id(directory / "keys")
        if central.ready:
            try:
                central.register_chain(chain_id, signer.public_hex())
            except StoreRefused:
                central.close()
                raise
            except StoreUnavailable as err:  # gone again: the shipper registers it
                central.unready(str(err))
        if not central.ready:
            log.warning("fleet store unreachable at start; serving, records wait in the "
                        "outbox and ship once it answers", extra={"error": central.problem})
        (directory / "audit").mkdir(mode=0o700, parents=True, exist_ok=True)
        local = open_database(directory / "audit" / "audit-keys.db", _KEY_MIGRATIONS)
        keyring = KeyRing(central, local.conn, cache_seconds=settings.store_key_cache_seconds)
        keyring.listen()
        _fleets[key] = Fleet(central, keyring, chain_id, signer.public_hex())
        return _fleets[key]


def _read_index_pin(keys: Path, kek: crypto.Kek) -> tuple[str, bytes | None]:
    """(the pinned index key's id, the key when this KEK opens it) or ("", None).

    The id alone still pins after a KEK rotation (the key is then re-read from the
    store and re-wrapped); a file that is not ours is a configuration error."""
    import base64

    path = keys / INDEX_PIN_FILE
    try:
        data = json.loads(path.read_text())
        pin_id = str(data["index_id"])
        wrapped = base64.b64decode(str(data["wrapped"]), validate=True)
    except FileNotFoundError:
        return "", None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is unreadable or damaged ({type(err).__name__}): it pins "
                          "the fleet's index key; restore it, or delete it to pin the "
                          "store's current key at the next start") from None
    try:
        key = crypto.unwrap(kek, wrapped, "fleet-index")
    except crypto.AuditKeyError:
        return pin_id, None  # another KEK (rotated): the id still pins
    if chain.index_key_id(key) != pin_id:
        raise ConfigError(f"{path} is damaged (its key does not match its id): restore it, "
                          "or delete it to pin the store's current key at the next start")
    return pin_id, key


def _write_index_pin(keys: Path, kek: crypto.Kek, index_key: bytes) -> None:
    import base64

    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = keys / INDEX_PIN_FILE
    temporary = path.with_suffix(".tmp")
    text = json.dumps({"index_id": chain.index_key_id(index_key), "kek_id": kek.id,
                       "wrapped": base64.b64encode(crypto.wrap(kek, index_key,
                                                               "fleet-index")).decode()})
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def current_fleet(settings: Settings) -> Fleet:
    """The Fleet `open_store` made for these settings."""
    assert settings.store is not None
    return _fleets[(settings.store, str(settings.data_dir))]


def open_fleet_store(settings: Settings, *,
                     rotating_to: crypto.Kek | None = None) -> FleetStore:
    """The compliance view of the whole store (CLI `--store`, AuditAdmin in fleet mode),
    its events signed with this data directory's (or the mounted) signing key.
    `rotating_to`: the new KEK of a `rotate-kek --store` (a rerun finds the index key
    already under it)."""
    from audit.pgstore import Central, FleetStore

    assert settings.store is not None
    keys = Path(settings.data_dir) / "keys"
    try:
        kek = _kek(settings, keys, create=False)
        return FleetStore(Central(settings.store, kek, pool_size=2, rotating_to=rotating_to),
                          _signer(settings, keys))
    except crypto.AuditKeyError as err:
        raise ConfigError(str(err)) from None
    except ConnectionError as err:
        raise ConfigError(str(err)) from None


class LazyFleetStore:
    """AuditAdmin's FleetStore, opened at its first use rather than at start: a pod must
    start, and answer inspections, while the store is down. An admin call made meanwhile
    fails with the store's reason (StoreUnavailable); the next one tries again."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: FleetStore | None = None
        self._lock = threading.Lock()

    def _open(self) -> FleetStore:
        from audit.pgstore import StoreUnavailable

        with self._lock:
            if self._store is None:
                try:
                    self._store = open_fleet_store(self._settings)
                except ConfigError as err:
                    raise StoreUnavailable(str(err)) from None
            return self._store

    def __getattr__(self, name: str) -> object:
        return getattr(self._open(), name)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()


def _kek(settings: Settings, keys: Path, *, create: bool) -> crypto.Kek:
    if settings.audit_kek:
        return crypto.Kek.from_text(settings.audit_kek)
    if settings.audit_kek_file is not None:
        return crypto.Kek.from_file(Path(settings.audit_kek_file))
    if (keys / "audit.kek").exists() or not create:
        return crypto.Kek.from_file(keys / "audit.kek")
    return crypto.Kek.create_file(keys / "audit.kek")


class Shipper:
    """Sends the outbox to the fleet store, in order, and prunes what it took (a thread).

    Every `interval` seconds (at once while a full batch was shipped), one
    `audit.pgstore.ship` transaction; then the outbox is pruned up to the newest
    checkpoint the store holds. While PostgreSQL is unreachable it retries every
    `retry` seconds; `up`, `problem` and the counters feed the metrics.
    """

    def __init__(self, store: AuditStore, fleet: Fleet, *, interval: float = 0.2,
                 batch: int = 5000, retry: float = 1.0) -> None:
        from audit.store import _KEY_MIGRATIONS, _MIGRATIONS, open_database

        self.store = store
        self.fleet = fleet
        self.interval = interval
        self.batch = batch
        self.retry = retry
        self.outbox = open_database(store.directory / "audit.db", _MIGRATIONS).conn
        self.keys = open_database(store.directory / "audit-keys.db", _KEY_MIGRATIONS).conn
        self.up = False
        self.problem = ""
        self.shipped = 0
        self.failures = 0
        self.acked_seq = 0
        self._pruned_to = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-shipper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from audit.pgstore import StoreRefused

        while not self._stop.is_set():
            wait = self.interval
            try:
                if not self.fleet.central.ready:
                    self.fleet.prepare()
                if self.ship_once() >= self.batch:
                    wait = 0.0
            except StoreRefused as err:  # answered, but not a store this pod may use
                if str(err) != self.problem:
                    log.error("fleet store refused; records wait in the outbox",
                              extra={"error": str(err), "outbox": self.store.outbox_records})
                self.fleet.central.unready(str(err))
                self.up = False
                self.problem = str(err)
                self.failures += 1
                wait = self.retry * 5
            except ConnectionError as err:  # StoreUnavailable: PostgreSQL down
                if self.up or not self.failures:
                    log.warning("fleet store unreachable; records wait in the outbox",
                                extra={"error": str(err), "outbox": self.store.outbox_records})
                # The store that comes back may not be the one that left (restored from
                # a backup, another schema): migrate and check the pin again first.
                self.fleet.central.unready(str(err))
                self.up = False
                self.failures += 1
                wait = self.retry
            except Exception as err:
                log.error("audit shipping failed", extra={"error_type": type(err).__name__})
                self.failures += 1
                wait = self.retry
            self._stop.wait(wait)

    def ship_once(self) -> int:
        """One shipping transaction and the pruning after it; records shipped."""
        from audit.pgstore import prune_outbox, ship

        result = ship(self.fleet.central, self.outbox, self.keys, self.fleet.chain_id,
                      batch=self.batch)
        if not self.up:
            log.info("fleet store reachable; shipping", extra={"chain": self.fleet.chain_id})
        self.up = True
        if result.problem and result.problem != self.problem:
            log.error("audit shipping refused", extra={"chain": self.fleet.chain_id,
                                                       "reason": result.problem})
        self.problem = result.problem
        self.shipped += result.shipped
        self.acked_seq = result.acked_seq
        # Pruning goes up to the newest checkpoint the store has taken, which may come
        # after the records it covers (checkpoints are signed every few seconds): look
        # again whenever a newer one is there, not only when more records shipped, or an
        # idle pod keeps them, and one at its outbox bound refuses for good.
        row = self.outbox.execute("SELECT MAX(seq) FROM checkpoints WHERE seq <= ?",
                                  (result.acked_seq,)).fetchone()
        bound = int(row[0] or 0)
        if bound > self._pruned_to:
            self.store.outbox_shipped(prune_outbox(self.outbox, result.acked_seq))
            self._pruned_to = bound
        return result.shipped

    def close(self, drain: float = 5.0) -> None:
        """Stop; first ship what is left for up to `drain` seconds (the final checkpoint)."""
        self._stop.set()
        self._thread.join(timeout=30)
        deadline = time.monotonic() + drain
        with contextlib.suppress(Exception):
            if not self.fleet.central.ready:
                self.fleet.prepare()
            while time.monotonic() < deadline and self.ship_once() > 0:
                pass
        self.outbox.close()
        self.keys.close()


def _check_kek(store: AuditStore) -> None:
    """Refuse to start with a KEK that does not open the keys already in the store.

    Wrong only when none of them opens: one key whose wrapped bytes were tampered with
    is not a wrong KEK, and `verify` must get to name it (with its subject)."""
    rows = store.keys.conn.execute(
        "SELECT dek_id, wrapped FROM data_keys WHERE wrapped IS NOT NULL ORDER BY rowid DESC "
        "LIMIT 64").fetchall()
    for dek_id, wrapped in rows:
        try:
            crypto.unwrap(store.kek, bytes(wrapped), str(dek_id))
            return
        except (crypto.AuditKeyError, TypeError, ValueError):
            continue
    if rows:
        raise ConfigError(f"the audit KEK (id {store.kek.id}) does not open the data "
                          "keys in this audit trail: wrong key file or env var")


def build_record(inspection: Inspection, verdict: Verdict, config: AuditConfig,
                 now: float, extra_tags: dict[str, str] | None = None) -> NewRecord:
    payload: bytes | None = None
    if config.payload != "none":
        messages = inspection.messages if config.payload == "original" else verdict.messages
        payload = json.dumps({
            "request_id": inspection.request_id, "conversation_id": inspection.conversation_id,
            "payload": config.payload,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "findings": [[f.entity_type, f.start, f.end, f.action, f.message_index]
                         for f in verdict.findings],
            "violations": [[v.rule_id, v.start, v.end, v.message_index]
                           for v in verdict.violations],
            "restored": list(verdict.restored),
        }, ensure_ascii=False).encode()
    days = getattr(config.retention_days, verdict.decision.name.lower())
    tags = dict(verdict.routing_tags)
    if verdict.would_block or verdict.would_modify:
        tags["would"] = "block" if verdict.would_block else "modify"
    tags.update(extra_tags or {})
    tags["request_id"] = inspection.request_id  # the sidecar makes one when the app did not
    return NewRecord(
        tenant=inspection.tenant, app=inspection.app, direction=inspection.direction.value,
        decision=verdict.decision.name, policy=verdict.policy, revision=verdict.policy_revision,
        entities=dict(Counter(f.entity_type for f in verdict.findings)),
        rule_ids=[v.rule_id for v in verdict.violations], tags=tags,
        retain_until=now + days * DAY, subject_id=inspection.subject_id, payload=payload)


def policy_change_record(name: str, old: str, new: str, file_hash: str) -> NewRecord:
    """The audit record of a policy change (kept for good, like other events)."""
    from audit.store import FOREVER

    return NewRecord(kind="policy", decision="APPLIED" if new else "REMOVED", policy=name,
                     revision=new, retain_until=FOREVER,
                     tags={"previous_revision": old, "file_sha256": file_hash,
                           "actor": "policy-reload", "reason": "policy files changed"})


class _LoopWaiter:
    """Who waits for a record on an event loop: settled with the rest of its batch in one
    `call_soon_threadsafe` (one wake-up of the loop per batch, not per record)."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[str]) -> None:
        self.loop = loop
        self.future = future


# Who waits for a record: a coroutine on an event loop, or a thread (`record_event`).
Waiter = _LoopWaiter | Callable[[str | BaseException], None]


def _settle_all(pairs: list[tuple[asyncio.Future[str], str | BaseException]]) -> None:
    for future, outcome in pairs:
        settle(future, outcome)


class AuditWriter:
    def __init__(self, store: AuditStore, policy_of: Callable[[str], Policy | None], *,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL) -> None:
        self.store = store
        self.policy_of = policy_of
        self.checkpoint_interval = checkpoint_interval
        # Each entry: the record, and how to hand its id (or the failure) to whoever waits.
        self._queue: deque[tuple[NewRecord, Waiter]] = deque()
        self._cond = threading.Condition()
        self.batches = 0  # transactions committed (metrics: records per commit)
        self.committed = 0
        self._closing = False
        self.failures = 0  # records that could not be written (metrics)
        self.shipper: Shipper | None = None  # fleet mode: started by start_shipping
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def record(self, inspection: Inspection, verdict: Verdict,
                     extra_tags: dict[str, str] | None = None) -> str:
        """Commit the decision's record; its id. Raises AuditUnavailable when the policy
        fails closed and the write failed; returns "" when it fails open."""
        policy = self.policy_of(verdict.policy)
        config = policy.audit if policy is not None else AuditConfig()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        try:
            # A record that cannot be built (a string that is not Unicode: the doors
            # refuse those, this is the fallback) is a record not written: on_error says.
            try:
                record = build_record(inspection, verdict, config, time.time(), extra_tags)
            except ValueError as err:
                raise OSError(errno.EIO, os.strerror(errno.EIO)) from err
            self._enqueue(record, _LoopWaiter(loop, future))
            return await future
        except OSError as err:
            if policy is not None and policy.on_error == "allow":
                log.error("audit record not written; answering anyway (on_error=allow)",
                          extra={"request_id": inspection.request_id,
                                 "error": _reason(err)})
                return ""
            raise AuditUnavailable(
                "the decision could not be recorded in the audit trail "
                f"({_reason(err)}); "
                "the policy fails closed") from None

    def record_event(self, record: NewRecord, timeout: float = 30) -> str:
        """Write a non-inspection record (a policy change) from any thread; its id."""
        done: concurrent.futures.Future[str] = concurrent.futures.Future()

        def hand_over(outcome: str | BaseException) -> None:
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

        self._enqueue(record, hand_over)
        return done.result(timeout=timeout)

    def start_shipping(self, fleet: Fleet) -> Shipper:
        """Fleet mode: ship this writer's outbox to the store from now on."""
        self.shipper = Shipper(self.store, fleet)
        return self.shipper

    @property
    def queued(self) -> int:
        """Records handed over and not yet committed."""
        return len(self._queue)

    def _enqueue(self, record: NewRecord, hand_over: Waiter) -> None:
        with self._cond:
            self._queue.append((record, hand_over))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self.store.close()  # writes a final signed checkpoint
        if self.shipper is not None:  # then ships it, if the store is reachable
            self.shipper.close()

    def _run(self) -> None:
        due = time.monotonic() + self.checkpoint_interval
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    if time.monotonic() >= due:
                        break
                    self._cond.wait(max(0.0, due - time.monotonic()))
                if not self._queue and self._closing:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            if time.monotonic() >= due:
                self._checkpoint()
                due = time.monotonic() + self.checkpoint_interval
            if not batch:
                continue
            try:
                self._write(batch)
            except Exception as err:  # a bug of ours: this thread must outlive it
                log.error("audit writer failed a batch", extra={
                    "records": len(batch), "error_type": type(err).__name__})
                self.failures += len(batch)
                with contextlib.suppress(Exception):  # whoever is still waiting is told
                    self._settle(batch, [OSError(errno.EIO, os.strerror(errno.EIO))]
                                 * len(batch))

    def _append(self, records: list[NewRecord]) -> list[str | BaseException]:
        """Commit `records` in one transaction; their ids."""
        ids: list[str | BaseException] = list(self.store.append(records))
        self.batches += 1
        self.committed += len(records)
        return ids

    def _alone(self, record: NewRecord) -> str | BaseException:
        try:
            return self._append([record])[0]
        except Exception as err:
            return _failure(err)

    def _checkpoint(self) -> None:
        """Sign the head if records came in since the last signature (timer)."""
        if not self.store.records_since_checkpoint:
            return
        try:
            self.store.checkpoint()
        except Exception as err:  # a broken chain or disk: the next write will say too
            log.error("audit checkpoint failed", extra={"error_type": type(err).__name__})

    def _write(self, batch: list[tuple[NewRecord, Waiter]]) -> None:
        outcomes: list[str | BaseException]
        try:
            outcomes = self._append([record for record, _ in batch])
        except Exception as err:  # disk full, database locked or damaged, ...
            if len(batch) > 1 and not isinstance(err, (OSError, sqlite3.Error)):
                # One record the store refuses must not fail the others it shared the
                # transaction with (other callers', whose answers wait for theirs): write
                # them one by one, and only the records that fail alone fail. Not after
                # a disk or database error: it fails every record alike, and a commit
                # whose sync failed may have landed, so writing again could record a
                # decision twice.
                outcomes = [self._alone(record) for record, _ in batch]
            else:
                outcomes = [_failure(err)] * len(batch)
            failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            self.failures += len(failed)
            log.error("audit batch failed", extra={
                "records": len(batch), "failed": len(failed), "error_type": type(err).__name__,
                "error": _reason(err) if isinstance(err, OSError) else type(err).__name__})
        self._settle(batch, outcomes)

    @staticmethod
    def _settle(batch: list[tuple[NewRecord, Waiter]],
                outcomes: list[str | BaseException]) -> None:
        """Hand each waiter its record's id or failure (one wake-up per event loop)."""
        by_loop: dict[asyncio.AbstractEventLoop,
                      list[tuple[asyncio.Future[str], str | BaseException]]] = {}
        for (_, hand_over), outcome in zip(batch, outcomes, strict=True):
            if isinstance(hand_over, _LoopWaiter):
                by_loop.setdefault(hand_over.loop, []).append((hand_over.future, outcome))
            else:
                hand_over(outcome)
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle_all, pairs)


def _failure(err: Exception) -> OSError:
    """What a caller waiting for a record is handed when it could not be written."""
    if isinstance(err, OSError):
        return err
    code = errno.ENOSPC if "full" in str(err) else errno.EIO
    return OSError(code, os.strerror(code))


def _reason(err: OSError) -> str:
    """What went wrong, in words safe to show: never a path or a value."""
    if isinstance(err, OutboxFull):
        return str(err)
    if err.errno == errno.ENOENT and err.strerror and "audit database" in err.strerror:
        return err.strerror  # deleted or replaced under us: say so, and what to do
    return os.strerror(err.errno) if err.errno else "I/O error"
