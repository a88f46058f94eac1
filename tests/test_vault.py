"""The pseudonym vault on real SQLite files: round trips, two connections, erasure, TTL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.vault import MAX_ENTRIES, Exchange, Vault, identity, vault_path
from tests.test_audit_store import open_store

ENTITIES = st.sampled_from(["PERSON", "EMAIL_ADDRESS", "US_SSN"])
VALUES = st.text(min_size=1, max_size=12)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.lists(st.tuples(ENTITIES, VALUES), max_size=6), min_size=1,
                      max_size=8))
def test_placeholders_are_a_bijection_and_restore_round_trips(
        tmp_path_factory: pytest.TempPathFactory, turns: list[list[tuple[str, str]]]) -> None:
    directory = tmp_path_factory.mktemp("vault")
    # Two connections (as the server and another process would have), turns alternating.
    stores = [open_store(directory), open_store(directory)]
    vaults = [Vault(store) for store in stores]
    # One value is its case variants too (audit.vault.identity); the first form restores.
    issued: dict[tuple[str, str], str] = {}
    first: dict[str, str] = {}
    for number, values in enumerate(turns):
        exchange = vaults[number % 2].exchange("acme", "ada", "c1", Exchange(values, []), ttl=60)
        for (entity, value), token in zip(values, exchange.placeholders, strict=True):
            assert issued.setdefault((entity, identity(value)), token) == token
            first.setdefault(token, value)
    assert len(set(issued.values())) == len(issued)  # distinct values, distinct tokens
    tokens = list(issued.values())
    back = vaults[1].exchange("acme", "ada", "c1", Exchange([], tokens), ttl=60)
    assert back.restored == first
    for entity in {entity for entity, _ in issued}:  # numbered 1..n per entity type
        numbers = sorted(int(t[len(entity) + 2:-1]) for (e, _), t in issued.items()
                         if e == entity)
        assert numbers == list(range(1, len(numbers) + 1))
    for vault, store in zip(vaults, stores, strict=True):
        vault.close()
        store.close()


def test_threads_on_separate_connections_never_fork_a_mapping(tmp_path: Path) -> None:
    stores = [open_store(tmp_path) for _ in range(4)]
    vaults = [Vault(store) for store in stores]
    results: list[list[tuple[str, str]]] = [[] for _ in vaults]

    def turn(index: int) -> None:
        for round_ in range(25):
            values = [("PERSON", f"name-{(index * 7 + round_) % 30}")]
            exchange = vaults[index].exchange("acme", "", "shared", Exchange(values, []), ttl=60)
            results[index].append((values[0][1], exchange.placeholders[0]))

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(len(vaults))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mapping: dict[str, str] = {}
    for value, token in (pair for result in results for pair in result):
        assert mapping.setdefault(value, token) == token
    assert len(set(mapping.values())) == len(mapping)
    for vault, store in zip(vaults, stores, strict=True):
        vault.close()
        store.close()


def test_erasure_deletes_the_rows_and_the_key(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    vault = Vault(store)
    vault.exchange("acme", "ada", "c1", Exchange([("PERSON", "Ada")], []), ttl=60)
    vault.exchange("acme", "bob", "c1", Exchange([("PERSON", "Bob")], []), ttl=60)
    receipt = open_store(tmp_path).erase("ada")
    assert receipt.conversations == 1
    assert vault.exchange("acme", "ada", "c1", Exchange([], ["<PERSON_1>"]), ttl=60).restored == {}
    assert vault.exchange("acme", "bob", "c1", Exchange([], ["<PERSON_1>"]), ttl=60).restored == \
        {"<PERSON_1>": "Bob"}
    vault.close()
    store.close()


def test_expired_mappings_are_ignored_then_swept(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    vault = Vault(store)
    vault.exchange("acme", "", "c1", Exchange([("PERSON", "Ada")], []), ttl=10, now=1000.0)
    assert vault.exchange("acme", "", "c1", Exchange([], ["<PERSON_1>"]), ttl=10,
                          now=1009.0).restored == {"<PERSON_1>": "Ada"}
    assert vault.exchange("acme", "", "c1", Exchange([], ["<PERSON_1>"]), ttl=10,
                          now=1010.0).restored == {}
    assert store.sweep(now=1010.0).conversations == 1
    assert vault_path(store.directory).exists()
    vault.close()
    store.close()


def test_a_full_conversation_falls_back_to_unnumbered_placeholders(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    vault = Vault(store)
    values = [("PERSON", f"p{i}") for i in range(MAX_ENTRIES + 2)]
    exchange = vault.exchange("acme", "", "big", Exchange(values, []), ttl=60)
    assert exchange.placeholders[MAX_ENTRIES - 1] == f"<PERSON_{MAX_ENTRIES}>"
    assert exchange.placeholders[-2:] == ["<PERSON>", "<PERSON>"]
    vault.close()
    store.close()
