"""A phone label whose value is no number lends nothing to a number on another labelled
line (issue 18, round 5: an outside trial's item 4).

`Mobile: disabled\\nFax: n/a\\nVersion: 12 34 567` gave PHONE_NUMBER "12 34 567": since
round 4 the phone words are read across a literal `\\n`, and `mobile`, `fax` on the lines
above counted for the version's digits. Through the shipped policy; the national-phone
cue's findings only (Presidio's own recognizer judges numbers by its metadata alone).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.pipeline import Pipeline
from sidecar.types import Inspection

ROOT = Path(__file__).resolve().parent.parent
BREAKS = ["\n", "\\n"]
PHONE_LABELS = ["Mobile", "Fax", "Phone", "Tel", "Cell", "Office phone", "WhatsApp"]
NOT_NUMBERS = ["disabled", "n/a", "none", "-", "not set", "withheld", "see above", "ask HR"]
OTHER_LABELS = ["Version", "Build", "Order", "Ticket", "Ref", "Release", "Batch", "Job"]
GROUPED = st.builds("{} {} {}".format, st.integers(10, 99), st.integers(10, 99),
                    st.integers(100, 999))


def national_phones(pipeline: Pipeline, text: str) -> list[str]:
    verdict = pipeline.run(Inspection.of_text(text, explain=True))
    return [text[f.start:f.end] for f in verdict.findings
            if f.entity_type == "PHONE_NUMBER" and f.explanation is not None
            and f.explanation.recognizer == "NationalPhoneRecognizer"]


SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(labels=st.lists(st.sampled_from(PHONE_LABELS), min_size=1, max_size=3),
       values=st.sampled_from(NOT_NUMBERS), other=st.sampled_from(OTHER_LABELS),
       number=GROUPED, newline=st.sampled_from(BREAKS))
def test_a_phone_label_without_a_number_lends_no_context(
        shipped: Pipeline, labels: list[str], values: str, other: str, number: str,
        newline: str) -> None:
    """Failed before round 5 for `\\n`-pasted lines (`Mobile: disabled\\nFax: n/a\\n
    Version: 12 34 567` gave a phone)."""
    lines = [f"{label}: {values}" for label in labels] + [f"{other}: {number}"]
    text = f'Error output: "Build failed{newline}' + newline.join(lines) + '"'
    assert number not in national_phones(shipped, text), text


@SETTINGS
@given(label=st.sampled_from(PHONE_LABELS), number=GROUPED, newline=st.sampled_from(BREAKS),
       same_line=st.booleans())
def test_a_phone_labels_own_number_is_still_a_phone(
        shipped: Pipeline, label: str, number: str, newline: str, same_line: bool) -> None:
    """The label on the number's own line, or alone on the line above, still counts."""
    phone = f"+44 20 {number}"
    field = f"{label}: {phone}" if same_line else f"{label}:{newline}{phone}"
    text = f"Status: disabled{newline}{field}{newline}Version: 2.4.1"
    assert phone in national_phones(shipped, text), text


def test_the_trials_example_is_allowed(shipped: Pipeline) -> None:
    text = ('Error output: "Build failed\\nStatus: 500\\nMobile: disabled\\nFax: n/a\\n'
            'Version: 12 34 567"')
    assert national_phones(shipped, text) == []


def test_a_phone_word_label_still_reads_the_line_above(shipped: Pipeline) -> None:
    """A bare number under its own phone-word label (`Desk:`, a weak word) keeps the
    context of the phone label above it, as before round 5 (an evaluator sample)."""
    text = "Bulat Butusov\\nMobile: 031-103-543\\nDesk: 07289025797\\nFax: 475-661-2500"
    verdict = shipped.run(Inspection.of_text(text))
    assert "07289025797" not in verdict.messages[0].content
