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

- A trail that holds records must be signed and anchored: no checkpoint, or no head
  anchor, is a failure (deleting both after rewriting everything would otherwise leave
  a self-consistent trail that "verifies").
- The external head (`expect_head`, recorded by the auditor with `guardrail audit head`
  somewhere the pod cannot write): the trail still holds that checkpoint, with that seq
  and hash, and has not shrunk below it. The local anchor cannot stop whoever can write
  it from copying an older checkpoint into it; the external head can.
- Data keys: a key destroyed (or its wrapped bytes removed) without a chained erasure
  event of its subject is named, and with the KEK every live key must open (a garbage
  key silently destroys a subject's data, legal hold or not).
- The index key: every v3 checkpoint signs the id of the index key; one that differs
  from the key in use is named (subject lookups would silently find nothing).
- Robustness: a column of the wrong type or bytes that are not UTF-8 are named as a
  bad record, never raised, and no payload byte is ever printed.

What it cannot prove is in the README: the records after the newest checkpoint (the
unsigned tail, reported), a rollback made with the anchor rewritten when no external
head was recorded, and anything an attacker who holds the signing key does.
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
from audit import chain, crypto
from audit.names import fold

MAX_PROBLEMS = 100
_EVENTS = ("hold", "erasure", "retention", "anchor")  # record kinds that are chained events


@dataclass(frozen=True)
class Problem:
    """One thing `verify` found wrong: where (seq, and id for a record) and what."""

    seq: int | None
    reason: str
    id: str = ""
    missing: tuple[int, int] | None = None  # a range of sequence numbers that is gone
    # Evidence that some event is missing (a payload removed without its erasure event,
    # a side table that disagrees with the chain, no signature at all): reported after
    # the records and ranges that are themselves bad, which often explain it (a deleted
    # tail takes its erasure events with it).
    derived: bool = False

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
    notes: tuple[str, ...] = ()  # facts worth telling (unsigned tail, ...)
    # Facts that pass but must be seen: anchor resets (someone accepted a trail that
    # was behind its anchor). `verify --strict` fails on them.
    warnings: tuple[str, ...] = ()

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
    index: str = ""
    label: str = ""  # what to call it when it is not a row (the recorded head)

    def message(self) -> bytes:
        return chain.checkpoint_message(self.seq, self.hash, self.time, self.extra,
                                        n=self.n, prev=self.prev, index=self.index)

    def name(self) -> str:
        if self.label:
            return self.label
        return f"checkpoint #{self.n}" if self.n is not None else "a v1 checkpoint"


@dataclass
class _State:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    derived: bool = False  # problems added now are derived (see Problem)

    def add(self, seq: int | None, reason: str, id_: str = "",
            missing: tuple[int, int] | None = None, *, derived: bool = False) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(seq, reason, id_, missing,
                                         derived or self.derived))


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
                 anchor_path: Path | None, *, elsewhere: Elsewhere | None = None,
                 expect_head: tuple[int, int, str] | None = None,
                 kek: crypto.Kek | None = None, index_id: str = "") -> Verification:
    """Check everything listed in the module docstring, in one read transaction.

    `expect_head`: (n, seq, hash) recorded outside the pod. `kek`: when given, every live
    data key must open with it. `index_id`: the id of the index key in use
    (chain.index_key_id), compared with what the checkpoints signed.
    """
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
    # Text that is not UTF-8 (bytes written as TEXT by hand) would make every read of the
    # row raise, with the bytes in the message: read it replaced, so the row's hash fails
    # and the row is named (an honest record is always valid UTF-8).
    factories = (db.text_factory, keys.text_factory)
    db.text_factory = keys.text_factory = _lenient_text
    db.execute("BEGIN")
    try:
        result = _verify(db, keys, columns, pinned, anchor_path, anchor=anchor, state=state,
                         elsewhere=elsewhere, expect_head=expect_head, kek=kek,
                         index_id=index_id)
    finally:
        db.execute("COMMIT")
        db.text_factory, keys.text_factory = factories
    return result


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _verify(db: sqlite3.Connection, keys: sqlite3.Connection, columns: tuple[str, ...],
            pinned: set[str] | None, anchor_path: Path | None, *,
            anchor: anchor_file.Anchor | None, state: _State,
            elsewhere: Elsewhere | None = None,
            expect_head: tuple[int, int, str] | None = None,
            kek: crypto.Kek | None = None, index_id: str = "") -> Verification:
    valid = _checkpoints(db, pinned, state)
    where = Path(elsewhere.anchor_name) if elsewhere is not None else anchor_path
    if where is not None:
        _anchor(where, anchor, valid, pinned, state)
    signed: dict[int, list[_Checkpoint]] = {}
    for checkpoint in valid:
        signed.setdefault(checkpoint.seq, []).append(checkpoint)
    if anchor is not None and (pinned is None or anchor.public_key in pinned):
        signed.setdefault(anchor.seq, []).append(_Checkpoint(
            anchor.n, anchor.seq, anchor.hash, anchor.time, anchor.extra, anchor.signature,
            anchor.public_key, anchor.prev, anchor.index))
    if expect_head is not None:
        _expected_head(expect_head, valid, signed, state)
    walk = _walk(db, columns, signed, valid, state, elsewhere=elsewhere)
    head = walk["head"]
    # Whatever a signature names beyond the head is gone.
    beyond = [(c.seq, f"the signed {c.name()}") for c in valid if c.seq > head]
    if anchor is not None and anchor.seq > head:
        beyond.append((anchor.seq, f"the head anchor (checkpoint #{anchor.n})"))
    if expect_head is not None and expect_head[1] > head:
        beyond.append((expect_head[1], f"the recorded head (checkpoint #{expect_head[0]})"))
    if beyond:
        last, who = max(beyond)
        state.add(head + 1, f"records {head + 1}-{last} are missing: {who} names seq "
                  f"{last}, but the trail ends at {head} (deleted, truncated, or an older "
                  "copy of audit.db)", missing=(head + 1, last))
    _retention(walk, state)  # stubs stand for records: as direct as the records
    state.derived = True
    _side_tables(db, keys, walk, state, elsewhere=elsewhere, kek=kek)
    _index(valid, index_id, state)
    signed_seq = max((c.seq for c in valid if c.seq <= head), default=0)
    if head > 0 and signed_seq == 0:
        state.add(1, f"records 1-{head} are not signed by any valid checkpoint: the "
                  "checkpoints were deleted (or never written), so nothing vouches for "
                  "this trail", missing=None)
    elif head > signed_seq:
        state.notes.append(f"{head - signed_seq} record(s) after the newest signed "
                           f"checkpoint (seq {signed_seq + 1}-{head}) are not yet signed")
    if anchor is None and where is not None:
        if head > 0 or valid:
            state.add(None, f"the head anchor {where} is missing, but the trail holds "
                      f"records 1-{head} and {len(valid)} signed checkpoint(s): it was "
                      "deleted, or audit.db comes from elsewhere (give the right one with "
                      "--anchor)")
        else:
            state.notes.append(f"no head anchor at {where} yet (nothing signed so far)")
    # What is itself bad first, in order (a missing range included), then what derives
    # from it: a deleted tail takes its erasure events with it.
    problems = sorted(state.problems, key=lambda p: (p.derived, p.seq is None, p.seq or 0))
    first = problems[0] if problems else None
    return Verification(
        ok=not problems, checked=walk["checked"],
        first_bad_seq=first.seq if first else None, first_bad_id=first.id if first else "",
        reason=first.reason if first else "", problems=tuple(problems), head_seq=head,
        signed_seq=signed_seq, authenticated=pinned is not None,
        anchored=anchor is not None, notes=tuple(state.notes),
        warnings=tuple(state.warnings))


