"""Reversible pseudonymization through gRPC: stable per conversation, restored in
completions, isolated, expiring, erasable, and safe under concurrent turns."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import crypto
from audit.vault import Exchange, Vault, identity, vault_path
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.auditing import open_store
from tests.conftest import Sidecar, make_settings, raw_bytes


def _prompt(sidecar: Sidecar, text: str, conversation: str, **fields: object) -> pb.InspectResponse:
    fields.setdefault("tenant", "pseudo")
    return sidecar.prompt(text, conversation_id=conversation, **fields)


def _completion(sidecar: Sidecar, text: str, conversation: str,
                **fields: object) -> pb.InspectResponse:
    fields.setdefault("tenant", "pseudo")
    return sidecar.completion(text, conversation_id=conversation, **fields)


def test_the_same_value_keeps_its_placeholder_across_turns(sidecar: Sidecar) -> None:
    first = _prompt(sidecar, "Jane Doe wrote from jane@example.com today.", "stable-1")
    assert first.decision == pb.MODIFY
    assert first.text == "<PERSON_1> wrote from <EMAIL_ADDRESS_1> today."
    assert [f.action for f in first.findings] == ["pseudonymize", "pseudonymize"]
    assert (first.findings[0].start, first.findings[0].end) == (0, 8)
    second = _prompt(sidecar, "Ask John Smith to call Jane Doe at jane@example.com.", "stable-1")
    assert second.text == "Ask <PERSON_2> to call <PERSON_1> at <EMAIL_ADDRESS_1>."


def test_a_possessive_keeps_the_name_s_placeholder_and_restores_sensibly(
        sidecar: Sidecar) -> None:
    """spaCy's span for `Jane Doe's` keeps the `'s`: it got a placeholder of its own and
    restoration wrote `Dear Jane Doe's`."""
    first = _prompt(sidecar, "Jane Doe called about her order.", "possessive-1")
    assert first.text == "<PERSON_1> called about her order."
    second = _prompt(sidecar, "Where is Jane Doe's parcel? Jane Doe\u2019s address changed.",
                     "possessive-1")
    assert second.text == "Where is <PERSON_1>'s parcel? <PERSON_1>\u2019s address changed."
    answer = _completion(sidecar, "Dear <PERSON_1>, <PERSON_1>'s parcel left today.",
                         "possessive-1")
    assert answer.text == "Dear Jane Doe, Jane Doe's parcel left today."


def test_conversations_tenants_and_subjects_never_share_mappings(sidecar: Sidecar) -> None:
    _prompt(sidecar, "Jane Doe and John Smith met.", "isolated-1")
    other = _prompt(sidecar, "John Smith called.", "isolated-2")
    assert other.text == "<PERSON_1> called."
    other_tenant = _prompt(sidecar, "John Smith called.", "isolated-1", tenant="pseudo-b")
    assert other_tenant.text == "<PERSON_1> called."
    other_subject = _prompt(sidecar, "John Smith called.", "isolated-1", subject_id="ada")
    assert other_subject.text == "<PERSON_1> called."
    # Conversation 2's placeholder means something else in conversation 1: never mixed.
    restored = _completion(sidecar, "<PERSON_1> is here.", "isolated-2")
    assert restored.text == "John Smith is here."


def test_restores_reordered_and_repeated_placeholders(sidecar: Sidecar) -> None:
    sent = _prompt(sidecar, "Jane Doe emailed John Smith at john@example.com.", "restore-1")
    assert sent.text == "<PERSON_1> emailed <PERSON_2> at <EMAIL_ADDRESS_1>."
    back = _completion(sidecar, "Dear <PERSON_2>, <PERSON_1> wrote to <EMAIL_ADDRESS_1>. "
                                "Thanks, <PERSON_2>!", "restore-1")
    assert back.decision == pb.MODIFY
    assert back.text == ("Dear John Smith, Jane Doe wrote to john@example.com. "
                         "Thanks, John Smith!")
    assert list(back.restored) == ["<PERSON_2>", "<PERSON_1>", "<EMAIL_ADDRESS_1>"]


def test_look_alike_placeholders_are_left_alone(sidecar: Sidecar) -> None:
    _prompt(sidecar, "Jane Doe is the customer.", "forged-1")
    text = "<PERSON_9>, <EMAIL_ADDRESS_1>, <person_1>, <PERSON_01> and <PERSON_1>."
    back = _completion(sidecar, text, "forged-1")
    assert back.text == "<PERSON_9>, <EMAIL_ADDRESS_1>, <person_1>, <PERSON_01> and Jane Doe."
    assert list(back.restored) == ["<PERSON_1>"]
    untouched = _completion(sidecar, "<PERSON_9> only.", "forged-1")
    assert untouched.decision == pb.ALLOW and untouched.text == "<PERSON_9> only."
    assert not untouched.restored


def test_a_placeholder_the_user_typed_is_never_issued_for_another_value(
        sidecar: Sidecar) -> None:
    sent = _prompt(sidecar, "Replace <PERSON_1> with Jane Doe.", "typed-1")
    assert sent.text == "Replace <PERSON_1> with <PERSON_2>."
    back = _completion(sidecar, "Done: <PERSON_2>.", "typed-1")
    assert back.text == "Done: Jane Doe."


def test_restoring_into_json_keeps_it_valid(sidecar: Sidecar) -> None:
    sent = _prompt(sidecar, 'Jane Doe asked about "the order".', "json-1")
    assert sent.text == '<PERSON_1> asked about "the order".'
    completion = json.dumps({"to": "<PERSON_1>", "body": "Hello <PERSON_1>, all set."})
    back = _completion(sidecar, completion, "json-1", output_schema="note")
    assert back.decision == pb.MODIFY, back
    assert json.loads(back.text) == {"to": "Jane Doe", "body": "Hello Jane Doe, all set."}


def test_completions_get_new_values_pseudonymized_not_restored(sidecar: Sidecar) -> None:
    _prompt(sidecar, "Jane Doe asked.", "mixed-1")
    back = _completion(sidecar, "<PERSON_1> should ask Peter Parker.", "mixed-1")
    assert back.text == "Jane Doe should ask <PERSON_2>."


def test_without_a_conversation_placeholders_hold_for_the_request_only(
        sidecar: Sidecar) -> None:
    first = sidecar.prompt("a@example.com, b@example.com, a@example.com.", tenant="pseudo")
    assert first.text == "<EMAIL_ADDRESS_1>, <EMAIL_ADDRESS_2>, <EMAIL_ADDRESS_1>."
    second = sidecar.prompt("b@example.com.", tenant="pseudo")
    assert second.text == "<EMAIL_ADDRESS_1>."
    back = sidecar.completion("<EMAIL_ADDRESS_1>", tenant="pseudo")
    assert back.text == "<EMAIL_ADDRESS_1>" and back.decision == pb.ALLOW


def test_mappings_expire_after_their_ttl(sidecar: Sidecar) -> None:
    sent = _prompt(sidecar, "Jane Doe called.", "ttl-1", tenant="pseudo-short")
    assert sent.text == "<PERSON_1> called."
    assert _completion(sidecar, "Hi <PERSON_1>", "ttl-1", tenant="pseudo-short").text == \
        "Hi Jane Doe"
    time.sleep(1.3)
    expired = _completion(sidecar, "Hi <PERSON_1>", "ttl-1", tenant="pseudo-short")
    assert expired.text == "Hi <PERSON_1>" and not expired.restored
    # A new mapping starts afresh.
    again = _prompt(sidecar, "John Smith called.", "ttl-1", tenant="pseudo-short")
    assert again.text == "<PERSON_1> called."


def test_erasing_the_subject_destroys_their_mappings(sidecar: Sidecar) -> None:
    _prompt(sidecar, "Jane Doe lives here.", "erase-1", subject_id="erase-me")
    _prompt(sidecar, "Grace Hopper too.", "erase-2", subject_id="erase-me")
    _prompt(sidecar, "Jane Doe lives here.", "erase-1", subject_id="keep-me")
    assert _completion(sidecar, "<PERSON_1>", "erase-1", subject_id="erase-me").text == \
        "Jane Doe"
    settings = make_settings(sidecar.audit.directory.parent.parent)
    store = open_store(settings)
    try:
        receipt = store.erase("erase-me")
    finally:
        store.close()
    assert receipt.conversations == 2
    gone = _completion(sidecar, "<PERSON_1>", "erase-1", subject_id="erase-me")
    assert gone.text == "<PERSON_1>" and not gone.restored
    kept = _completion(sidecar, "<PERSON_1>", "erase-1", subject_id="keep-me")
    assert kept.text == "Jane Doe"


def test_the_vault_file_holds_no_value_in_the_clear(sidecar: Sidecar) -> None:
    _prompt(sidecar, "Katherine Johnson wrote from kj-vault-probe@example.com.", "clear-1")
    raw = b"".join(raw_bytes(path) for path in vault_path(sidecar.audit.directory)
                   .parent.glob("vault.db*"))
    assert raw  # the vault exists
    for value in (b"Katherine", b"kj-vault-probe", b"clear-1"):
        assert value not in raw


def test_concurrent_turns_of_one_conversation_agree(sidecar: Sidecar) -> None:
    names = ["Jane Doe", "John Smith", "Grace Hopper", "Alan Turing", "Ada Lovelace"]
    texts = [f"{names[i % 5]} met {names[(i + 1) % 5]} and {names[(i + 3) % 5]}."
             for i in range(20)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda t: _prompt(sidecar, t, "concurrent-1"), texts))
    seen: dict[str, str] = {}
    for text, reply in zip(texts, replies, strict=True):
        tokens = reply.text.removesuffix(".").replace(" met ", ",").replace(" and ", ",")
        values = text.removesuffix(".").replace(" met ", ",").replace(" and ", ",")
        for value, token in zip(values.split(","), tokens.split(","), strict=True):
            assert seen.setdefault(value, token) == token, (value, token, seen)
    assert len(set(seen.values())) == 5  # five names, five distinct placeholders
    assert sorted(seen.values()) == [f"<PERSON_{n}>" for n in range(1, 6)]
    back = _completion(sidecar, " ".join(sorted(seen.values())), "concurrent-1")
    assert sorted(back.text.split(" ", 9)) == sorted(" ".join(names).split(" "))


# -- entity identity: case variants of one value are one value -------------------------

def test_case_variants_share_one_placeholder_and_restore_the_first_form(
        sidecar: Sidecar) -> None:
    """`JANE DOE` got a placeholder of its own, so the model saw two people and
    restoration could not say which form to write. Now every case variant of a value
    shares the first one's placeholder, which restores the first form the user wrote."""
    first = _prompt(sidecar, "Jane Doe wrote from Jane.Doe@Example.COM today.", "case-1")
    assert first.text == "<PERSON_1> wrote from <EMAIL_ADDRESS_1> today."
    second = _prompt(sidecar, "Please ask JANE DOE to call back: jane.doe@example.com or "
                              "JANE.DOE@EXAMPLE.COM.", "case-1")
    assert second.text == ("Please ask <PERSON_1> to call back: <EMAIL_ADDRESS_1> or "
                           "<EMAIL_ADDRESS_1>.")
    other = _prompt(sidecar, "Jane Dow wrote from jane.dow@example.com.", "case-1")
    assert other.text == "<PERSON_2> wrote from <EMAIL_ADDRESS_2>."
    back = _completion(sidecar, "Dear <PERSON_1>, we answered <EMAIL_ADDRESS_1>; "
                                "<PERSON_2> is copied.", "case-1")
    assert back.text == ("Dear Jane Doe, we answered Jane.Doe@Example.COM; "
                         "Jane Dow is copied.")


