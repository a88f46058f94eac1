"""A legal hold covers a subject's (or tenant's) pseudonym-vault conversations too: the
retention sweep must not purge them past their TTL, locally or fleet-wide."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit import chain, crypto
from audit.pgstore import Central, CentralVault, FleetStore, KeyRing
from audit.store import _KEY_MIGRATIONS, AuditStore, open_database
from audit.vault import Exchange, Vault


def _local(tmp_path: Path) -> AuditStore:
    return AuditStore(tmp_path / "audit", crypto.Kek(crypto.new_dek()),
                      chain.Signer.load_or_create(tmp_path / "signing.key"), b"i" * 32)


@pytest.mark.parametrize("scope", ["subject", "tenant"])
def test_a_held_conversation_outlives_its_ttl_in_the_local_vault(tmp_path: Path,
                                                                 scope: str) -> None:
    store = _local(tmp_path)
    vault = Vault(store)
    for subject in ("held", "free"):
        vault.exchange("acme" if subject == "held" else "other", subject, "c",
                       Exchange(values=[("PERSON", "Ann Lee")], tokens=[]), ttl=1, now=100.0)
    store.hold(scope, "held" if scope == "subject" else "acme", "case 7")
    report = store.sweep(now=200.0)
    assert report.conversations == 1  # the unheld one
    back = vault.exchange("acme", "held", "c", Exchange(values=[], tokens=["<PERSON_1>"]),
                          ttl=1, now=100.5)
    assert back.restored == {"<PERSON_1>": "Ann Lee"}
    vault.close()
    store.close()


def test_a_held_conversation_outlives_its_ttl_in_the_fleet_vault(tmp_path: Path,
                                                                 store_url: str) -> None:
    kek = crypto.Kek(crypto.new_dek())
    central = Central(store_url, kek)
    signer = chain.Signer.load_or_create(tmp_path / "signing.key")
    central.register_chain("pod", signer.public_hex())
    (tmp_path / "audit").mkdir()
    keys = open_database(tmp_path / "audit" / "audit-keys.db", _KEY_MIGRATIONS).conn
    store = AuditStore(tmp_path / "audit", kek, signer, central.index_key,
                       keyring=KeyRing(central, keys))
    vault = CentralVault(central, store)
    for subject in ("held", "free"):
        vault.exchange("acme", subject, "c", Exchange(values=[("PERSON", "Ann Lee")],
                                                      tokens=[]), ttl=1, now=100.0)
    fleet = FleetStore(Central(store_url, kek), signer)
    fleet.hold("subject", "held", "case 7", actor="test")
    assert fleet.sweep(now=200.0).conversations == 1
    back = vault.exchange("acme", "held", "c", Exchange(values=[], tokens=["<PERSON_1>"]),
                          ttl=1, now=100.5)
    assert back.restored == {"<PERSON_1>": "Ann Lee"}
    assert fleet.verify([signer.public_hex()]).ok
    store.close()
    fleet.close()
    central.close()