def _expected_head(expect: tuple[int, int, str], valid: list[_Checkpoint],
                   signed: dict[int, list[_Checkpoint]], state: _State) -> None:
    """The head recorded outside the pod: checkpoint #n, signing (seq, hash), is here."""
    n, seq, hash_ = expect
    found = [c for c in valid if c.n == n]
    if not found:
        state.add(seq, f"checkpoint #{n} (seq {seq}), the head recorded outside this trail, "
                  "is not among its valid checkpoints: the trail was rolled back, or its "
                  "newest checkpoints deleted or replaced")
    elif (found[0].seq, found[0].hash) != (seq, hash_):
        state.add(seq, f"checkpoint #{n} signs seq {found[0].seq} with another hash than "
                  f"the head recorded outside this trail (seq {seq}): the trail was "
                  "rewritten or replaced")
    # The record at seq must still hash to what was recorded (checked by the walk).
    signed.setdefault(seq, []).append(_Checkpoint(n, seq, hash_, 0.0, "", "", "", "",
                                                  label="the recorded head"))


def _index(valid: list[_Checkpoint], index_id: str, state: _State) -> None:
    """Every checkpoint that names an index key names the one in use."""
    if not index_id:
        return
    for checkpoint in valid:
        if checkpoint.index and checkpoint.index != index_id:
            state.add(checkpoint.seq, f"{checkpoint.name()} signed index key id "
                      f"{checkpoint.index[:12]}, but the index key in use is {index_id[:12]} "
                      "(keys/audit-index.key was replaced: subject lookups, erasures and "
                      "holds would silently find nothing)")
            return