def test_case_variants_share_a_placeholder_within_one_request(sidecar: Sidecar) -> None:
    reply = sidecar.prompt("Write to ADA@EXAMPLE.COM, ada@example.com or Ada@Example.com, "
                           "not ada2@example.com.", tenant="pseudo")
    assert reply.text == ("Write to <EMAIL_ADDRESS_1>, <EMAIL_ADDRESS_1> or "
                          "<EMAIL_ADDRESS_1>, not <EMAIL_ADDRESS_2>.")


LOCAL_PART = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=3, max_size=10)


def _recase(value: str, data: st.DataObject) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(value), max_size=len(value)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(value, flips,
                                                                          strict=True))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(local=LOCAL_PART, other=LOCAL_PART, data=st.data())
def test_any_casing_of_an_address_gets_its_placeholder_over_grpc(
        sidecar: Sidecar, local: str, other: str, data: st.DataObject) -> None:
    """Property, through the real conversation API: in one conversation, any casing of
    an address gets the placeholder its first form got and restores to that first form;
    an address that differs other than by case gets another placeholder."""
    conversation = f"case-prop-{uuid.uuid4().hex}"
    address = f"{local}@example.com"
    first = _prompt(sidecar, f"Mail {address} now.", conversation)
    assert first.text == "Mail <EMAIL_ADDRESS_1> now."
    variant = _recase(address, data)
    if variant == address:  # a case variant, never the same form again
        variant = address.upper()
    again = _prompt(sidecar, f"Also {variant} please.", conversation)
    assert again.text == "Also <EMAIL_ADDRESS_1> please."
    if other != local:
        distinct = _prompt(sidecar, f"And {_recase(other + '@example.com', data)}.",
                           conversation)
        assert distinct.text == "And <EMAIL_ADDRESS_2>."
    back = _completion(sidecar, "To <EMAIL_ADDRESS_1>", conversation)
    assert back.text == f"To {address}"


