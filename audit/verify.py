"""`verify`: is this trail complete and unaltered, as far as its signatures reach?

What is checked, and why each check exists (every one is attacked in
tests/redteam/test_audit_attacks.py):

- Checkpoints: each signature is valid, and (when the caller pins keys) made by a pinned
  key: otherwise anyone could delete the checkpoints, or re-sign them with a fresh key,
  after rewriting the chain. v2 checkpoints are numbered and link to the previous one,
  so deleting one breaks their own chain.
- The head anchor (audit.anchor, outside the database) names the newest checkpoint: an
  older copy of audit.db, a truncated WAL, or deleted newest records and checkpoints
  leave the database behind its anchor, and the missing range is named.
- The records: every sequence number from 1 to the head is a record or a retention stub;
  each record links to the previous one and hashes to its stored hash; each checkpoint
  matches the record it signs. A gap is named as a range.
- Retention stubs are covered by a signed checkpoint and by the chained retention event
  that removed them (digest and count), so a deletion cannot pass as pruning.
- A payload set to NULL needs a later chained erasure event for its subject.
- Side tables agree with the chain: every hold added or released, every erasure, is a
  chained event, and the table rows must match them (deleting a hold row, which would
  let a sweep or an erasure through, is found). Keys an erasure destroyed must still be
  destroyed in audit-keys.db, and every record's data key must exist there (an older
  copy of audit-keys.db put back revives erased keys or lacks newer ones).

What it cannot prove is in the README: the records after the newest checkpoint (the
unsigned tail, reported) and anything an attacker who holds the signing key *and* can
rewrite the anchor does.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import anchor as anchor_file
from audit import chain

MAX_PROBLEMS = 100


@dataclass(frozen=True)
class Problem:
    """One thing `verify` found wrong: where (seq, and id for a record) and what."""

    seq: int | None
    reason: str
    id: str = ""
    missing: tuple[int, int] | None = None  # a range of sequence numbers that is gone

    def describe(self) -> str:
        where = "-" if self.seq is None else str(self.seq)
        return f"seq={where} id={self.id or '-'}: {self.reason}"


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    first_bad_id: str = ""
    reason: str = ""
    problems: tuple[Problem, ...] = ()
    head_seq: int = 0  # the newest sequence number the trail holds (record or stub)
    signed_seq: int = 0  # the newest sequence number a valid checkpoint signs
    authenticated: bool = False  # checkpoints were checked against pinned keys
    anchored: bool = False  # a head anchor was found and checked
    notes: tuple[str, ...] = ()  # facts worth telling (unsigned tail, anchor resets...)

    @property
    def unsigned(self) -> int:
        """Records after the newest signed checkpoint: not yet covered by a signature."""
        return max(0, self.head_seq - self.signed_seq)


@dataclass
class _Checkpoint:
    n: int | None
    seq: int
    hash: str
    time: float
    extra: str
    signature: str
    public_key: str
    prev: str

    def message(self) -> bytes:
        return chain.checkpoint_message(self.seq, self.hash, self.time, self.extra,
                                        n=self.n, prev=self.prev)

    def name(self) -> str:
        return f"checkpoint #{self.n}" if self.n is not None else "a v1 checkpoint"


@dataclass
class _State:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, seq: int | None, reason: str, id_: str = "",
            missing: tuple[int, int] | None = None) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(seq, reason, id_, missing))


@dataclass(frozen=True)
class Elsewhere:
    """What a fleet store knows outside one chain (audit.pgstore): the chain's head
    anchor as the store registered it, subjects erased by a compliance chain (their
    payloads may be gone from any chain), and the stub digests that verified retention
    events of a compliance chain vouch for, per sweep id."""

    anchor: anchor_file.Anchor | None
    anchor_name: str
    erased: frozenset[str] = frozenset()
    sweeps: dict[str, str] = field(default_factory=dict)


def verify_trail(db: sqlite3.Connection, keys: sqlite3.Connection,
                 columns: tuple[str, ...], trusted: Collection[str] | None,
                 anchor_path: Path | None, *, elsewhere: Elsewhere | None = None
                 ) -> Verification:
    """Check everything listed in the module docstring, in one read transaction."""
    state = _State()
    pinned = None if trusted is None else {key.lower() for key in trusted}
    # The anchor first: it is written after its checkpoint commits, so the snapshot
    # below always holds what it names.
    anchor: anchor_file.Anchor | None = None
    if elsewhere is not None:
        anchor = elsewhere.anchor
    elif anchor_path is not None:
        try:
            anchor = anchor_file.read(anchor_path)
        except anchor_file.AnchorError as err:
            state.add(None, str(err))
    db.execute("BEGIN")
    try:
        result = _verify(db, keys, columns, pinned, anchor_path, anchor=anchor, state=state,
                         elsewhere=elsewhere)
    finally:
        db.execute("COMMIT")
    return result


def _verify(db: sqlite3.Connection, keys: sqlite3.Connection, columns: tuple[str, ...],
            pinned: set[str] | None, anchor_path: Path | None, *,
            anchor: anchor_file.Anchor | None, state: _State,
            elsewhere: Elsewhere | None = None) -> Verification:
    valid = _checkpoints(db, pinned, state)
    if elsewhere is not None:
        _anchor(Path(elsewhere.anchor_name), anchor, valid, pinned, state)
    elif anchor_path is not None:
        _anchor(anchor_path, anchor, valid, pinned, state)
    signed: dict[int, list[_Checkpoint]] = {}
    for checkpoint in valid:
        signed.setdefault(checkpoint.seq, []).append(checkpoint)
    if anchor is not None and (pinned is None or anchor.public_key in pinned):
        signed.setdefault(anchor.seq, []).append(_Checkpoint(
            anchor.n, anchor.seq, anchor.hash, anchor.time, anchor.extra, anchor.signature,
            anchor.public_key, anchor.prev))
    walk = _walk(db, columns, signed, valid, state, elsewhere=elsewhere)
    head = walk["head"]
    # Whatever a signature names beyond the head is gone.
    beyond = [(c.seq, f"the signed {c.name()}") for c in valid if c.seq > head]
    if anchor is not None and anchor.seq > head:
        beyond.append((anchor.seq, f"the head anchor (checkpoint #{anchor.n})"))
    if beyond:
        last, who = max(beyond)
        state.add(head + 1, f"records {head + 1}-{last} are missing: {who} names seq "
                  f"{last}, but the trail ends at {head} (deleted, truncated, or an older "
                  "copy of audit.db)", missing=(head + 1, last))
    _side_tables(db, keys, walk, state)
    signed_seq = max((c.seq for c in valid if c.seq <= head), default=0)
    if head > signed_seq:
        state.notes.append(f"{head - signed_seq} record(s) after the newest signed "
                           f"checkpoint (seq {signed_seq + 1}-{head}) are not yet signed")
    problems = sorted(state.problems, key=lambda p: (p.seq is None, p.seq or 0))
    first = problems[0] if problems else None
    return Verification(
        ok=not problems, checked=walk["checked"],
        first_bad_seq=first.seq if first else None, first_bad_id=first.id if first else "",
        reason=first.reason if first else "", problems=tuple(problems), head_seq=head,
        signed_seq=signed_seq, authenticated=pinned is not None,
        anchored=anchor is not None, notes=tuple(state.notes))


def _checkpoints(db: sqlite3.Connection, pinned: set[str] | None,
                 state: _State) -> list[_Checkpoint]:
    """Checkpoints whose signature holds (and by a pinned key); problems for the rest."""
    rows = [_Checkpoint(*row) for row in db.execute(
        "SELECT n, seq, hash, time, extra, signature, public_key, prev FROM checkpoints "
        "ORDER BY n IS NOT NULL, n, rowid")]
    valid = []
    expected, previous = 1, None
    for checkpoint in rows:
        if not chain.verify_signature(checkpoint.public_key, checkpoint.message(),
                                      checkpoint.signature):
            state.add(checkpoint.seq, f"{checkpoint.name()} (seq {checkpoint.seq}): its "
                      "signature is invalid")
            continue
        if pinned is not None and checkpoint.public_key.lower() not in pinned:
            state.add(checkpoint.seq, f"{checkpoint.name()} (seq {checkpoint.seq}) is signed "
                      f"by key {checkpoint.public_key[:16]}…, which is not a pinned key "
                      "(substituted signing key?)")
            continue
        if checkpoint.n is not None:
            if checkpoint.n != expected:
                state.add(checkpoint.seq, f"checkpoint #{expected}"
                          f"{'-#' + str(checkpoint.n - 1) if checkpoint.n - 1 > expected else ''}"
                          f" is missing (deleted): #{checkpoint.n} at seq {checkpoint.seq} "
                          f"follows #{expected - 1}")
            elif checkpoint.prev != (chain.signature_digest(previous.signature)
                                     if previous is not None else ""):
                state.add(checkpoint.seq, f"checkpoint #{checkpoint.n} does not link to "
                          f"checkpoint #{checkpoint.n - 1} (replaced?)")
            if previous is not None and checkpoint.seq < previous.seq:
                state.add(checkpoint.seq, f"checkpoint #{checkpoint.n} signs seq "
                          f"{checkpoint.seq}, before #{previous.n}'s seq {previous.seq}")
            expected, previous = checkpoint.n + 1, checkpoint
        valid.append(checkpoint)
    return valid


def _anchor(path: Path, anchor: anchor_file.Anchor | None, valid: list[_Checkpoint],
            pinned: set[str] | None, state: _State) -> None:
    numbered = {c.n: c for c in valid if c.n is not None}
    if anchor is None:
        if numbered:
            state.add(None, f"the head anchor {path} is missing, but this trail has signed "
                      "checkpoints: it was deleted, or audit.db comes from elsewhere "
                      "(give the right one with --anchor)")
        else:
            state.notes.append(f"no head anchor at {path} yet (nothing signed so far)")
        return
    message = chain.checkpoint_message(anchor.seq, anchor.hash, anchor.time, anchor.extra,
                                       n=anchor.n, prev=anchor.prev)
    if not chain.verify_signature(anchor.public_key, message, anchor.signature):
        state.add(anchor.seq, f"the head anchor {path}: its signature is invalid")
        return
    if pinned is not None and anchor.public_key.lower() not in pinned:
        state.add(anchor.seq, f"the head anchor {path} is signed by key "
                  f"{anchor.public_key[:16]}…, which is not a pinned key")
        return
    top = max(numbered, default=0)
    if anchor.n > top:
        state.add(anchor.seq, f"checkpoint #{top + 1}"
                  f"{'-#' + str(anchor.n) if anchor.n > top + 1 else ''} named by the head "
                  f"anchor (seq {anchor.seq}) is missing from audit.db: its newest "
                  "checkpoints were deleted, or it is an older copy (rolled back)")
    elif numbered[anchor.n].signature != anchor.signature:
        state.add(anchor.seq, f"checkpoint #{anchor.n} differs from the head anchor: "
                  "audit.db was replaced or rewritten")


def _walk(db: sqlite3.Connection, columns: tuple[str, ...],
          signed: dict[int, list[_Checkpoint]], valid: list[_Checkpoint],
          state: _State, *, elsewhere: Elsewhere | None = None) -> dict[str, Any]:
    """Records and stubs in order, from 1 to the head."""
    stubs = {row[0]: (row[1], row[2], row[3]) for row in db.execute(
        "SELECT seq, hash, prev_hash, sweep FROM pruned")}
    erased_after: dict[str, int] = {}  # subject_ref -> seq of its latest erasure event
    for ref in elsewhere.erased if elsewhere is not None else ():
        erased_after[ref] = 1 << 62  # erased by the fleet's compliance chain
    for seq, tags in db.execute("SELECT seq, tags FROM records WHERE kind = 'erasure'"):
        ref = _tags(tags).get("subject_ref", "")
        erased_after[ref] = max(erased_after.get(ref, 0), seq)
    events: list[tuple[int, str, str, dict[str, str]]] = []
    dek_first: dict[str, int] = {}
    prev: str | None = chain.GENESIS
    expected, checked = 1, 0

    def match_signed(seq: int, hash_: str, id_: str = "") -> None:
        for checkpoint in signed.get(seq, ()):
            if checkpoint.hash != hash_:
                state.add(seq, f"differs from what {checkpoint.name()} signed", id_)

    def bridge(until: int | None) -> None:
        """Stubs (or a gap) from `expected` up to `until` (exclusive; None: to the end)."""
        nonlocal prev, expected
        while until is None or expected < until:
            stub = stubs.get(expected)
            if stub is None:
                if until is None:
                    return
                end = expected
                while end + 1 < until and end + 1 not in stubs:
                    end += 1
                state.add(expected, f"records {expected}-{end} are missing (deleted without "
                          "a retention stub, or renumbered)", missing=(expected, end))
                prev, expected = None, end + 1
                continue
            if prev is not None and stub[1] != prev:
                state.add(expected, "retention stub does not link to the previous record")
            match_signed(expected, stub[0])
            prev, expected = stub[0], expected + 1

    query = (f"SELECT seq, {', '.join(columns)}, payload_digest, prev_hash, hash, "  # noqa: S608 - fixed column names
             "payload FROM records ORDER BY seq")
    width = len(columns)
    for row in db.execute(query):
        seq = row[0]
        metadata = dict(zip(columns, row[1:1 + width], strict=True))
        digest, prev_hash, hash_, payload = row[1 + width:]
        bridge(seq)
        record_id = str(metadata["id"])
        if prev is not None and prev_hash != prev:
            state.add(seq, "does not link to the previous record", record_id)
        _check_record(seq, metadata, (digest, prev_hash, hash_, payload), erased_after, state)
        match_signed(seq, hash_, record_id)
        if metadata["dek_id"]:
            dek_first.setdefault(str(metadata["dek_id"]), seq)
        if metadata["kind"] in ("hold", "erasure", "retention", "anchor"):
            events.append((seq, str(metadata["kind"]), str(metadata["decision"]),
                           _tags(metadata["tags"])))
        prev, expected = hash_, seq + 1
        checked += 1
    bridge(None)
    return {"head": expected - 1, "checked": checked, "events": events, "stubs": stubs,
            "dek_first": dek_first, "valid": valid,
            "sweeps": elsewhere.sweeps if elsewhere is not None else {}}


def _check_record(seq: int, metadata: dict[str, Any], stored: tuple[Any, ...],
                  erased_after: dict[str, int], state: _State) -> None:
    """The record's own hash, payload digest, and a removed payload's erasure event."""
    digest, prev_hash, hash_, payload = stored
    record_id = str(metadata["id"])
    if payload is not None and hashlib.sha256(payload).hexdigest() != digest:
        state.add(seq, "encrypted payload altered", record_id)
    if chain.record_hash(prev_hash, metadata, digest) != hash_:
        state.add(seq, "metadata altered", record_id)
    subject_ref = str(metadata["subject_ref"])
    if payload is None and digest and (not subject_ref
                                       or erased_after.get(subject_ref, 0) <= seq):
        state.add(seq, "payload removed without a chained erasure event for its subject",
                  record_id)


def _side_tables(db: sqlite3.Connection, keys: sqlite3.Connection, walk: dict[str, Any],
                 state: _State) -> None:
    _retention(walk, state)
    _holds(db, walk["events"], state)
    _erasures(db, keys, walk, state)


def _retention(walk: dict[str, Any], state: _State) -> None:
    events: list[tuple[int, str, str, dict[str, str]]] = walk["events"]
    # Retention: each sweep's stubs match the event that made them, and a signature.
    signed_sweeps = dict(walk["sweeps"])  # vouched for by a fleet compliance chain
    for checkpoint in walk["valid"]:
        parts = checkpoint.extra.split(":")
        if parts[0] == "prune" and len(parts) == 3:
            signed_sweeps[parts[1]] = parts[2]
    by_sweep: dict[str, list[tuple[int, str, str]]] = {}
    for seq, (hash_, prev_hash, sweep) in sorted(walk["stubs"].items()):
        by_sweep.setdefault(sweep, []).append((seq, hash_, prev_hash))
    swept = {tags.get("sweep", ""): (seq, tags) for seq, kind, _, tags in events
             if kind == "retention"}
    for sweep, rows in by_sweep.items():
        digest = _stub_digest(rows)
        event = swept.get(sweep)
        if signed_sweeps.get(sweep) != digest:
            state.add(rows[0][0], f"retention stubs {rows[0][0]}-{rows[-1][0]} are not "
                      "covered by a signed checkpoint (fake stubs?)")
        elif event is None and sweep in walk["sweeps"]:
            pass  # a fleet sweep: its event is in the compliance chain that vouched for it
        elif event is None:
            state.add(rows[0][0], f"retention stubs {rows[0][0]}-{rows[-1][0]} have no "
                      "chained retention event")
        elif "stubs_sha256" in event[1] and (event[1]["stubs_sha256"] != digest
                                             or event[1].get("removed") != str(len(rows))):
            state.add(event[0], "the retention event does not match its stubs")


def _holds(db: sqlite3.Connection, events: list[tuple[int, str, str, dict[str, str]]],
           state: _State) -> None:
    # Holds: the table says what sweeps and erasures obey; the chain says what happened.
    chained: dict[str, dict[str, Any]] = {}
    for seq, kind, decision, tags in events:
        if kind != "hold":
            continue
        hold = chained.setdefault(tags.get("hold", ""), {"seq": seq})
        if decision == "ADDED":
            hold.update(seq=seq, scope=tags.get("scope"), ref=tags.get("ref"),
                        reason=tags.get("reason"), released=False)
        elif decision == "RELEASED":
            hold["released"] = True
    holds = {str(row[0]): row for row in db.execute(
        "SELECT id, scope, ref, reason, released IS NOT NULL, chained FROM holds")}
    for hold_id, hold in chained.items():
        row = holds.get(hold_id)
        if row is None or not row[5]:
            state.add(hold["seq"], f"legal hold {hold_id} (a chained event) is missing from "
                      "the holds table: deleted, so sweeps and erasures no longer see it")
        elif (row[1], row[2], row[3]) != (hold.get("scope"), hold.get("ref"),
                                          hold.get("reason")):
            state.add(hold["seq"], f"legal hold {hold_id} differs from its chained event")
        elif bool(row[4]) != hold.get("released"):
            state.add(hold["seq"], f"legal hold {hold_id} is "
                      f"{'released' if row[4] else 'active'} in the holds table but "
                      f"{'released' if hold.get('released') else 'active'} in the chain")
    for hold_id, row in holds.items():
        if row[5] and hold_id not in chained:
            state.add(None, f"legal hold {hold_id} has no chained event (inserted by hand)")
        elif not row[5]:
            state.notes.append(f"legal hold {hold_id} predates chained holds: not verifiable")


def _erasures(db: sqlite3.Connection, keys: sqlite3.Connection, walk: dict[str, Any],
              state: _State) -> None:
    events: list[tuple[int, str, str, dict[str, str]]] = walk["events"]
    # Erasures: one table row per chained erasure event, and their keys stay destroyed.
    table = Counter(ref for (ref,) in db.execute("SELECT subject_ref FROM erasures"))
    chained_erasures = Counter(tags.get("subject_ref", "") for _, kind, _, tags in events
                               if kind == "erasure")
    for seq, kind, _, tags in events:
        if kind == "erasure" and table[tags.get("subject_ref", "")] < \
                chained_erasures[tags.get("subject_ref", "")]:
            state.add(seq, "the erasures table lacks the row of this chained erasure")
            break
    if table - chained_erasures:
        state.add(None, "the erasures table has rows without a chained erasure event")
    fingerprints: dict[str, int] = {}
    for seq, kind, _, tags in events:
        if kind == "erasure":
            for fingerprint in filter(None, tags.get("keys", "").split(",")):
                fingerprints[fingerprint] = seq
    if fingerprints:
        revived = _in(keys, "SELECT fingerprint FROM data_keys WHERE wrapped IS NOT NULL "
                      "AND fingerprint IN ({})", list(fingerprints))
        for fingerprint in sorted(revived, key=lambda f: fingerprints[f]):
            state.add(fingerprints[fingerprint], f"data key {fingerprint}, destroyed by this "
                      "erasure, is live again in audit-keys.db (an older copy put back)")
    dek_first: dict[str, int] = walk["dek_first"]
    present = _in(keys, "SELECT dek_id FROM data_keys WHERE dek_id IN ({})", list(dek_first))
    for dek_id in sorted(set(dek_first) - present, key=lambda d: dek_first[d])[:10]:
        state.add(dek_first[dek_id], "its data key is missing from audit-keys.db (an older "
                  "or another trail's copy?)")
    for seq, kind, _, tags in events:
        if kind == "anchor":
            state.notes.append(f"the head anchor was reset at seq {seq} by "
                               f"{tags.get('actor') or '?'} ({tags.get('reason', '')!r}); it "
                               f"had named seq {tags.get('previous_seq') or '-'}")


def _in(conn: sqlite3.Connection, sql: str, values: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), 900):  # under SQLite's bound-parameter limit
        chunk = values[start:start + 900]
        found.update(row[0] for row in conn.execute(sql.format(", ".join("?" * len(chunk))),
                                                    chunk))
    return found


def _tags(text: Any) -> dict[str, str]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _stub_digest(rows: list[tuple[int, str, str]]) -> str:
    digest = hashlib.sha256()
    for seq, hash_, prev_hash in rows:
        digest.update(f"{seq}:{hash_}:{prev_hash}\n".encode())
    return digest.hexdigest()
