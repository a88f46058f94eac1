"""Red team, PII (round 12, outside trial 18): a value one invisible character, one digit
of another script or one JSON escape away from its usual shape must still be found.

The trial sent `4111\\u200b1111\\u200b1111\\u200b1111`, `jane.doe\\u00ad@example.org`,
fullwidth digits, Arabic-Indic digits, a NUL inside an SSN and `jane\\u0040example.org`
in a tool call's JSON arguments: every one came back unchanged (ALLOW), while the
content stage saw through the same disguises. Invariant tested here through the real
gRPC server with generated disguises: whatever the disguise, the answer is BLOCK or its
text, read without disguises, no longer holds the value; and findings point at the
characters the app sent (the disguise inside a value is covered by its span).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.pii.disguise import undisguise
from tests.conftest import Sidecar

VALUES = {"EMAIL_ADDRESS": "jane.doe@example.org", "CREDIT_CARD": "4111 1111 1111 1111",
          "US_SSN": "219-09-9999", "IP_ADDRESS": "192.168.10.42"}
HIDDEN = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202a", "\u2066",
          "\U000e0041", "\x00", "\x08", "\x1b", "\x7f", "\x9f",
          # trial 19: what the content stage already read as invisible, and marks
          "\ufe0f", "\u034f", "\u180b", "\U000e0100", "\u3164", "\u2800", "\u0332", "\u0301"]
# Separators a value may be written with instead of its ASCII one (trial 19).
LOOK_ALIKE = {"-": ["\u2010", "\u2011", "\u2013", "\u2212", "\ufe63", "\uff0d"],
              ".": ["\u3002", "\uff0e", "\u2024", "\ufe52"], "@": ["\ufe6b", "\uff20"]}
# Digit zero of other scripts: fullwidth, Arabic-Indic, Devanagari, Bengali, math bold.
ZEROS = [0xFF10, 0x0660, 0x0966, 0x09E6, 0x1D7CE]


@st.composite
def disguised(draw: st.DrawFn, value: str) -> str:
    out = []
    for char in value:
        how = draw(st.sampled_from(["plain", "plain", "hidden", "digit", "escape", "wide",
                                    "look-alike"]))
        shown = char
        if how == "look-alike" and char in LOOK_ALIKE:
            shown = draw(st.sampled_from(LOOK_ALIKE[char]))
        elif how == "digit" and char.isdigit():
            shown = chr(draw(st.sampled_from(ZEROS)) + int(char))
        elif how == "escape":
            shown = f"\\u{ord(char):04x}"
        elif how == "wide" and "!" <= char <= "~":
            shown = chr(ord(char) + 0xFEE0)
        out.append(shown)
        if how == "hidden" or draw(st.integers(0, 9)) == 0:
            out.append("".join(draw(st.lists(st.sampled_from(HIDDEN), min_size=1,
                                             max_size=3))))
    return "".join(out)


def plain(text: str) -> str:
    reading = undisguise(text)
    return text if reading is None else reading.text


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), entity=st.sampled_from(sorted(VALUES)),
       shape=st.sampled_from(["prose", "json"]))
def test_a_disguised_value_never_comes_back(sidecar: Sidecar, data: st.DataObject,
                                            entity: str, shape: str) -> None:
    value = VALUES[entity]
    hidden = data.draw(disguised(value))
    text = f"my details: {hidden} thanks" if shape == "prose" else \
        '{"arguments": "my details: ' + hidden.replace('"', '\\"') + ' thanks"}'
    reply = sidecar.prompt(text)
    assert reply.decision in (pb.BLOCK, pb.MODIFY), (text, reply)
    if reply.decision == pb.MODIFY:
        assert value not in plain(reply.text), (text, reply.text)
    found = [f for f in reply.findings if f.entity_type == entity]
    assert found, (text, reply.findings)
    assert all(value in plain(text[f.start:f.end]) or plain(text[f.start:f.end]) in value
               for f in found), (text, [(f.start, f.end) for f in found])


def test_the_trials_inputs(sidecar: Sidecar) -> None:
    for text, entity in [
            ("my card is 4111\u200b1111\u200b1111\u200b1111 thanks", "CREDIT_CARD"),
            ("mail jane.doe\u00ad@example.org", "EMAIL_ADDRESS"),
            ("card \uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 "
             "\uff11\uff11\uff11\uff11", "CREDIT_CARD"),
            ("ssn 219\x00-09-9999", "US_SSN"),
            (json.dumps({"to": "jane@example.org"}).replace("@", "\\u0040"), "EMAIL_ADDRESS"),
            # trial 19
            ("card 4\ufe0f111 1111 1111 1111 ok", "CREDIT_CARD"),
            ("4111\u28001111\u28001111\u28001111", "CREDIT_CARD"),
            ("ssn 536\u201022\u20101234 x", "US_SSN"),
            ("mail jane\ufe6bexample.org", "EMAIL_ADDRESS"),
            ("mail jane@example\u3002org", "EMAIL_ADDRESS"),
            ("ip 192\u2024168\u20241\u20241", "IP_ADDRESS"),
            # trial 20: a footnote mark after a value must not join it
            ("Card 4111 1111 1111 1111\u00b9 see note", "CREDIT_CARD"),
            ("Card 4111111111111111\u2460 x", "CREDIT_CARD"),
            ("Email jane@example.org\u00b9", "EMAIL_ADDRESS"),
            # trial 21: a card typed in full-width mode, or with em spaces
            ("card 4111\u30001111\u30001111\u30001111 ok", "CREDIT_CARD"),
            ("card 4111\u20031111\u20031111\u20031111 ok", "CREDIT_CARD")]:
        reply = sidecar.prompt(text)
        assert entity in {f.entity_type for f in reply.findings}, (text, reply)


def test_text_without_disguises_reads_as_itself() -> None:
    for text in ["plain ascii", "café ☕ 東京 naïve", "tabs\tand\nnewlines\r\n", ""]:
        assert undisguise(text) is None, text


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from([*"ab1 @.", *HIDDEN, "\uff11", "\u0661", "\\u0040",
                                      "\\ud83d\\ude00", "\\u200b"]), max_size=30).map("".join),
       cut=st.data())
def test_spans_map_back_onto_the_characters_sent(text: str, cut: st.DataObject) -> None:
    """Any span of the reading maps to a span of the text that reads as it (so edits
    land on what the app sent, disguises inside included)."""
    reading = undisguise(text)
    if reading is None:
        return
    start = cut.draw(st.integers(0, max(0, len(reading.text) - 1)))
    end = cut.draw(st.integers(start + 1, len(reading.text))) if reading.text else 0
    if not reading.text:
        return
    original_start, original_end = reading.span(start, end)
    assert 0 <= original_start < original_end <= len(text)
    assert plain(text[original_start:original_end]) == reading.text[start:end]


def test_an_escaped_backslash_is_not_an_escape(sidecar: Sidecar) -> None:
    """Trial 19: a JSON value holding the text `\\u0034111 ...` (an escaped backslash, then
    `u0034`) was decoded as `4111 ...` and the edit ate one backslash of the pair: the
    answer was no longer JSON. A `\\u` escape needs an unescaped backslash."""
    for text in ['{"note": "see \\\\u0034111 1111 1111 1111"}', 'card \\\\u0040 x',
                 'path C:\\\\users\\\\u0041dmin']:
        reading = undisguise(text)
        assert reading is None or "\\\\u" in reading.text, (text, reading)
        reply = sidecar.prompt(text)
        assert reply.decision == pb.ALLOW, (text, reply)
    mixed = '{"a": "\\\\\\u0040"}'  # an escaped backslash, then a real escape of @
    reading = undisguise(mixed)
    assert reading is not None and reading.text == '{"a": "\\\\@"}', reading


def test_numbers_written_the_french_way_are_not_phone_numbers(sidecar: Sidecar) -> None:
    """Trial 20: reading the narrow no-break space (French thousands separator) as a
    space made budgets and populations phone numbers."""
    for text in ["Le budget est de 1\u202f234\u202f567\u202f890\u00a0\u20ac.",
                 "Population mondiale\u00a0: 8\u202f045\u202f311\u202f447 habitants",
                 "Temperature 12\u2009345\u2009678\u2009901 K"]:
        reply = sidecar.prompt(text)
        assert not [f for f in reply.findings if f.entity_type == "PHONE_NUMBER"], text


def test_a_mark_on_the_last_digit_goes_with_the_value(sidecar: Sidecar) -> None:
    """Trial 20: the mark was left dangling after the placeholder."""
    for mark in ("\u0332", "\u0301"):
        reply = sidecar.prompt(f"my email jane@example.org{mark} end")
        assert reply.text == "my email <EMAIL_ADDRESS> end", repr(reply.text)


def test_runs_of_marks_and_invisible_characters_read_right() -> None:
    """Trial 20 sent `ж` and 40,000 marks (79 s, each mark walked back over the run):
    the run is read once. Marks on another script's letter are part of it; on ASCII
    they are dropped, however long the run or whatever invisible characters it holds."""
    assert undisguise("\u0436" + "\u0301" * 5000) is None
    reading = undisguise("4" + "\u200b\u0332" * 5000 + "111")
    assert reading is not None and reading.text == "4111"
    assert reading.span(0, 4) == (0, 10004)
