"""Norwegian streets written with `gate` apart or as a suffix (issue 18, round 5: an
outside trial's item 5): `Kongens gate 14, 7011 Trondheim`, `Olav Tryggvasons gate 5`.
Through the shipped policy; an airport's `Gate 14` and a film's `Stargate 2` stay."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.pipeline import Pipeline
from sidecar.types import Inspection

ROOT = Path(__file__).resolve().parent.parent
GENITIVE = ["Kongens", "Dronningens", "Olav Tryggvasons", "Karl Johans", "Thorvald Meyers",
            "Munkegatens", "Prinsens", "Haakon VIIs", "Fridtjof Nansens"]
STEMS = ["Kongens", "Prinsens", "Dronningens", "Nordre", "Søndre", "Kirke"]
TOWNS = ["7011 Trondheim", "0159 Oslo", "5003 Bergen", "4006 Stavanger"]
LEADS = ["Adresse: ", "Send it to ", "", "Leveringsadresse:\n"]


def addresses(pipeline: Pipeline, text: str) -> list[str]:
    verdict = pipeline.run(Inspection.of_text(text))
    return [text[f.start:f.end] for f in verdict.findings
            if f.entity_type == "STREET_ADDRESS"]


SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(street=st.sampled_from(GENITIVE), number=st.integers(1, 299),
       town=st.sampled_from(["", *TOWNS]), lead=st.sampled_from(LEADS))
def test_a_street_with_gate_apart_is_found(shipped: Pipeline, street: str, number: int,
                                           town: str, lead: str) -> None:
    """Failed before round 5: `Kongens gate 14, 7011 Trondheim` gave no address."""
    address = f"{street} gate {number}" + (f", {town}" if town else "")
    found = addresses(shipped, f"{lead}{address}")
    assert any(f"gate {number}" in span for span in found), (address, found)


@SETTINGS
@given(stem=st.sampled_from(STEMS), number=st.integers(1, 299), town=st.sampled_from(TOWNS))
def test_a_gate_suffix_with_its_postcode_is_found(shipped: Pipeline, stem: str, number: int,
                                                  town: str) -> None:
    """Failed before round 5: `Kongensgate 14, 7011 Trondheim` gave no address."""
    text = f"Adresse: {stem}gate {number}, {town}"
    assert any(f"gate {number}" in span for span in addresses(shipped, text)), text


@pytest.mark.parametrize("text", [
    "Boarding closes at Departure Gate 14, 20 minutes before the flight.",
    "We met at Heathrow gate 22 after the delay.",
    "Stargate 2 is on tonight.",
    "The Watergate 3 tapes were released.",
])
def test_gates_that_are_no_streets_stay(shipped: Pipeline, text: str) -> None:
    assert addresses(shipped, text) == []
