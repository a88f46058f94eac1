"""Each fault of tests/faults.py against a real `guardrail serve` (scripts/faults.py
runs the same scenarios and prints a table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import SCENARIOS, kill_leftovers


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault(name: str, tmp_path: Path) -> None:
    try:
        SCENARIOS[name](tmp_path)
    finally:
        kill_leftovers()
