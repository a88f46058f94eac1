"""Organisations named with a legal form (issue 18: `Thyrocare Technologies Ltd`, `Seven
Oaks Acquisition Corp.` were missed or cut), sidecar.pii.organizations.

As properties: a generated company name with a legal form, anywhere in generated prose or
on a line of its own under a person's name, is found whole and alone; prose that only
uses the words ("limited", "trust me", "Denver, CO") yields nothing; hostile input costs
bounded work. Then once through the real pipeline.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.pii.organizations import find
from tests.test_detection_recognizers import findings, policy

WORDS = st.sampled_from(["Thyrocare", "Seven", "Oaks", "Acquisition", "Nordic", "Blue",
                         "River", "Pharma", "Zix", "Golden", "Lines", "AYM", "Syntex",
                         "Harvard", "Bioscience", "Kayne", "Anderson", "Energy", "Olsen",
                         "Technologies", "Müller", "Łódź", "Kōgyō", "3M", "Orchid"])
FORMS = st.sampled_from(["Ltd", "Ltd.", "Limited", "Inc.", "Inc", "Corp.", "Corporation",
                         "PLC", "Plc", "plc", "LLC", "GmbH", "AG", "S.A.", "SA", "SpA",
                         "N.V.", "B.V.", "ASA", "Oyj", "Pty Ltd", "S.r.l.", "Co.", "Co. Ltd.",
                         "CO.LTD.", "hf", "A/S", "Group", "Holdings", "Trust", "Fund Inc."])
NAMES = st.tuples(st.lists(WORDS, min_size=1, max_size=4), FORMS, st.booleans()).map(
    lambda t: (" ".join(t[0]) + " " + t[1]).upper() if t[2] else " ".join(t[0]) + " " + t[1])
BEFORE = st.sampled_from(["", "I work for ", "Invoice from ", "The contract with ",
                          "Ross Marín of ", "Escalation: ", "We met people at ",
                          "Jane Doe\n", "Jane Doe\\n", "}}Gréta Halász\\n}}"])
AFTER = st.sampled_from(["", " is late.", ", and the rest.", "'s invoice is due.",
                         "\n1 Main Street", "\\n380 Baker St", ". Thanks!"])


def _spans(text: str) -> list[str]:
    return [text[start:end] for start, end, _, _ in find(text)]


@settings(max_examples=300, deadline=None)
@given(name=NAMES, before=BEFORE, after=AFTER)
def test_a_company_with_a_legal_form_is_found_whole_and_alone(
        name: str, before: str, after: str) -> None:
    text = before + name + after
    # A sentence's full stop after `Ltd` may be read as the abbreviation's: either is fine.
    allowed = [[name], [name + "."]] if after.startswith(".") else [[name]]
    assert _spans(text) in allowed, (text, _spans(text))


@settings(max_examples=100, deadline=None)
@given(first=NAMES, second=NAMES, joiner=st.sampled_from([", ", " and ", "; ", "\n"]))
def test_two_companies_stay_two(first: str, second: str, joiner: str) -> None:
    text = f"Suppliers: {first}{joiner}{second} and more"
    assert _spans(text) == [first, second], text


LOOKALIKES = [
    "The offer is limited to one per customer.", "Trust me, it works.", "I trust Inc",
    "Ship it to Denver, CO 80302 by Friday.", "Send it to Denver CO 80302 today.",
    "We need a fund for this.", "The group meets on Monday.", "Our Group meeting is late.",
    "Ltd", "Inc.", "PLC", "Version 2.3 of the SA tool.", "company policy says no",
    "Please, Trust the process.", "AG", "e.g. inc. or ltd.",
]


@settings(max_examples=100, deadline=None)
@given(index=st.integers(0, len(LOOKALIKES) - 1),
       pad=st.sampled_from(["", "Hello. ", "ok ", "\n"]))
def test_prose_using_the_words_is_not_a_company(index: int, pad: str) -> None:
    assert _spans(pad + LOOKALIKES[index]) == []


def test_hostile_input_costs_bounded_work() -> None:
    """Every word a legal form, or every word capitalised before one: each form walks
    back at most eight words and findings never overlap."""
    forms = "Ltd " * 50_000
    assert find(forms) == []
    capitals = ("Acme " * 30 + "Ltd ") * 2_000
    found = find(capitals)
    assert len(found) == 2_000
    assert all(len(capitals[s:e].split()) <= 9 for s, e, _, _ in found)


def test_legal_form_organisations_are_found_through_the_pipeline(tmp_path: Path) -> None:
    """The NER model kept `Oaks Acquisition Corp.` of `Seven Oaks Acquisition Corp.` and
    missed `Britvic Plc` under a name: the whole name is covered now."""
    text = ("Escalation: Seven Oaks Acquisition Corp. reports unpaid invoices.\n"
            "Kristiana Valbergsdottir\nBritvic Plc\n380 Baker Street")
    pipeline = policy(tmp_path, "pii:\n  entities:\n    ORGANIZATION: {action: replace}\n")
    spans = [(s, e) for kind, s, e in findings(pipeline, text) if kind == "ORGANIZATION"]
    for name in ("Seven Oaks Acquisition Corp.", "Britvic Plc"):
        start = text.index(name)
        covered = {i for s, e in spans for i in range(s, e)}
        assert set(range(start, start + len(name))) <= covered, name
