"""Names heading a signature or an envelope (issue 18, round 4), as `sidecar.pii.names`
finds them and through the shipped policy.

A line that holds only a name, directly above a line with an organisation's legal form
or a street address, is a person; a closing, a heading or the organisation's own line
above an address is not. Generated over names of many cultures, quote markers and both
kinds of line break (a real one, and a literal `\\n` pasted from JSON).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.pii.names import find
from sidecar.pipeline import Pipeline
from sidecar.types import Inspection

ROOT = Path(__file__).resolve().parent.parent
FIRST = ["Hélène", "Dominic", "Snæfríður", "Lucie", "Esjar", "Amara", "Keiko", "Thabo",
         "Wojciech", "Ngozi", "Søren", "Đorđe", "Rahul", "Zoë"]
LAST = ["Fremont", "Alexander", "Friðbjarnardóttir", "Šťastná", "Sturluson", "Okonkwo",
        "Nakamura-Schmidt", "Dvořáková", "O'Brien", "de Vries", "Fernández García", "Mokoena"]
INITIAL = st.sampled_from(["", "T ", "E. "])
ORGS = ["Thyrocare Technologies Ltd", "National Bankshares Inc.", "Tesaro Inc.",
        "RM2 International SA", "Seven Oaks Acquisition Corp.", "Britvic Plc"]
STREETS = ["750 Wilgenlaan 40", "66700 Hauptstrasse 75", "4429 York St", "12 Baker Street",
           "Calle de Alcalá 155"]
MARKERS = ["", "> ", "}} ", "}}", "| "]
BREAKS = ["\n", "\\n"]


def spans(text: str) -> list[str]:
    return [text[start:end] for start, end, _, _ in find(text)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.sampled_from(FIRST), initial=INITIAL, last=st.sampled_from(LAST),
       below=st.sampled_from(ORGS + STREETS), marker=st.sampled_from(MARKERS),
       newline=st.sampled_from(BREAKS),
       before=st.sampled_from(["", "Thanks for your help.", "Regards,", "--"]))
def test_a_name_heading_an_organisation_or_address_is_found(
        first: str, initial: str, last: str, below: str, marker: str, newline: str,
        before: str) -> None:
    """Failed before round 4: the NER model takes few such lines for a person (a quarter
    of the PERSON misses on held-out evaluator samples)."""
    name = f"{first} {initial}{last}"
    head = f"{marker}{before}{newline}" if before else ""
    street = f"{newline}{marker}4 Rue des Buissons 386" if below in ORGS else ""
    text = f"{head}{marker}{name}{newline}{marker}{below}{street}{newline}{marker}Tel. 5550"
    assert name in spans(text), (text, spans(text))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=st.sampled_from(["Kind Regards", "Best Wishes", "Many Thanks", "Head Office",
                             "Contact Details", "Personal Info", "ACME SUPPORT TEAM",
                             "Thyrocare Technologies Ltd", "Sent From My iPhone",
                             "Billing Address", "Registered Office"]),
       below=st.sampled_from(ORGS + STREETS), marker=st.sampled_from(MARKERS),
       newline=st.sampled_from(BREAKS))
def test_closings_headings_and_organisations_are_no_name(line: str, below: str, marker: str,
                                                         newline: str) -> None:
    assert spans(f"{marker}{line}{newline}{marker}{below}{newline}{marker}12 Baker St") == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=st.sampled_from(["Release Notes", "Quarterly Report", "Product Team",
                             "Jonas Berg"]),
       org=st.sampled_from(ORGS), newline=st.sampled_from(BREAKS))
def test_a_heading_above_an_organisation_alone_is_no_name(line: str, org: str,
                                                          newline: str) -> None:
    """Above an organisation, only a signature (a street follows) makes a name."""
    assert spans(f"{line}{newline}{org}{newline}Revenue grew 4% in Q3.") == []


@pytest.mark.parametrize("text", [
    "Jonas Berg\nwill join the call tomorrow",      # nothing below says who he is
    "Release 4.2 Notes\n12 Baker Street",             # a digit: no name
    "Jonas Berg went to\nAcme Widgets Ltd",          # more than a name on the line
])
def test_a_name_line_needs_its_block(text: str) -> None:
    assert spans(text) == []


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.sampled_from(FIRST), last=st.sampled_from(LAST),
       newline=st.sampled_from(BREAKS))
def test_through_the_shipped_policy_the_head_is_replaced(
        shipped: Pipeline, first: str, last: str, newline: str) -> None:
    name = f"{first} {last}"
    verdict = shipped.run(Inspection.of_text(
        f"}} {name}{newline}}} Tesaro Inc.{newline}}} 66700 Hauptstrasse 75"))
    assert name not in verdict.messages[0].content


def test_a_long_block_costs_linear_time() -> None:
    """Every line a name over an address: each line is read once, each found once."""
    text = "\\n".join(f"Amara Okonkwo\\n{n} Baker Street" for n in range(1, 3001))
    assert len(spans(text)) == 3000


# --- record fields on pasted lines ----------------------------------------------------

KEYS = ["Name", "Full name", "Patient", "Customer name", "Cardholder"]
PERSONAL = ["Phone: 449 5500", "Address: 12 Baker Street", "E-mail: x@example.org",
            "DOB: 1961-04-02"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.sampled_from(FIRST), last=st.sampled_from(LAST), key=st.sampled_from(KEYS),
       other=st.sampled_from(PERSONAL), newline=st.sampled_from(BREAKS),
       marker=st.sampled_from(MARKERS), pad=st.sampled_from([" ", "    "]))
def test_a_name_field_of_a_pasted_record_is_found(first: str, last: str, key: str, other: str,
                                                  newline: str, marker: str, pad: str) -> None:
    """Failed before round 4 for `\\n`-pasted records (`Date: ...\\nName: Tim Boehm\\nPhone:
    ...`): the field cue read only real lines, and a bare `Name:` never."""
    name = f"{first} {last}"
    text = (f"{marker}Date: 2008-01-03 08:39:33{newline}{marker}{key}:{pad}{name}"
            f"{newline}{marker}{other}")
    assert name in spans(text), (text, spans(text))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.sampled_from(["CI", "Release Notes", "Mobile App", "Acme Portal"]),
       other=st.sampled_from(["Version: 2.4.1", "Status: green", "Owner: platform"]),
       newline=st.sampled_from(BREAKS))
def test_a_bare_name_field_of_a_thing_is_no_person(value: str, other: str,
                                                   newline: str) -> None:
    """`name` alone also names builds, apps and products: without a field only people
    have it is not read."""
    assert spans(f"Name: {value}{newline}{other}") == []


@pytest.mark.parametrize("newline", BREAKS)
def test_a_blank_line_under_the_name_keeps_the_envelope(newline: str) -> None:
    text = f"Amadeo Vitorović{newline}{newline}5759 Östbygatan 14{newline} Suite 707"
    assert spans(text) == ["Amadeo Vitorović"]
