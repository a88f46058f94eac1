"""A data directory that ran in local mode, swept its retention, then joined a fleet
(issue 19, round 3): its whole chain ships, the local sweep's stubs included, and the
store verifies it; the fleet's index key is pinned in the store and in the directory.

In-process against a real PostgreSQL: the sidecar's own open_store/fleet_of, audit.pgstore
shipping, no gRPC (the fleet's serve processes are tests/fleet/test_fleet_pods.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.pgstore import prune_outbox, ship, verify_fleet
from audit.store import _KEY_MIGRATIONS, _MIGRATIONS, NewRecord, open_database
from sidecar.auditing import _fleets, current_fleet, open_store
from sidecar.config import Settings
from tests.fleet.conftest import FleetSecrets, Postgres, fleet_secrets


def _settings(data: Path, keys: FleetSecrets, store: str | None = None) -> Settings:
    return Settings(data_dir=data, audit_kek=keys.kek, audit_signing_key_file=keys.signing_key,
                    store=store, allow_pod_keys=True)


def _drop_fleet(config: Settings) -> None:
    fleet = _fleets.pop((str(config.store), str(config.data_dir)))
    fleet.keyring.close()
    fleet.central.close()


def _ship_all(config: Settings) -> int:
    """Ship the directory's outbox until nothing is left; how many records went."""
    fleet = current_fleet(config)
    outbox = open_database(Path(config.data_dir) / "audit" / "audit.db", _MIGRATIONS).conn
    keys = open_database(Path(config.data_dir) / "audit" / "audit-keys.db",
                         _KEY_MIGRATIONS).conn
    total = 0
    try:
        while True:
            result = ship(fleet.central, outbox, keys, fleet.chain_id, batch=7)
            assert not result.problem, result.problem
            prune_outbox(outbox, result.acked_seq)
            total += result.shipped
            if not result.shipped:
                return total
    finally:
        outbox.close()
        keys.close()


@pytest.fixture
def keys(tmp_path: Path) -> FleetSecrets:
    return fleet_secrets(tmp_path / "secrets")


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expired=st.lists(st.booleans(), min_size=3, max_size=14))
def test_a_directory_swept_in_local_mode_ships_its_whole_chain(
        postgres: Postgres, keys: FleetSecrets, tmp_path_factory: pytest.TempPathFactory,
        expired: list[bool]) -> None:
    """Any pattern of expired and kept records, swept locally, then fleet mode: every
    record and stub reaches the store (not stopped at the first stub) and verifies."""
    data = tmp_path_factory.mktemp("switched")
    local = _settings(data, keys)
    store = open_store(local)
    now = time.time()
    store.append([NewRecord(tenant="acme", decision="ALLOW", subject_id=f"s{n % 2}",
                            payload=b"text", retain_until=now - 10 if gone else now + 3600)
                  for n, gone in enumerate(expired)])
    store.checkpoint()
    store.sweep()
    store.append([NewRecord(tenant="acme", decision="ALLOW", retain_until=now + 3600)])
    store.close()
    fleet = _settings(data, keys, postgres.database())
    switched = open_store(fleet)
    try:
        switched.append([NewRecord(tenant="acme", decision="BLOCK", retain_until=now + 60)])
        switched.checkpoint()
        _ship_all(fleet)
        outbox = switched.db.conn
        tip = outbox.execute("SELECT MAX(seq) FROM (SELECT seq FROM records UNION ALL "
                             "SELECT seq FROM pruned)").fetchone()[0]
        central = current_fleet(fleet).central
        with psycopg.connect(str(fleet.store)) as conn:
            shipped = conn.execute("SELECT shipped_seq FROM chains WHERE chain_id = %s",
                                   (current_fleet(fleet).chain_id,)).fetchone()
        assert shipped == (tip,)
        result = verify_fleet(central, [keys.public_key])
        assert result.ok, [p.reason for p in result.problems]
    finally:
        switched.close()
        _drop_fleet(fleet)


