"""Entity identity in the fleet's pseudonym vault (audit.pgstore.CentralVault on a real
PostgreSQL): case variants of one value share its placeholder across pods, and restore
the first form the conversation used, exactly as the local vault does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import chain, crypto
from audit.pgstore import Central, CentralVault, KeyRing
from audit.store import _KEY_MIGRATIONS, AuditStore, open_database
from audit.vault import Exchange, identity
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from tests.faults import kill_leftovers
from tests.fleet.conftest import Postgres, fleet_secrets
from tests.fleet.test_fleet_pods import Fleet
from tests.test_pseudonyms import NAMES, _variant


@pytest.fixture(scope="module")
def pods(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet-identity")
    running = Fleet(work, postgres.database(), fleet_secrets(work / "secrets"), size=2)
    try:
        yield running
    finally:
        running.stop()
        kill_leftovers()


def test_case_variants_on_two_pods_share_one_placeholder(pods: Fleet) -> None:
    a, b = pods.pods
    tenant = {"tenant": "pseudo", "conversation_id": "fleet-case-1"}
    first = a.prompt("Jane Doe wrote from Jane.Doe@Example.COM today.", **tenant)
    assert first.text == "<PERSON_1> wrote from <EMAIL_ADDRESS_1> today."
    second = b.prompt("JANE DOE called again with John Smith from jane.doe@example.com.",
                      **tenant)
    assert second.text == "<PERSON_1> called again with <PERSON_2> from <EMAIL_ADDRESS_1>."
    assert a.stub is not None
    back = a.stub.InspectCompletion(pb.InspectRequest(
        text="Dear <PERSON_1> (<EMAIL_ADDRESS_1>), <PERSON_2> is copied.", tenant="pseudo",
        conversation_id="fleet-case-1"), timeout=30)
    assert back.text == "Dear Jane Doe (Jane.Doe@Example.COM), John Smith is copied."


@pytest.fixture(scope="module")
def central_vault(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[CentralVault]:
    directory = tmp_path_factory.mktemp("central-identity")
    kek = crypto.Kek(crypto.new_dek())
    central = Central(postgres.database(), kek)
    signer = chain.Signer.load_or_create(directory / "signing.key")
    central.register_chain("identity-pod", signer.public_hex())
    (directory / "audit").mkdir()
    keys = open_database(directory / "audit" / "audit-keys.db", _KEY_MIGRATIONS).conn
    store = AuditStore(directory / "audit", kek, signer, central.index_key,
                       keyring=KeyRing(central, keys))
    try:
        yield CentralVault(central, store)
    finally:
        store.close()
        central.close()


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, other=NAMES, data=st.data())
def test_fleet_vault_identity_is_case_blind_and_nothing_else(
        central_vault: CentralVault, name: str, other: str, data: st.DataObject) -> None:
    """The local vault's property (tests/test_pseudonyms.py), on PostgreSQL."""
    conversation = f"prop-{uuid.uuid4().hex}"

    def issue(value: str) -> str:
        return central_vault.exchange("acme", "ada", conversation, Exchange(
            [("PERSON", value)], []), ttl=60).placeholders[0]

    assert issue(name) == "<PERSON_1>"
    assert issue(_variant(name, data)) == issue(name.upper()) == "<PERSON_1>"
    different = identity(other) != identity(name)
    assert (issue(other) == "<PERSON_2>") is different
    back = central_vault.exchange("acme", "ada", conversation, Exchange(
        [], ["<PERSON_1>", "<PERSON_2>"]), ttl=60).restored
    assert back == ({"<PERSON_1>": name, "<PERSON_2>": other} if different
                    else {"<PERSON_1>": name})


