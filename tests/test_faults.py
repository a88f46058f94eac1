"""Each fault of tests/faults.py against a real `guardrail serve` (scripts/faults.py
runs the same scenarios one at a time and prints a table).

The scenarios are independent (each its own data directory, ports, processes and
clean-up), and each spends most of its time waiting on child processes that import
Presidio and load spaCy on one core: two run at once, on the two cores a CI machine
has, and each test reports its own scenario's outcome (its exception and traceback).
`make faults` runs every scenario alone, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.faults import SCENARIOS, kill_leftovers

# The longest first, so the two lanes end together (seconds on two idle cores, roughly).
LONGEST_FIRST = ["KEK wrong or loose", "audit database deleted", "audit database corrupted",
                 "SIGKILL under load", "disk full", "policy directory unreadable",
                 "spaCy model missing", "KEK missing"]
assert sorted(LONGEST_FIRST) == sorted(SCENARIOS), "a scenario is missing from LONGEST_FIRST"


def _run(name: str, work: Path) -> str:
    try:
        return SCENARIOS[name](work)
    finally:
        kill_leftovers()  # this thread's sidecars only


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[str]]]:
    """Every selected scenario, started two at a time as soon as the module begins."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fault") as pool:
        futures = {name: pool.submit(_run, name, tmp_path_factory.mktemp("fault"))
                   for name in LONGEST_FIRST if name in selected}
        yield futures
        for future in futures.values():  # a run stopped early (-x): start no more
            future.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault(name: str, outcomes: dict[str, Future[str]]) -> None:
    outcomes[name].result(timeout=900)
