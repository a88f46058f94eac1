"""Fleet mode folds tenant names for legal holds exactly as local mode does
(audit.names.fold: NFKC, case folding, no surrounding whitespace).

Outside trial: the store compared tenants with `lower(btrim(..))`, so a record of tenant
`GLOBEX` in fullwidth letters or `"Globex\\u00a0"` was erased and swept past a hold on
`globex`, and a hold written in fullwidth protected nothing of `globex`. Each case here
holds one spelling and writes the other, both ways round, through the real store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import crypto
from audit.pgstore import CentralVault, FleetStore
from audit.store import LegalHoldError
from audit.vault import Exchange
from tests.fleet.test_fleet_store import Pod, record

# (the hold's tenant, the records' tenant)
SPELLINGS = [
    ("globex", "\uff27\uff2c\uff2f\uff22\uff25\uff38"),
    ("globex", "Globex\u00a0"),
    ("\uff27\uff4c\uff4f\uff42\uff45\uff58", "globex"),
    ("Globex\u00a0", "GLOBEX"),
    ("GLOBEX", "globex"),
]


@pytest.fixture
def kek() -> crypto.Kek:
    return crypto.Kek(crypto.new_dek())


def _pod(tmp_path: Path, store_url: str, kek: crypto.Kek) -> tuple[Pod, FleetStore]:
    from audit.pgstore import Central

    pod = Pod(tmp_path / "pod", store_url, kek, "pod")
    return pod, FleetStore(Central(store_url, kek), pod.signer)


@pytest.mark.parametrize(("held", "written"), SPELLINGS)
def test_a_tenant_hold_stops_an_erasure_whatever_the_spelling(
        tmp_path: Path, store_url: str, kek: crypto.Kek, held: str, written: str) -> None:
    pod, fleet = _pod(tmp_path, store_url, kek)
    pod.store.append([record("alice", tenant=written, text="alice's secret")])
    pod.store.checkpoint()
    pod.ship_all()
    hold_id = fleet.hold("tenant", held, "case 7", actor="test")
    with pytest.raises(LegalHoldError) as refused:
        fleet.erase("alice", actor="test")
    assert [h["id"] for h in refused.value.holds] == [hold_id]
    ref = fleet.subject_ref("alice")
    assert [fleet.payload(r) for r in fleet.records("subject_ref = ?", (ref,))] == \
        [b"alice's secret"]
    # Overriding it names the hold; an unrelated tenant's hold never blocks.
    fleet.release(hold_id, actor="test", reason="case closed")
    fleet.hold("tenant", "initech", "case 8", actor="test")
    assert fleet.erase("alice", actor="test").records_affected == 1
    pod.close()
    fleet.close()


@pytest.mark.parametrize(("held", "written"), SPELLINGS)
def test_a_tenant_hold_stops_the_sweep_whatever_the_spelling(
        tmp_path: Path, store_url: str, kek: crypto.Kek, held: str, written: str) -> None:
    pod, fleet = _pod(tmp_path, store_url, kek)
    pod.store.append([record("alice", tenant=written), record("bob", tenant="initech")])
    pod.store.checkpoint()
    pod.ship_all()
    fleet.hold("tenant", held, "case 7", actor="test")
    report = fleet.sweep(now=5e9)
    assert (report.removed, report.held) == (1, 1)
    assert [r["tenant"] for r in fleet.records("kind = 'inspection'")] == [written]
    assert fleet.verify([pod.signer.public_hex()]).ok
    pod.close()
    fleet.close()


@pytest.mark.parametrize(("held", "written"), SPELLINGS)
def test_a_tenant_hold_keeps_vault_conversations_whatever_the_spelling(
        tmp_path: Path, store_url: str, kek: crypto.Kek, held: str, written: str) -> None:
    pod, fleet = _pod(tmp_path, store_url, kek)
    vault = CentralVault(pod.central, pod.store)
    for tenant, subject in ((written, "held"), ("initech", "free")):
        vault.exchange(tenant, subject, "c", Exchange(values=[("PERSON", "Ann Lee")],
                                                      tokens=[]), ttl=1, now=100.0)
    fleet.hold("tenant", held, "case 7", actor="test")
    assert fleet.sweep(now=200.0).conversations == 1  # initech's only
    back = vault.exchange(written, "held", "c", Exchange(values=[], tokens=["<PERSON_1>"]),
                          ttl=1, now=100.5)
    assert back.restored == {"<PERSON_1>": "Ann Lee"}
    pod.close()
    fleet.close()


def _disguise(name: str) -> st.SearchStrategy[str]:
    """`name` as a client may spell it: each letter in either case, ASCII or fullwidth,
    with blanks around it (space, tab, NBSP, ideographic space)."""
    letters = [st.sampled_from([c.lower(), c.upper(), chr(ord(c.lower()) + 0xFEE0),
                                chr(ord(c.upper()) + 0xFEE0)]) for c in name]
    blanks = st.text(st.sampled_from(" \t\u00a0\u3000"), max_size=2)
    return st.tuples(blanks, *letters, blanks).map("".join)


def test_any_disguise_of_a_held_tenant_is_held(tmp_path: Path, store_url: str,
                                               kek: crypto.Kek) -> None:
    pod, fleet = _pod(tmp_path, store_url, kek)
    counter = iter(range(10**6))

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_disguise("globex"), _disguise("globex"))
    def held_either_way(held: str, written: str) -> None:
        subject = f"subject-{next(counter)}"
        pod.store.append([record(subject, tenant=written)])
        pod.store.checkpoint()
        pod.ship_all()
        hold_id = fleet.hold("tenant", held, "case 7", actor="test")
        try:
            with pytest.raises(LegalHoldError):
                fleet.erase(subject, actor="test")
        finally:
            fleet.release(hold_id, actor="test", reason="next example")

    held_either_way()
    pod.close()
    fleet.close()
