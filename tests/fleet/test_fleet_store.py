"""The fleet store against a real PostgreSQL: migrations, shipping, keys, vault, verify.

In-process (no gRPC): each "pod" is an AuditStore on its own data directory whose keys
come from the store, and whose outbox `audit.pgstore.ship` sends there.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import chain, crypto
from audit.pgstore import (
    MIGRATIONS,
    Central,
    CentralVault,
    FleetStore,
    KeyRing,
    migrate,
    prune_outbox,
    ship,
)
from audit.store import _KEY_MIGRATIONS, _MIGRATIONS, AuditStore, NewRecord, open_database
from audit.vault import Exchange
from tests.fleet.conftest import Postgres


class Pod:
    """One sidecar's audit side: local outbox, central keys, shipping."""

    def __init__(self, directory: Path, url: str, kek: crypto.Kek, name: str,
                 signer: chain.Signer | None = None) -> None:
        self.central = Central(url, kek)
        self.signer = signer or chain.Signer.load_or_create(directory / "signing.key")
        self.chain_id = name
        self.central.register_chain(name, self.signer.public_hex())
        self.keys_db = open_database_in(directory, "audit-keys.db", _KEY_MIGRATIONS)
        self.keyring = KeyRing(self.central, self.keys_db, cache_seconds=30)
        self.store = AuditStore(directory, kek, self.signer, self.central.index_key,
                                keyring=self.keyring)
        self.outbox = open_database_in(directory, "audit.db", _MIGRATIONS)
        self.ship_keys = open_database_in(directory, "audit-keys.db", _KEY_MIGRATIONS)

    def ship_all(self, batch: int = 5000) -> int:
        total = 0
        while True:
            result = ship(self.central, self.outbox, self.ship_keys, self.chain_id,
                          batch=batch)
            assert not result.problem, result.problem
            total += result.shipped
            self.store.outbox_shipped(prune_outbox(self.outbox, result.acked_seq))
            if result.shipped == 0:
                return total

    def close(self) -> None:
        self.store.close()
        self.central.close()


def open_database_in(directory: Path, name: str, migrations: dict[int, list[str]]
                     ) -> object:
    directory.mkdir(parents=True, exist_ok=True)
    return open_database(directory / name, migrations).conn


def record(subject: str = "", tenant: str = "acme", text: str = "hello") -> NewRecord:
    return NewRecord(tenant=tenant, app="app", direction="prompt", decision="ALLOW",
                     policy="p", revision="r", retain_until=4e9, subject_id=subject,
                     payload=text.encode())


@pytest.fixture
def kek() -> crypto.Kek:
    return crypto.Kek(crypto.new_dek())


def test_pods_migrating_at_once_apply_each_migration_once(store_url: str) -> None:
    errors: list[BaseException] = []
    applied: list[list[int]] = []
    start = threading.Barrier(6)

    def pod() -> None:
        try:
            start.wait()
            applied.append(migrate(store_url))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=pod) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(v for versions in applied for v in versions) == sorted(MIGRATIONS)
    with psycopg.connect(store_url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == sorted(MIGRATIONS)


def test_shipping_is_ordered_idempotent_and_pruned_after_commit(
        tmp_path: Path, store_url: str, kek: crypto.Kek) -> None:
    pod = Pod(tmp_path / "a", store_url, kek, "pod-a")
    ids = [i for _ in range(5) for i in pod.store.append(
        [record(f"s{n}") for n in range(7)])]
    pod.store.checkpoint()
    assert pod.ship_all(batch=10) == 35
    # Shipping again sends nothing twice; the outbox kept only what chains on.
    assert pod.ship_all() == 0
    assert pod.store.outbox_records == 0
    with psycopg.connect(store_url) as conn:
        stored = [r[0] for r in conn.execute(
            "SELECT id FROM records WHERE chain_id = 'pod-a' ORDER BY seq")]
    assert stored == ids
    # The chain continues from the stub the prune left.
    more = pod.store.append([record("s1")])
    pod.store.checkpoint()
    assert pod.ship_all() == 1
    fleet = FleetStore(Central(store_url, kek), pod.signer)
    result = fleet.verify([pod.signer.public_hex()])
    assert result.ok, result.problems
    assert result.checked == 36
    assert more[0] in {r["id"] for r in fleet.records()}
    pod.close()
    fleet.close()


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(1, 40), st.booleans(), st.integers(1, 30)),
                min_size=1, max_size=6))
def test_any_interleaving_of_writes_checkpoints_and_shipping_loses_and_doubles_nothing(
        postgres: Postgres, tmp_path_factory: pytest.TempPathFactory,
        steps: list[tuple[int, bool, int]]) -> None:
    url = postgres.database()
    kek = crypto.Kek(crypto.new_dek())
    pod = Pod(tmp_path_factory.mktemp("pod"), url, kek, "pod")
    written: list[str] = []
    for count, sign, batch in steps:
        written += pod.store.append([record(f"s{i % 3}") for i in range(count)])
        if sign:
            pod.store.checkpoint()
        result = ship(pod.central, pod.outbox, pod.ship_keys, "pod", batch=batch)
        assert not result.problem
        pod.store.outbox_shipped(prune_outbox(pod.outbox, result.acked_seq))
    pod.store.checkpoint()
    pod.ship_all(batch=7)
    with psycopg.connect(url) as conn:
        stored = [r[0] for r in conn.execute("SELECT id FROM records ORDER BY seq")]
    assert stored == written
    fleet = FleetStore(Central(url, kek), pod.signer)
    assert fleet.verify([pod.signer.public_hex()]).ok
    pod.close()
    fleet.close()