def _checkpoints(db: sqlite3.Connection, pinned: set[str] | None,
                 state: _State) -> list[_Checkpoint]:
    """Checkpoints whose signature holds (and by a pinned key); problems for the rest."""
    rows = []
    for row in db.execute("SELECT n, seq, hash, time, extra, signature, public_key, prev, "
                          "index_id FROM checkpoints ORDER BY n IS NOT NULL, n, rowid"):
        n, seq, hash_, time_, extra, signature, public_key, prev, index = row
        if not (isinstance(n, int | None) and isinstance(seq, int)
                and isinstance(time_, float | int)
                and all(isinstance(v, str) for v in (hash_, extra, signature, public_key,
                                                     prev, index))):
            state.add(seq if isinstance(seq, int) else None, "a checkpoint row has columns "
                      "of the wrong type (written by hand)")
            continue
        rows.append(_Checkpoint(n, seq, hash_, float(time_), extra, signature, public_key,
                                prev, index))
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
        return  # judged once the trail's length is known (_verify)
    message = chain.checkpoint_message(anchor.seq, anchor.hash, anchor.time, anchor.extra,
                                       n=anchor.n, prev=anchor.prev, index=anchor.index)
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
    # dek_id -> the key's owner as its first record says (its dek_id, subject_ref and
    # tenant are chained): ("subject", subject_ref) or ("tenant", tenant).
    dek_owner: dict[str, tuple[str, str]] = {}
    # subject_ref -> [(seq, folded tenant)] of their records: the tenants whose holds
    # covered them at the time of an erasure.
    subject_tenants: dict[str, list[tuple[int, str]]] = {}
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

    # The payload as bytes whatever was written there, and what type it was written as.
    query = (f"SELECT seq, {', '.join(columns)}, payload_digest, prev_hash, hash, "  # noqa: S608 - fixed column names
             "CAST(payload AS BLOB), typeof(payload) FROM records ORDER BY seq")
    width = len(columns)
    for row in db.execute(query):
        seq = row[0]
        metadata = dict(zip(columns, row[1:1 + width], strict=True))
        digest, prev_hash, hash_, payload, payload_type = row[1 + width:]
        bridge(seq)
        record_id = str(metadata["id"])
        if prev is not None and prev_hash != prev:
            state.add(seq, "does not link to the previous record", record_id)
        _check_typed(seq, metadata, (digest, prev_hash, hash_, payload, payload_type),
                     erased_after, state)
        match_signed(seq, hash_, record_id)
        _remember(seq, metadata, dek_first, dek_owner, subject_tenants)
        if metadata["kind"] in _EVENTS:
            events.append((seq, str(metadata["kind"]), str(metadata["decision"]),
                           _tags(metadata["tags"])))
        prev, expected = hash_, seq + 1
        checked += 1
    bridge(None)
    return {"head": expected - 1, "checked": checked, "events": events, "stubs": stubs,
            "dek_first": dek_first, "dek_owner": dek_owner,
            "subject_tenants": subject_tenants, "valid": valid,
            "sweeps": elsewhere.sweeps if elsewhere is not None else {}}


