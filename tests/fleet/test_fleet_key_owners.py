"""Fleet mode, round 12 (outside trial 17): a data key moved to another owner in the
store, or a trigger planted there, must not let an erasure leave a subject's key live.

The trial ran `update data_keys set ref='deadbeef'` in PostgreSQL: `erase --store` then
destroyed no key (`keys_destroyed: []`) and `verify --store` said ok. Through the real
store: verify names the key, and the erasure destroys the keys the subject's records
name; a trigger on a store table fails verify and stops the erasure before it changes
anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from audit import crypto
from audit.pgstore import FleetStore
from audit.store import TamperedError
from tests.fleet.test_fleet_store import Pod, record
from tests.fleet.test_fleet_tenant_fold import _pod


@pytest.fixture
def kek() -> crypto.Kek:
    return crypto.Kek(crypto.new_dek())


@pytest.fixture
def shipped(tmp_path: Path, store_url: str, kek: crypto.Kek) -> Iterator[tuple[Pod, FleetStore]]:
    """A pod that shipped one record of alice's to the store, and the store; closed after
    the test whatever it asserted."""
    pod, fleet = _pod(tmp_path, store_url, kek)
    try:
        pod.store.append([record("alice", text="alice's secret")])
        pod.store.checkpoint()
        pod.ship_all()
        yield pod, fleet
    finally:
        pod.close()
        fleet.close()


def test_a_key_moved_to_another_owner_is_named_and_still_erased(
        shipped: tuple[Pod, FleetStore], store_url: str) -> None:
    pod, fleet = shipped
    ref = fleet.subject_ref("alice")
    with psycopg.connect(store_url, autocommit=True) as conn:
        dek_id = conn.execute("SELECT dek_id FROM data_keys WHERE ref = %s",
                              (ref,)).fetchone()[0]
        conn.execute("UPDATE data_keys SET ref = 'deadbeef' WHERE dek_id = %s", (dek_id,))
    result = fleet.verify([pod.signer.public_hex()])
    assert not result.ok and any(dek_id[:16] in p.reason for p in result.problems), \
        result.problems
    receipt = fleet.erase("alice", actor="dpo", reason="DSR 5")
    assert len(receipt.keys_destroyed) == 1
    assert [fleet.payload(r) for r in fleet.records("subject_ref = ?", (ref,))] == [None]
    with psycopg.connect(store_url, autocommit=True) as conn:
        assert conn.execute("SELECT wrapped FROM data_keys WHERE dek_id = %s",
                            (dek_id,)).fetchone()[0] is None


def test_a_planted_trigger_fails_verify_and_stops_an_erasure(
        shipped: tuple[Pod, FleetStore], store_url: str) -> None:
    pod, fleet = shipped
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE stash (dek_id TEXT, wrapped BYTEA)")
        conn.execute("CREATE FUNCTION keep() RETURNS trigger AS $$ BEGIN INSERT INTO stash "
                     "VALUES (OLD.dek_id, OLD.wrapped); RETURN NEW; END $$ LANGUAGE plpgsql")
        conn.execute("CREATE TRIGGER keep BEFORE UPDATE ON data_keys FOR EACH ROW "
                     "EXECUTE FUNCTION keep()")
    result = fleet.verify([pod.signer.public_hex()])
    assert not result.ok and any("trigger 'keep'" in p.reason for p in result.problems), \
        result.problems
    with pytest.raises(TamperedError, match="trigger 'keep'"):
        fleet.erase("alice", actor="dpo", reason="DSR 6")
    ref = fleet.subject_ref("alice")
    assert [fleet.payload(r) for r in fleet.records("subject_ref = ?", (ref,))] == \
        [b"alice's secret"]
    with psycopg.connect(store_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM stash").fetchone()[0] == 0