def test_a_swapped_index_key_in_the_store_is_refused_and_named(
        postgres: Postgres, keys: FleetSecrets, tmp_path: Path) -> None:
    """Someone who can write the store (and holds the KEK) replaces the fleet's index
    key: the pod that pinned it refuses to start, `verify --store` names it from the
    pods' signed checkpoints, and the compliance view refuses subject operations rather
    than erase nothing."""
    from audit import crypto
    from audit.chain import Signer
    from audit.pgstore import INDEX_KEY, Central, FleetStore
    from sidecar.errors import ConfigError

    url = postgres.database()
    config = _settings(tmp_path / "pod", keys, url)
    store = open_store(config)
    store.append([NewRecord(tenant="acme", decision="ALLOW", subject_id="ann",
                            retain_until=time.time() + 60)])
    store.checkpoint()
    _ship_all(config)
    store.close()
    _drop_fleet(config)
    kek = crypto.Kek.from_text(keys.kek)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE fleet_keys SET wrapped = %s WHERE name = %s",
                     (crypto.wrap(kek, b"\1" * 32, INDEX_KEY), INDEX_KEY))
    with pytest.raises(ConfigError, match="not the one this sidecar pinned"):
        open_store(config)
    central = Central(url, kek)
    try:
        result = verify_fleet(central, [keys.public_key])
    finally:
        central.close()  # a pool left open is collected on one of its own threads
    assert not result.ok
    assert any("signed index key id" in p.reason and "swapped in the store" in p.reason
               for p in result.problems), [p.reason for p in result.problems]
    admin = FleetStore(Central(url, kek), Signer.load_or_create(tmp_path / "admin.key"))
    try:
        with pytest.raises(crypto.AuditKeyError, match="index key was replaced"):
            admin.erase("ann", actor="dpo", reason="request")
    finally:
        admin.close()


def test_a_pod_that_never_shipped_keeps_its_pending_keys_if_the_commit_fails(
        postgres: Postgres, keys: FleetSecrets, tmp_path: Path) -> None:
    """The local copy of a pending key goes only once the store committed it: a shipping
    transaction that fails after registering it (here: the record insert conflicts)
    leaves it pending, so the next attempt registers it and no payload is orphaned."""
    url = postgres.database()
    config = _settings(tmp_path / "pod", keys, url)
    store = open_store(config)
    fleet = current_fleet(config)
    try:
        fleet.central.unready("simulated outage")  # keys made now are pending, local
        store.append([NewRecord(tenant="acme", decision="ALLOW", subject_id="bo",
                                payload=b"secret", retain_until=time.time() + 60)])
        [(dek_id, wrapped)] = store.keys.conn.execute(
            "SELECT dek_id, wrapped IS NOT NULL FROM data_keys WHERE shipped = 0").fetchall()
        assert wrapped
        fleet.central.prepare()
        with psycopg.connect(url) as conn:  # a row in the way: the batch's insert fails
            conn.execute("ALTER TABLE records ADD CONSTRAINT no_more CHECK (seq < 0) "
                         "NOT VALID")
        outbox = open_database(tmp_path / "pod" / "audit" / "audit.db", _MIGRATIONS).conn
        local_keys = open_database(tmp_path / "pod" / "audit" / "audit-keys.db",
                                   _KEY_MIGRATIONS).conn
        with pytest.raises(ConnectionError):
            ship(fleet.central, outbox, local_keys, fleet.chain_id)
        assert local_keys.execute("SELECT shipped, wrapped IS NOT NULL FROM data_keys WHERE "
                                  "dek_id = ?", (dek_id,)).fetchone() == (0, 1)
        with psycopg.connect(url) as conn:
            conn.execute("ALTER TABLE records DROP CONSTRAINT no_more")
        assert ship(fleet.central, outbox, local_keys, fleet.chain_id).shipped >= 1
        # Registered: the store holds the key, the pod's copy is gone.
        assert local_keys.execute("SELECT shipped, wrapped FROM data_keys WHERE dek_id = ?",
                                  (dek_id,)).fetchone() == (1, None)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT wrapped IS NOT NULL FROM data_keys WHERE dek_id = "
                                "%s", (dek_id,)).fetchone() == (True,)
        assert fleet.keyring.key_by_id(dek_id) is not None
        outbox.close()
        local_keys.close()
    finally:
        store.close()
        _drop_fleet(config)


@pytest.fixture(autouse=True)
def _no_fleet_left() -> Iterator[None]:
    yield
    assert not _fleets, "a test left a fleet connection open"


