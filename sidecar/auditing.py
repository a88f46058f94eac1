"""One audit record per decision, committed before the answer leaves (group commit).

The servicer awaits `AuditWriter.record(...)`; a single writer thread takes everything
that queued up while it was committing and appends it in one transaction, so under load
the fsync is shared by many requests and a lone request pays one commit. The record
holds metadata in plain columns and, as the policy's `audit.payload` says, nothing, the
redacted text or the original text, encrypted (see `audit/`).

The same thread signs a checkpoint (and advances the head anchor, `keys/audit-anchor.json`)
every `CHECKPOINT_INTERVAL` seconds when records came in, every 1,000 records, and on
shutdown: the unsigned tail `verify` cannot vouch for stays a few seconds long.
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

from audit import chain, crypto
from audit.store import AuditStore, NewRecord
from sidecar.aio import settle
from sidecar.config import Settings
from sidecar.errors import AuditUnavailable, ConfigError
from sidecar.keys import load_or_create_key
from sidecar.policy.model import AuditConfig, Policy
from sidecar.types import Inspection, Verdict

log = logging.getLogger(__name__)
MAX_BATCH = 1024
DAY = 86400.0
CHECKPOINT_INTERVAL = 5.0  # seconds: the longest a written record stays unsigned
ANCHOR_FILE = "audit-anchor.json"
SIGNING_KEY_FILE = "audit-signing.key"


def anchor_path(data_dir: Path) -> Path:
    """Where the head anchor lives: next to the keys, outside the audit database."""
    return Path(data_dir) / "keys" / ANCHOR_FILE


def open_store(settings: Settings) -> AuditStore:
    """The audit store of `settings.data_dir`, with its keys (a dev KEK is made if none)."""
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
        signer = chain.Signer.load_or_create(keys / SIGNING_KEY_FILE)
        index_key = load_or_create_key(keys / "audit-index.key")
        store = AuditStore(Path(settings.data_dir) / "audit", kek, signer, index_key,
                           anchor_path=anchor_path(Path(settings.data_dir)))
    except crypto.AuditKeyError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"cannot open the audit trail in {settings.data_dir}: "
                          f"{err.strerror}") from None
    except sqlite3.DatabaseError as err:  # damaged, not a database, unopenable
        raise ConfigError(f"cannot open the audit trail in {settings.data_dir}: {err}; "
                          "see README, 'When the audit database is damaged'") from None
    _check_kek(store)
    return store


def _check_kek(store: AuditStore) -> None:
    """Refuse to start with a KEK that does not open the keys already in the store."""
    row = store.keys.conn.execute(
        "SELECT dek_id, wrapped FROM data_keys WHERE wrapped IS NOT NULL LIMIT 1").fetchone()
    if row is not None:
        try:
            crypto.unwrap(store.kek, row[1], row[0])
        except crypto.AuditKeyError:
            raise ConfigError(f"the audit KEK (id {store.kek.id}) does not open the data "
                              "keys in this audit trail: wrong key file or env var") from None


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


class AuditWriter:
    def __init__(self, store: AuditStore, policy_of: Callable[[str], Policy | None], *,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL) -> None:
        self.store = store
        self.policy_of = policy_of
        self.checkpoint_interval = checkpoint_interval
        # Each entry: the record, and how to hand its id (or the failure) to whoever waits.
        self._queue: deque[tuple[NewRecord, Callable[[str | BaseException], None]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.failures = 0  # records that could not be written (metrics)
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

        def hand_over(outcome: str | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, future, outcome)

        self._enqueue(build_record(inspection, verdict, config, time.time(), extra_tags),
                      hand_over)
        try:
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

    @property
    def queued(self) -> int:
        """Records handed over and not yet committed."""
        return len(self._queue)

    def _enqueue(self, record: NewRecord,
                 hand_over: Callable[[str | BaseException], None]) -> None:
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
            self._write(batch)

    def _checkpoint(self) -> None:
        """Sign the head if records came in since the last signature (timer)."""
        if not self.store.records_since_checkpoint:
            return
        try:
            self.store.checkpoint()
        except Exception as err:  # a broken chain or disk: the next write will say too
            log.error("audit checkpoint failed", extra={"error_type": type(err).__name__})

    def _write(self, batch: list[tuple[NewRecord, Callable[[str | BaseException], None]]]
               ) -> None:
        outcomes: list[str | BaseException]
        try:
            outcomes = list(self.store.append([item[0] for item in batch]))
        except Exception as err:  # disk full, database locked or damaged, ...
            self.failures += len(batch)
            log.error("audit batch failed", extra={
                "records": len(batch), "error_type": type(err).__name__,
                "error": _reason(err) if isinstance(err, OSError) else type(err).__name__})
            code = errno.ENOSPC if "full" in str(err) else errno.EIO
            failure = err if isinstance(err, OSError) else OSError(code,
                                                                   os.strerror(code))
            outcomes = [failure] * len(batch)
        for (_, hand_over), outcome in zip(batch, outcomes, strict=True):
            hand_over(outcome)


def _reason(err: OSError) -> str:
    """What went wrong, in words safe to show: never a path or a value."""
    if err.errno == errno.ENOENT and err.strerror and "audit database" in err.strerror:
        return err.strerror  # deleted or replaced under us: say so, and what to do
    return os.strerror(err.errno) if err.errno else "I/O error"
