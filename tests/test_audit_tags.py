"""Routing-tag signatures: bound to the request id and to the time they were issued."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar import tags

KEY = b"\x05" * 32
TAGS = {"residency": "eu", "allowed_regions": "eu-*", "data_classes": "personal"}


@given(issued=st.integers(0, 2**40), age=st.integers(-10**6, 10**6),
       max_age=st.integers(1, 3600))
def test_freshness_is_signed_and_checked(issued: int, age: int, max_age: int) -> None:
    signed = tags.sign(KEY, "req-1", TAGS, now=issued)
    assert signed["issued_at"] == str(issued)
    fresh = -tags.MAX_CLOCK_SKEW <= age <= max_age
    assert tags.verify(KEY, "req-1", signed, max_age=max_age, now=issued + age) == fresh
    # Moving the issue time forward to look fresh breaks the signature.
    if age:
        moved = {**signed, "issued_at": str(issued + age)}
        assert not tags.verify(KEY, "req-1", moved)


def test_without_max_age_only_the_signature_counts() -> None:
    signed = tags.sign(KEY, "req-1", TAGS, now=0)
    assert tags.verify(KEY, "req-1", signed)
    assert not tags.verify(KEY, "req-2", signed)
    assert not tags.verify(KEY, "req-1", {**signed, "issued_at": "soon"}, max_age=5)
    unsigned_time = {k: v for k, v in signed.items() if k != "issued_at"}
    assert not tags.verify(KEY, "req-1", unsigned_time)