def test_rotate_kek_with_store_rewraps_the_fleet_and_pods_ride_through_the_rollout(
        postgres: Postgres, keys: FleetSecrets, tmp_path: Path) -> None:
    """`audit rotate-kek --store`: every data key and the index key re-wrapped under the
    new KEK in one transaction, chained in the compliance chain. A pod still on the old
    KEK keeps recording (keys of its own, as in an outage) and never reads a re-wrapped
    key as erased; a rerun after the rollout re-wraps what it registered meanwhile; then
    the new KEK alone opens every payload, the old one none, and the store verifies."""
    import base64
    import secrets

    from audit import crypto
    from audit.chain import Signer
    from audit.pgstore import Central, FleetStore, StoreUnavailable

    url = postgres.database()
    config = _settings(tmp_path / "pod", keys, url)
    store = open_store(config)
    fleet = current_fleet(config)
    admin_key = Signer.load_or_create(tmp_path / "admin.key")
    old_kek = crypto.Kek.from_text(keys.kek)
    new_kek = crypto.Kek.from_text(base64.b64encode(secrets.token_bytes(32)).decode())
    try:
        store.append([NewRecord(tenant="acme", decision="ALLOW", subject_id="ann",
                                payload=b"before", retain_until=time.time() + 60)])
        _ship_all(config)
        [dek_before] = {r[0] for r in store.db.conn.execute(
            "SELECT dek_id FROM records WHERE dek_id != ''")} or {""}
        admin = FleetStore(Central(url, old_kek), admin_key)
        assert admin.rotate_kek(new_kek, actor="ops", reason="yearly") >= 1
        admin.close()
        _wait_cache_dropped(fleet.keyring, dek_before)
        # The pod on the old KEK: the re-wrapped key is not "erased", just not openable.
        with pytest.raises(StoreUnavailable, match="another KEK"):
            fleet.keyring.key_by_id(dek_before)
        store.append([NewRecord(tenant="acme", decision="ALLOW", subject_id="ann",
                                payload=b"during", retain_until=time.time() + 60)])
        store.checkpoint()
        _ship_all(config)
        rerun = FleetStore(Central(url, old_kek, rotating_to=new_kek), admin_key)
        assert rerun.rotate_kek(new_kek, actor="ops", reason="after the rollout") == 1
        rerun.close()
    finally:
        store.close()
        _drop_fleet(config)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT DISTINCT kek_id FROM data_keys WHERE wrapped IS NOT "
                            "NULL").fetchall() == [(new_kek.id,)]
        assert conn.execute("SELECT kek_id FROM fleet_keys").fetchall() == [(new_kek.id,)]
    reader = FleetStore(Central(url, new_kek), admin_key)
    try:
        payloads = [reader.payload(row) for row in reader.records("kind = 'inspection'")]
        assert payloads and all(p is not None for p in payloads)
        result = reader.verify([keys.public_key, admin_key.public_hex()])
        assert result.ok, [p.reason for p in result.problems]
        rotations = list(reader.records("kind = 'key'"))
        assert [r["decision"] for r in rotations] == ["ROTATED", "ROTATED"]
        assert old_kek.key.hex() not in str(rotations)
    finally:
        reader.close()
    with pytest.raises(crypto.AuditKeyError):  # the old KEK opens nothing any more
        Central(url, old_kek)


