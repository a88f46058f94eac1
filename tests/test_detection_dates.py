"""DATE_TIME precision (issue 18): the NER model tags every time expression; only those
that date something are kept (sidecar.pii.precision `date_vague`).

Both sides as properties: generated relative phrases and durations must be dropped,
generated dates, times, weekdays and months must survive, and the rule must never
uncover a number the model happened to tag (card numbers, postcodes and ages are
sometimes "dates" to it). Then once through the real pipeline, and overridden by policy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.pii.precision import PrecisionRules
from tests.test_detection_recognizers import findings, policy

RULES = PrecisionRules()
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December", "Jan", "Feb", "Sept", "Oct", "Dec"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
            "Mon", "Fri"]
UNITS = ["second", "minute", "hour", "day", "night", "week", "month", "quarter", "year",
         "decade"]
AMOUNTS = st.one_of(st.integers(min_value=1, max_value=999).map(str),
                    st.sampled_from(["a", "one", "two", "three", "ten", "a few", "several",
                                     "a couple of"]))


def _kept(text: str) -> bool:
    return RULES.keeps(text, "DATE_TIME", 0, len(text))


def _case(value: str, style: int) -> str:
    return [value, value.lower(), value.upper(), value.capitalize()][style]


@settings(max_examples=150, deadline=None)
@given(amount=AMOUNTS, unit=st.sampled_from(UNITS), plural=st.booleans(),
       lead=st.sampled_from(["", "about ", "under ", "the first ", "within ", "for the past ",
                             "over "]),
       kind=st.sampled_from(["", "business ", "working "]), style=st.integers(0, 3))
def test_durations_are_dropped(amount: str, unit: str, plural: bool, lead: str, kind: str,
                               style: int) -> None:
    phrase = _case(f"{lead}{amount} {kind}{unit}{'s' if plural else ''}", style)
    assert not _kept(phrase), phrase


@settings(max_examples=100, deadline=None)
@given(word=st.sampled_from(["last", "this", "next", "the following", "every", "one", "the"]),
       unit=st.sampled_from(["month", "week", "morning", "night", "weekend", "year",
                             "evening", "quarter", "summer", "afternoon"]),
       style=st.integers(0, 3))
def test_deictic_phrases_without_a_date_are_dropped(word: str, unit: str, style: int) -> None:
    phrase = _case(f"{word} {unit}", style)
    assert not _kept(phrase), phrase


@settings(max_examples=200, deadline=None)
@given(day=st.integers(1, 28), month=st.integers(1, 12), year=st.integers(1900, 2099),
       name=st.sampled_from(MONTHS), weekday=st.sampled_from(WEEKDAYS),
       hour=st.integers(0, 23), minute=st.integers(0, 59), shape=st.integers(0, 11),
       style=st.integers(0, 3))
def test_dates_times_weekdays_and_months_are_kept(
        day: int, month: int, year: int, name: str, weekday: str, hour: int, minute: int,
        shape: int, style: int) -> None:
    phrase = [f"{day} {name} {year}", f"{name} {day}", f"{year}-{month:02}-{day:02}",
              f"{month}/{day}/{year}", f"{day}.{month}.{year}", f"{weekday}",
              f"last {weekday}", f"{name}", f"{hour}:{minute:02}", f"{hour % 12 + 1}pm",
              f"{year}", f"{day} weeks ago"][shape]
    assert _kept(_case(phrase, style)), phrase


@settings(max_examples=100, deadline=None)
@given(number=st.integers(0, 10**19))
def test_bare_numbers_are_never_dropped(number: int) -> None:
    """The model sometimes calls a card number, a postcode or an age a date: dropping
    the 'date' would uncover the number."""
    assert _kept(str(number))


@settings(max_examples=50, deadline=None)
@given(age=st.integers(1, 110), shape=st.integers(0, 2))
def test_ages_are_kept(age: int, shape: int) -> None:
    assert _kept([f"{age} year old", f"{age}-year-old", f"{age} years old"][shape])


def test_vague_dates_are_dropped_through_the_pipeline_and_overridable(tmp_path: Path) -> None:
    """Before the rule, `last month` and `this morning` were DATE_TIME findings (and
    replaced); the date of birth must stay one."""
    text = ("I called last month and again this morning; my date of birth is "
            "23 August 1979.")
    body = "pii:\n  entities:\n    DATE_TIME: {action: replace}\n"
    on = findings(policy(tmp_path / "on", body), text)
    assert [text[s:e] for _, s, e in on] == ["23 August 1979"]
    off = findings(policy(tmp_path / "off", body + "  precision: {disable: [date_vague]}\n"),
                   text)
    assert {"last month", "this morning"} <= {text[s:e] for _, s, e in off}


@pytest.mark.parametrize("value", ["today", "tomorrow", "yesterday", "daily", "quarterly",
                                   "the 60s", "the early 1990s", "a few months ago"])
def test_named_vague_expressions_are_dropped(value: str) -> None:
    assert not _kept(value)
