"""Signed exports: a manifest proves what an export file holds and when it was taken.

The manifest names the filters, the record count, the SHA-256 of the file, the chain
checkpoint it was taken against, and is signed with the audit trail's Ed25519 key, so
an auditor can check a file offline (`guardrail audit verify-export`) with nothing but
the public key.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Protocol

from audit import chain
from audit.names import fold

VERSION = "guardrail-export-v1"
# Decisions the trail holds: inspections', then events'. A filter on anything else is
# refused (it would silently export nothing).
DECISIONS = ("ALLOW", "MODIFY", "BLOCK", "ERASED", "PRUNED", "APPLIED", "REMOVED", "ADDED",
             "RELEASED", "ROTATED", "RESET", "EXPORTED")
COLUMNS = ("id", "kind", "time", "tenant", "app", "direction", "decision", "policy",
           "revision", "entities", "rule_ids", "tags", "retain_until", "subject_ref")


class Trail(Protocol):
    """What an export reads: one data directory's trail (audit.store.AuditStore) or the
    whole fleet store (audit.pgstore.FleetStore)."""

    def subject_ref(self, subject_id: str) -> str: ...

    def records(self, where: str = "", params: tuple[Any, ...] = ()
                ) -> Iterator[dict[str, Any]]: ...

    def payload(self, record: dict[str, Any]) -> bytes | None: ...


def rows(store: Trail, *, tenant: str = "", app: str = "", decision: str = "",
         policy: str = "", subject_id: str = "", since: float | None = None,
         until: float | None = None, include_payload: bool = False,
         ) -> Iterator[dict[str, Any]]:
    """Records matching every given filter, oldest first, as export rows. Times are
    RFC 3339 UTC strings; `decision` matches in any case (ValueError for one the trail
    never holds); `tenant` and `app` match folded, as policies match them (audit.names).
    """
    if decision and decision.upper() not in DECISIONS:
        raise ValueError(f"{decision[:40]!r} is not a decision: one of "
                         f"{', '.join(DECISIONS)} (any case)")
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("decision", decision.upper()), ("policy", policy)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    folded = {column: fold(value) for column, value in (("tenant", tenant), ("app", app))
              if value}
    if subject_id:
        clauses.append("subject_ref = ?")
        params.append(store.subject_ref(subject_id))
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    if until is not None:
        clauses.append("time < ?")
        params.append(until)
    for record in store.records(" AND ".join(clauses), tuple(params)):
        if any(fold(record[column]) != value for column, value in folded.items()):
            continue
        row = {column: record[column] for column in COLUMNS}
        for column in ("entities", "rule_ids", "tags"):
            row[column] = json.loads(row[column])
        for column in ("time", "retain_until"):
            row[column] = rfc3339(row[column])
        if include_payload:
            payload = store.payload(record)
            row["payload"] = _payload_value(payload) if payload else None
        yield row


def _payload_value(payload: bytes) -> Any:
    """The sidecar's payloads are JSON; anything else (written by another tool) as text."""
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace")


def manifest_for(path: Path, filters: dict[str, Any], count: int, checkpoint: tuple[int, str],
                 signer: chain.Signer) -> dict[str, Any]:
    body = {
        "version": VERSION, "file": path.name, "sha256": _sha256(path), "records": count,
        "filters": filters, "checkpoint": {"seq": checkpoint[0], "hash": checkpoint[1]},
        "created": rfc3339(time.time()), "public_key": signer.public_hex(),
    }
    return {**body, "signature": signer.sign(chain.canonical(body))}


def rfc3339(instant: float) -> str:
    """Unix seconds as an RFC 3339 UTC time with microseconds: 2026-11-22T08:01:12.5Z."""
    moment = datetime.datetime.fromtimestamp(instant, datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def verify_export(path: Path, manifest: dict[str, Any],
                  trusted: Collection[str] | str | None = None) -> str:
    """"" when `path` is what the manifest signed; otherwise what is wrong.

    `trusted`: the pinned public keys (hex). None accepts the key the manifest names,
    which proves nothing against a forger: callers must say so (the CLI does).
    """
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        return f"not a {VERSION} manifest"
    body = {k: v for k, v in manifest.items() if k != "signature"}
    pinned = {trusted} if isinstance(trusted, str) else trusted
    if pinned is not None and str(manifest.get("public_key", "")).lower() not in \
            {key.lower() for key in pinned}:
        return (f"signed by key {str(manifest.get('public_key', ''))[:16]}…, which is not "
                "the pinned key (signed by another key)")
    if not chain.verify_signature(str(manifest.get("public_key", "")), chain.canonical(body),
                                  str(manifest.get("signature", ""))):
        return "the manifest's signature is invalid"
    if _sha256(path) != manifest.get("sha256"):
        return "the file does not match the manifest's SHA-256 (altered or truncated)"
    return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
