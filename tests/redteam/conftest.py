"""Counts of what the red-team suite tried, printed at the end of the run.

Each attacking test adds to TALLY under its rule kind: how many disguised variants it
tried, how many were caught, how many benign texts it tried and how many were flagged.
The numbers go in the closing note of a red-team issue; `make redteam` runs the same
tests with more examples.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

import pytest

TALLY: defaultdict[str, Counter[str]] = defaultdict(Counter)
# `make redteam` multiplies every property's examples by this (1 in `make test`).
SCALE = int(os.environ.get("GUARDRAIL_REDTEAM_SCALE", "1"))


def examples(base: int, quick: int) -> int:
    """max_examples for a property whose examples cost enough to weigh on `make test`:
    `quick` there (SCALE 1), and `base` x SCALE under `make redteam`, the deep count it
    had before it was cut for the suite's time budget."""
    return quick if SCALE == 1 else base * SCALE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    terminalreporter.section("red-team tally")
    for kind in sorted(TALLY):
        counts = TALLY[kind]
        terminalreporter.write_line(
            f"{kind:28} variants {counts['tried']:6}  caught {counts['caught']:6}  "
            f"benign {counts['benign']:6}  flagged {counts['flagged']:4}")