def _wait_cache_dropped(keyring: object, dek_id: str) -> None:
    """NOTIFY reaches the pod's listener within moments; wait for it, bounded."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if dek_id not in getattr(keyring, "_ids", {}):
            return
        time.sleep(0.05)
    raise AssertionError("the rotation's NOTIFY never dropped the pod's cached key")


def test_reset_anchor_with_store_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    """No anchor for an operator to accept in the store (it keeps each chain's own):
    exit 2, one line saying why and what to do, before anything connects."""
    from tests.faults import guardrail, no_traceback

    done = guardrail("audit", "reset-anchor", "--store",
                     "postgresql://u:hunter2@127.0.0.1:1/db", "--data-dir", str(tmp_path),
                     "--reason", "restored", "--actor", "ops")
    no_traceback(done.stdout + done.stderr)
    assert done.returncode == 2
    assert "no anchor to reset" in done.stderr and "starts a new chain" in done.stderr
    assert "hunter2" not in done.stderr


def _chain(length: int) -> list[tuple[object, ...]]:
    """Outbox rows (seq, metadata..., payload, digest, prev_hash, hash) of a valid chain."""
    from audit import chain
    from audit.store import _METADATA

    rows: list[tuple[object, ...]] = []
    prev = chain.GENESIS
    for seq in range(1, length + 1):
        metadata = dict.fromkeys(_METADATA, "")
        metadata.update(id=f"r{seq}", kind="inspection", time=float(seq), entities="{}",
                        rule_ids="[]", tags="{}", retain_until=0.0)
        hash_ = chain.record_hash(prev, metadata, "")
        rows.append((seq, *[metadata[k] for k in _METADATA], None, "", prev, hash_))
        prev = hash_
    return rows


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_shipping_bridges_only_stubs_that_link_and_never_ships_past_a_break(
        data: st.DataObject) -> None:
    """An attacker who can write the outbox deletes records and leaves stubs, real or
    forged (wrong hash, wrong link), or alters a record: what ships is always a prefix
    of the true chain, in order, linked through real stubs only, and it stops at the
    first thing that does not link (pure: audit.pgstore._linked, no database)."""
    from audit import chain
    from audit.pgstore import _linked

    true = _chain(data.draw(st.integers(2, 12), label="length"))
    swept = data.draw(st.sets(st.integers(1, len(true) - 1)), label="swept")
    stubs = {int(str(r[0])): (str(r[-1]), str(r[-2]), "sweep1") for r in true
             if r[0] in swept}
    forged = data.draw(st.sampled_from([None, *sorted(stubs)]), label="forged stub")
    if forged is not None:
        hash_, prev_hash, sweep = stubs[forged]
        stubs[forged] = data.draw(st.sampled_from([("f" * 64, prev_hash, sweep),
                                                   (hash_, "e" * 64, sweep)]))
    rows = [r for r in true if r[0] not in swept]
    altered = data.draw(st.sampled_from([None, *[int(str(r[0])) for r in rows]]),
                        label="altered record")
    if altered is not None:
        at = next(i for i, r in enumerate(rows) if r[0] == altered)
        rows[at] = (*rows[at][:2], "tampered", *rows[at][3:])
    good, bridged, problem = _linked(rows, stubs, 0, chain.GENESIS)
    # Everything shipped, records and stubs, is the true chain from seq 1, gap-free.
    shipped = sorted([(int(r[0]), r[-1]) for r in good] + [(s, h) for s, h, _, _ in bridged])
    assert shipped == [(int(str(r[0])), r[-1]) for r in true[:len(shipped)]]
    breaks = [s for s in (forged, altered) if s is not None]
    if breaks:
        assert len(shipped) < min(breaks) and problem
    else:
        assert not problem and len(good) == len(rows)


def test_a_damaged_or_foreign_pin_file_is_refused_by_name(
        postgres: Postgres, keys: FleetSecrets, tmp_path: Path) -> None:
    """keys/fleet-index.json altered by hand: garbage, or a key that does not match its
    id, is a clear ConfigError naming the file, never a traceback or a silent re-pin."""
    import json

    from sidecar.errors import ConfigError

    config = _settings(tmp_path / "pod", keys, postgres.database())
    open_store(config).close()
    _drop_fleet(config)
    pin = tmp_path / "pod" / "keys" / "fleet-index.json"
    good = json.loads(pin.read_text())
    for damaged in ("not json", json.dumps({"index_id": good["index_id"]}),
                    json.dumps({**good, "index_id": "0" * 32})):
        pin.write_text(damaged)
        with pytest.raises(ConfigError, match=r"fleet-index\.json"):
            open_store(config)
    assert not _fleets


@settings(max_examples=200, deadline=None)
@given(password=st.text(st.characters(codec="ascii", exclude_categories=["Cc"],
                                      exclude_characters="/?#&"), min_size=4, max_size=24),
       damage=st.sampled_from(["", "%zz", " x", "[", "?bogus=1", "?sslmode=nope"]),
       where=st.sampled_from(["userinfo", "query"]))
def test_no_store_url_message_ever_shows_the_password(password: str, damage: str,
                                                      where: str) -> None:
    """Whatever the password holds (an "@", ":", "%", spaces) and however the URL is
    broken, the refusal and the redacted URL never show it, nor a 4-character piece of
    it: libpq quotes the token it could not parse, which may be the password itself.
    ("/?#&" end the part a password lives in: with them the URL says something else.)"""
    import inspect

    from audit import pgstore
    from audit.pgstore import StoreRefused, check_url, redact_url

    if where == "userinfo":
        url = f"postgresql://ops:{password}{damage if damage[:1] in '% ' else ''}@db.example" \
              f"/guard{damage if damage[:1] in '[?' else ''}"
    else:
        url = f"postgresql://ops@db.example/guard?password={password}" \
              f"{'&' + damage[1:] if damage.startswith('?') else damage}"
    try:
        check_url(url)
        message = ""
    except StoreRefused as err:
        message = str(err)
    # A piece that is also the messages' own wording ("form" in "malformed") says nothing:
    # the wording is whatever audit/pgstore.py spells out.
    wording = inspect.getsource(pgstore)
    for text in (message, redact_url(url)):
        for i in range(len(password) - 3):
            piece = password[i:i + 4]
            if piece not in url.replace(password, "") and piece not in wording:
                assert piece not in text, (url, text)