def _remember(seq: int, metadata: dict[str, Any], dek_first: dict[str, int],
              dek_owner: dict[str, tuple[str, str]],
              subject_tenants: dict[str, list[tuple[int, str]]]) -> None:
    """What later checks need of a record: its key's first use and owner, and which
    tenant each subject's records belong to."""
    subject = str(metadata["subject_ref"])
    if metadata["dek_id"]:
        dek_first.setdefault(str(metadata["dek_id"]), seq)
        dek_owner.setdefault(str(metadata["dek_id"]), ("subject", subject) if subject
                             else ("tenant", str(metadata["tenant"])))
    if subject and metadata["kind"] not in _EVENTS:
        subject_tenants.setdefault(subject, []).append((seq, fold(metadata["tenant"])))


def _check_typed(seq: int, metadata: dict[str, Any], stored: tuple[Any, ...],
                 erased_after: dict[str, int], state: _State) -> None:
    """_check_record, with columns of the wrong type named instead of raised."""
    *values, payload_type = stored
    record_id = str(metadata["id"])
    if payload_type not in ("blob", "null"):
        state.add(seq, f"the encrypted payload was replaced by a value of type "
                  f"{payload_type} (altered by hand)", record_id)
    try:
        _check_record(seq, metadata, tuple(values), erased_after, state)
    except (TypeError, ValueError, AttributeError):
        state.add(seq, "a column holds a value of the wrong type (altered by hand)", record_id)


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
                  record_id, derived=True)


def _side_tables(db: sqlite3.Connection, keys: sqlite3.Connection, walk: dict[str, Any],
                 state: _State, *, elsewhere: Elsewhere | None = None,
                 kek: crypto.Kek | None = None) -> None:
    for conn, name in ((db, "audit.db"), (keys, "audit-keys.db")):
        for thing in foreign_objects(conn):
            state.add(None, f"{thing} in {name}: the sidecar makes none, so it was added by "
                      "hand (a trigger can copy a destroyed key aside or rewrite rows)")
    _holds(db, walk["events"], state)
    _erasures_past_holds(walk, state)
    _erasures(db, keys, walk, state)
    _data_keys(db, keys, walk, state, elsewhere=elsewhere, kek=kek)


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
                      "chained retention event", derived=True)
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
    legacy_until = _chained_holds_since(db)
    created = dict(db.execute("SELECT id, created FROM holds"))
    for hold_id, row in holds.items():
        if row[5] and hold_id not in chained:
            state.add(None, f"legal hold {hold_id} has no chained event (inserted by hand)")
        elif not row[5] and hold_id not in chained and \
                isinstance(created.get(row[0]), float | int) and \
                created[row[0]] < legacy_until:
            state.notes.append(f"legal hold {hold_id} predates chained holds: not verifiable")
        elif not row[5] and hold_id not in chained:
            state.add(None, f"legal hold {hold_id} has no chained event and is marked as "
                      "older than chained holds, but this trail chained its holds from the "
                      "start (inserted by hand)")


