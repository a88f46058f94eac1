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
    from audit.pgstore import INDEX_KEY, Central, FleetStore
    from audit.chain import Signer
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
    result = verify_fleet(Central(url, kek), [keys.public_key])
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
