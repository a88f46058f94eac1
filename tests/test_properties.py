"""Properties over generated texts, through the real gRPC API.

Offsets must point at the inserted values in the text the app sent (code points, whatever
characters surround them) and the returned text must be exactly the original with each
acted-on span replaced.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from tests.conftest import Sidecar

# Filler that cannot itself look like PII: letters, emoji, CJK, combining marks, spaces.
filler = st.lists(
    st.sampled_from([*"abcdefghij klmnop ,.;!?",
                     "\U0001f600", "\u4e2d", "\u00e9", "e\u0301", "\u05d0", "\n"]),
    max_size=40).map("".join)
emails = st.from_regex(r"[a-z]{3,8}\.[a-z]{3,8}@[a-z]{4,9}\.(com|org|net)", fullmatch=True)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.tuples(filler, emails), min_size=1, max_size=4), tail=filler)
def test_offsets_point_at_the_original_values(sidecar: Sidecar,
                                              parts: list[tuple[str, str]], tail: str) -> None:
    text, expected_spans, redacted = "", [], ""
    for before, email in parts:
        text += before + " "
        expected_spans.append((len(text), len(text) + len(email)))
        text += email + " "
        redacted += before + " <EMAIL_ADDRESS> "
    text += tail
    redacted += tail
    response = sidecar.prompt(text, tenant="fast-x")  # patterns-only policy: email + phone
    emails_found = [(f.start, f.end) for f in response.findings if f.entity_type == "EMAIL_ADDRESS"]
    assert emails_found == expected_spans
    for start, end in emails_found:
        assert "@" in text[start:end]
    assert response.decision == pb.MODIFY
    assert response.text == redacted


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=200), min_size=1, max_size=3))
def test_any_text_gets_a_verdict_and_findings_stay_in_bounds(sidecar: Sidecar,
                                                             texts: list[str]) -> None:
    messages = pb.Messages(messages=[pb.Message(role="user", content=t) for t in texts])
    response = sidecar.stub.InspectPrompt(pb.InspectRequest(messages=messages), timeout=30)
    assert response.decision in (pb.ALLOW, pb.MODIFY, pb.BLOCK)
    for finding in response.findings:
        assert 0 <= finding.start < finding.end <= len(texts[finding.message_index])
    if response.decision == pb.ALLOW:
        assert [m.content for m in response.messages.messages] == texts