def test_a_rolled_back_pod_is_refused_and_named(tmp_path: Path, store_url: str,
                                                kek: crypto.Kek) -> None:
    import shutil

    pod = Pod(tmp_path / "a", store_url, kek, "pod-a")
    pod.store.append([record() for _ in range(3)])
    pod.store.checkpoint()
    pod.ship_all()
    signer = pod.signer
    pod.close()
    # The pod's disk is replaced by an empty one (or an old copy): it starts over at seq 1.
    shutil.rmtree(tmp_path / "a")
    again = Pod(tmp_path / "a", store_url, kek, "pod-a", signer)
    again.store.append([record() for _ in range(5)])
    result = ship(again.central, again.outbox, again.ship_keys, "pod-a")
    assert result.shipped == 0
    assert "rolled back" in result.problem
    fleet = FleetStore(Central(store_url, kek), signer)
    verification = fleet.verify([signer.public_hex()])
    assert not verification.ok
    assert "chain pod-a: rolled back" in verification.reason
    again.close()
    fleet.close()


def test_verify_names_a_gap_and_a_foreign_key(tmp_path: Path, store_url: str,
                                              kek: crypto.Kek) -> None:
    fleet_key = chain.Signer.load_or_create(tmp_path / "fleet.key")
    good = Pod(tmp_path / "a", store_url, kek, "pod-a", fleet_key)
    foreign = Pod(tmp_path / "b", store_url, kek, "pod-b")  # a key of its own
    for pod in (good, foreign):
        pod.store.append([record() for _ in range(6)])
        pod.store.checkpoint()
        pod.ship_all()
    with psycopg.connect(store_url) as conn:
        conn.execute("DELETE FROM records WHERE chain_id = 'pod-a' AND seq IN (3, 4)")
    fleet = FleetStore(Central(store_url, kek), fleet_key)
    result = fleet.verify([fleet_key.public_hex()])
    reasons = [p.reason for p in result.problems]
    assert any(r.startswith("chain pod-a: records 3-4 are missing") for r in reasons), reasons
    assert any("chain pod-b is registered with key" in r and "not a pinned key" in r
               for r in reasons), reasons
    for pod in (good, foreign):
        pod.close()
    fleet.close()


def test_erasure_destroys_the_key_for_every_pod_and_the_store(
        tmp_path: Path, store_url: str, kek: crypto.Kek) -> None:
    a = Pod(tmp_path / "a", store_url, kek, "pod-a")
    b = Pod(tmp_path / "b", store_url, kek, "pod-b")
    for pod in (a, b):
        pod.keyring.listen()
    a.store.append([record("alice", text="alice's secret")])
    b.store.append([record("alice", text="more of alice")])
    old_key = a.store.data_key("alice", "acme")
    assert b.store.data_key("alice", "acme") == old_key  # one key per subject, fleet-wide
    for pod in (a, b):
        pod.store.checkpoint()
        pod.ship_all()
    fleet = FleetStore(Central(store_url, kek), a.signer)
    receipt = fleet.erase("alice", actor="test")
    assert receipt.records_affected == 2
    # NOTIFY reaches both pods well within the cache time.
    for pod in (a, b):
        for _ in range(100):
            if pod.store.data_key("alice", "acme")[0] != old_key[0]:
                break
            threading.Event().wait(0.05)
        assert pod.store.data_key("alice", "acme")[0] != old_key[0]
        assert pod.store.key_by_id(old_key[0]) is None
    assert all(fleet.payload(r) is None for r in fleet.records("subject_ref = ?",
                                                                (receipt.subject_ref,)))
    # A record written after the erasure uses the new key and stays readable.
    a.store.append([record("alice", text="after")])
    a.store.checkpoint()
    a.ship_all()
    after = [fleet.payload(r) for r in fleet.records("subject_ref = ?", (receipt.subject_ref,))]
    assert after == [None, None, b"after"]
    assert fleet.verify([a.signer.public_hex(), b.signer.public_hex()]).ok
    for pod in (a, b):
        pod.keyring.close()
        pod.close()
    fleet.close()


def test_concurrent_turns_on_two_pods_never_fork_a_conversation(
        tmp_path: Path, store_url: str, kek: crypto.Kek) -> None:
    pods = [Pod(tmp_path / n, store_url, kek, n) for n in ("a", "b")]
    vaults = [CentralVault(p.central, p.store) for p in pods]
    names = [f"Person{n}" for n in range(20)]
    issued: list[dict[str, str]] = [{}, {}]

    def turns(index: int) -> None:
        for name in names[index::2] + names:
            exchange = vaults[index].exchange("acme", "u1", "conv", Exchange(
                values=[("PERSON", name)], tokens=[]), ttl=600)
            issued[index][name] = exchange.placeholders[0]

    threads = [threading.Thread(target=turns, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert issued[0] == issued[1]
    assert len(set(issued[0].values())) == len(names)
    back = vaults[1].exchange("acme", "u1", "conv", Exchange(values=[], tokens=list(
        issued[0].values())), ttl=600)
    assert back.restored == {token: name for name, token in issued[0].items()}
    for pod in pods:
        pod.close()