# Letters whose upper and lower forms fold back to one letter (which leaves out the
# Turkish dotless i, whose upper case is the ordinary I: see audit.vault).
LETTERS = st.characters(categories=["Lu", "Ll"]).filter(
    lambda c: c.upper().casefold() == c.lower().casefold() == c.casefold())
NAMES = st.lists(st.text(LETTERS, min_size=1, max_size=8), min_size=1, max_size=3).map(" ".join)
SPACES = st.sampled_from([" ", "  ", "\t", "\u00a0", "\n"])


def _variant(name: str, data: st.DataObject) -> str:
    """`name` in another casing, its words separated by other whitespace runs."""
    words = [_recase(word, data) for word in name.split(" ")]
    text = words[0]
    for word in words[1:]:
        text += data.draw(SPACES) + word
    return text


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, other=NAMES, data=st.data())
def test_vault_identity_is_case_and_whitespace_blind_and_nothing_else(
        tmp_path_factory: pytest.TempPathFactory, name: str, other: str,
        data: st.DataObject) -> None:
    """Property on the local vault (SQLite), over names in any script: every casing of
    a value maps to its placeholder and restores its first form; a value that differs
    other than by case or whitespace gets a placeholder of its own."""
    store = open_store(make_settings(tmp_path_factory.mktemp("identity")))
    vault = Vault(store)
    try:
        def issue(value: str) -> str:
            return vault.exchange("acme", "ada", "c1", Exchange([("PERSON", value)], []),
                                  ttl=60).placeholders[0]

        assert issue(name) == "<PERSON_1>"
        assert issue(_variant(name, data)) == "<PERSON_1>"
        assert issue(name.upper()) == issue(name.lower()) == "<PERSON_1>"
        different = identity(other) != identity(name)
        assert (issue(other) == "<PERSON_2>") is different
        assert issue(_variant(other, data)) == ("<PERSON_2>" if different else "<PERSON_1>")
        back = vault.exchange("acme", "ada", "c1", Exchange([], ["<PERSON_1>", "<PERSON_2>"]),
                              ttl=60).restored
        assert back == ({"<PERSON_1>": name, "<PERSON_2>": other} if different
                        else {"<PERSON_1>": name})
    finally:
        vault.close()
        store.close()