def _erasures_past_holds(walk: dict[str, Any], state: _State) -> None:
    """An erasure made while a hold covered its subject must name that hold as
    overridden: one that does not went past the hold (a race, or a forged event)."""
    active: dict[str, tuple[str, str]] = {}  # hold id -> (scope, ref), as of each event
    tenants: dict[str, list[tuple[int, str]]] = walk["subject_tenants"]
    for seq, kind, decision, tags in walk["events"]:
        if kind == "hold" and decision == "ADDED":
            active[tags.get("hold", "")] = (tags.get("scope", ""), tags.get("ref", ""))
        elif kind == "hold" and decision == "RELEASED":
            active.pop(tags.get("hold", ""), None)
        elif kind == "erasure":
            subject = tags.get("subject_ref", "")
            theirs = {tenant for at, tenant in tenants.get(subject, ()) if at < seq}
            covering = sorted(hold for hold, (scope, ref) in active.items()
                              if (scope == "subject" and ref == subject)
                              or (scope == "tenant" and fold(ref) in theirs))
            overridden = set(filter(None, tags.get("overrode_holds", "").split(",")))
            missed = [hold for hold in covering if hold not in overridden]
            if missed:
                state.add(seq, f"this erasure went past legal hold(s) {', '.join(missed)}, "
                          "active and covering its subject, without an override", derived=True)


def _chained_holds_since(db: sqlite3.Connection) -> float:
    """When this trail began chaining holds (migration 3); 0 when it always did, so an
    unchained hold row can only have been inserted by hand."""
    try:
        applied = dict(db.execute("SELECT version, applied FROM schema_migrations"))
    except sqlite3.OperationalError:  # a fleet chain's copy: its holds were always chained
        return 0.0
    first, chained = applied.get(1), applied.get(3)
    if not isinstance(first, float | int) or not isinstance(chained, float | int):
        return 0.0
    return float(chained) if chained - first > 1.0 else 0.0


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
    # Row by row, in order per subject: who erased and which keys, as the chain says.
    rows: dict[str, list[tuple[Any, Any]]] = {}
    for ref, actor, destroyed in db.execute(
            "SELECT subject_ref, actor, keys_destroyed FROM erasures ORDER BY rowid"):
        rows.setdefault(ref, []).append((actor, destroyed))
    taken: Counter[str] = Counter()
    for seq, kind, _, tags in events:
        if kind != "erasure":
            continue
        ref = tags.get("subject_ref", "")
        if taken[ref] >= len(rows.get(ref, ())):
            continue  # reported above
        actor, destroyed = rows[ref][taken[ref]]
        taken[ref] += 1
        try:
            listed = [str(k) for k in json.loads(destroyed)]
        except (TypeError, ValueError):
            listed = None
        if actor != tags.get("actor", actor) or \
                listed != [k for k in tags.get("keys", "").split(",") if k]:
            state.add(seq, "the erasures table row of this chained erasure differs from it "
                      "(actor or destroyed keys altered)")
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
            state.warnings.append(
                f"the head anchor was RESET at seq {seq} by {tags.get('actor') or '?'} "
                f"({tags.get('reason', '')!r}); it had named seq "
                f"{tags.get('previous_seq') or '-'}: whatever the trail held beyond what "
                "was accepted then is not proven (compare with a head recorded elsewhere)")