@settings(max_examples=40, deadline=None)
@given(name=NAMES, index=st.integers(min_value=0), data=st.data())
def test_identity_keeps_apart_values_one_letter_apart(name: str, index: int,
                                                      data: st.DataObject) -> None:
    """Never merge two people: replacing one letter with a letter that is not a case
    variant of it (nor the same letter in another compatibility form) gives another
    identity."""
    position = [i for i, c in enumerate(name) if c != " "][index % len(name.replace(" ", ""))]
    letter = name[position]
    replacement = data.draw(LETTERS.filter(
        lambda c: identity(c) != identity(letter) and len(identity(c)) == 1
        and len(identity(letter)) == 1))
    changed = name[:position] + replacement + name[position + 1:]
    assert identity(changed) != identity(name)


def test_stored_case_variants_keep_their_placeholders(sidecar: Sidecar) -> None:
    """A conversation stored before identity() was the key may hold `Jane Doe` and
    `JANE DOE` under two placeholders: both still restore, the first-issued one answers
    new variants, and the next store keeps both rows."""
    store = open_store(make_settings(sidecar.audit.directory.parent.parent))
    vault = Vault(store)
    try:
        ref = vault.conversation_ref("pseudo", "", "legacy-1")
        dek_id, dek = store.data_key("", "pseudo")
        old = json.dumps([["PERSON", "Jane Doe", 1], ["PERSON", "JANE DOE", 2]]).encode()
        sealed = crypto.seal(dek, old, b"guardrail-vault\0" + ref.encode())
        vault.db.conn.execute(
            "INSERT INTO conversations (ref, subject_ref, dek_id, sealed, entries, expires, "
            "updated, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ref, store.subject_ref(""), dek_id, sealed, 2, time.time() + 3600, time.time(),
             "pseudo"))
        vault.db.conn.commit()
    finally:
        vault.close()
        store.close()
    sent = _prompt(sidecar, "JANE DOE called again with John Smith.", "legacy-1")
    assert sent.text == "<PERSON_1> called again with <PERSON_3>."
    back = _completion(sidecar, "<PERSON_1>, <PERSON_2>, <PERSON_3>", "legacy-1")
    assert back.text == "Jane Doe, JANE DOE, John Smith"