def _data_keys(db: sqlite3.Connection, keys: sqlite3.Connection, walk: dict[str, Any],
               state: _State, *, elsewhere: Elsewhere | None, kek: crypto.Kek | None
               ) -> None:
    """A data key is destroyed only by a chained erasure of its subject; live keys open.

    Destroying a subject's key (NULL, or garbage wrapped bytes) crypto-shreds their data
    as thoroughly as an erasure, legal hold or not: without the chained event, it is
    tampering, and it is named with the subject's ref.
    """
    # subject_ref -> when it was last erased: a key made after that (the fenced next
    # version) was not destroyed by it.
    erased: dict[str, float] = {}
    for when, tags in db.execute("SELECT time, tags FROM records WHERE kind = 'erasure'"):
        ref_ = _tags(tags).get("subject_ref", "")
        if isinstance(when, float | int):
            erased[ref_] = max(erased.get(ref_, 0.0), float(when))
    for ref_ in elsewhere.erased if elsewhere is not None else ():
        erased[ref_] = float("inf")  # erased by the fleet's compliance chain
    # Keys an anchor reset found destroyed without their erasure event (a restored
    # audit.db lacks the events of erasures made after the backup): accepted, with the
    # reset's warning.
    accepted = {dek for _, kind, _, tags in walk["events"] if kind == "anchor"
                for dek in tags.get("unexplained_keys", "").split(",") if dek}
    dek_first: dict[str, int] = walk["dek_first"]
    dek_owner: dict[str, tuple[str, str]] = walk["dek_owner"]
    found: list[tuple[int | None, str]] = []
    for dek_id, scope, ref, wrapped, destroyed_at, created, fingerprint, kek_id in \
            keys.execute("SELECT dek_id, scope, ref, wrapped, destroyed_at, created, "
                         "fingerprint, kek_id FROM data_keys ORDER BY rowid"):
        whose = f"subject {str(ref)[:16]}…" if scope == "subject" else f"{scope} {ref!r}"
        seq = dek_first.get(str(dek_id))
        owner = dek_owner.get(str(dek_id))
        if owner is not None and owner != (scope, ref):
            # An erasure finds a subject's keys by their owner: a key moved to another
            # owner would survive the erasure of the person whose records it seals.
            real = f"subject {owner[1][:16]}…" if owner[0] == "subject" else \
                f"tenant {owner[1]!r}"
            found.append((seq, f"the data key {str(dek_id)[:16]} seals records of {real} but "
                          f"audit-keys.db registers it to {whose}: altered by hand (an "
                          "erasure of that subject would miss it)"))
        if wrapped is None or destroyed_at is not None:
            covered = scope == "subject" and isinstance(created, float | int) and \
                created <= erased.get(str(ref), -1.0)
            if not covered and dek_id not in accepted:
                found.append((seq, f"the data key {str(dek_id)[:16]} of {whose} is destroyed "
                              "in audit-keys.db without a chained erasure event of that "
                              "subject: their payloads are silently lost (an interrupted "
                              "erasure: run it again)"))
            continue
        if kek is None:
            continue
        try:
            if not isinstance(wrapped, bytes):
                raise crypto.AuditKeyError("not bytes")
            dek = crypto.unwrap(kek, wrapped, str(dek_id))
        except crypto.AuditKeyError:
            found.append((seq, f"the data key {str(dek_id)[:16]} of {whose} does not open "
                          "with the KEK: its wrapped bytes were replaced (the subject's "
                          "payloads are silently lost)"))
            continue
        # Receipts name keys by fingerprint and rotations pick keys by KEK id: both must
        # be the key's own.
        if fingerprint != crypto.fingerprint(dek):
            found.append((seq, f"the data key {str(dek_id)[:16]} of {whose} has a "
                          "fingerprint that is not its own: altered by hand (erasure "
                          "receipts would name another key)"))
        elif kek_id != kek.id:
            found.append((seq, f"the data key {str(dek_id)[:16]} of {whose} names KEK "
                          f"{str(kek_id)[:16]} but opens with {kek.id}: altered by hand (a "
                          "KEK rotation would skip it)"))
    for seq, reason in found[:20]:
        state.add(seq, reason)


def foreign_objects(conn: sqlite3.Connection) -> list[str]:
    """The triggers and views of a database ("trigger NAME on TABLE"): the sidecar makes
    neither. A trigger can copy a key aside as an erasure destroys it, or rewrite rows as
    they are written; a view can stand in for a table."""
    return [f"{kind} {name!r}" + (f" on {table!r}" if kind == "trigger" else "")
            for kind, name, table in conn.execute(
                "SELECT type, name, tbl_name FROM sqlite_master "
                "WHERE type IN ('trigger', 'view') ORDER BY type, name")]


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
