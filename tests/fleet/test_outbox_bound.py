"""The outbox bound (issue 19): PostgreSQL down long enough that a pod's outbox fills.

A real `guardrail serve` process in fleet mode, a real PostgreSQL stopped and restarted.
Past `GUARDRAIL_STORE_OUTBOX_MAX_RECORDS` a record cannot be kept, so the policy's
`on_error` decides: `block` refuses the call (UNAVAILABLE, no decision without its
record), `allow` answers it unrecorded. The metrics say why while it lasts; once the
store is back everything kept ships, exactly once, and recording resumes.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.faults import Sidecar, kill_leftovers
from tests.fleet.conftest import Postgres, fleet_secrets

BOUND = 6


def _metrics(pod: Sidecar) -> dict[str, float]:
    [entry] = pod.logged("metrics listening")
    with urllib.request.urlopen(f"http://{entry['address']}/metrics", timeout=10) as page:
        text = page.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(guardrail_[a-z_]+) ([0-9.e+-]+)$",
                                                   text, re.M)}


@pytest.fixture
def pod(postgres: Postgres, tmp_path: Path) -> Iterator[tuple[Sidecar, str]]:
    url = postgres.database()
    keys = fleet_secrets(tmp_path / "secrets")
    env = keys.env(url, GUARDRAIL_STORE_OUTBOX_MAX_RECORDS=str(BOUND))
    running = Sidecar(tmp_path / "pod", env=env).serving()
    try:
        yield running, url
    finally:
        running.stop()
        kill_leftovers()


def _wait(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"never happened: {what}")


def test_a_full_outbox_lets_on_error_decide_and_ships_all_once_back(
        pod: tuple[Sidecar, str], postgres: Postgres) -> None:
    sidecar, url = pod
    _wait(lambda: _metrics(sidecar).get("guardrail_outbox_records") == 0,
          "the start-up records shipped and pruned")
    postgres.pause()
    kept: list[str] = []
    try:
        refusal = None
        for n in range(BOUND * 4):  # more than the bound: the outbox must fill
            try:
                kept.append(sidecar.prompt(f"outage {n} for Ann Lee", tenant="acme").audit_id)
            except grpc.RpcError as err:
                refusal = err
                break
        assert refusal is not None, f"{len(kept)} calls answered past a bound of {BOUND}"
        assert refusal.code() == grpc.StatusCode.UNAVAILABLE  # on_error: block (acme)
        assert "outbox" in (refusal.details() or "")
        assert "Ann Lee" not in (refusal.details() or "")
        assert 0 < len(kept) <= BOUND and all(kept)
        # on_error: allow answers, unrecorded; block keeps refusing while it is full.
        lenient = sidecar.prompt("outage, lenient, for Ann Lee", tenant="lenient")
        assert not lenient.audit_id
        assert sidecar.refusal("outage again", tenant="acme").code() == \
            grpc.StatusCode.UNAVAILABLE
        seen = _metrics(sidecar)
        assert seen["guardrail_outbox_records"] == seen["guardrail_outbox_limit"] == BOUND
        _wait(lambda: _metrics(sidecar)["guardrail_store_up"] == 0, "store_up turned 0")
    finally:
        postgres.resume()
    _wait(lambda: _metrics(sidecar)["guardrail_store_up"] == 1, "store_up turned 1", 90)
    _wait(lambda: _metrics(sidecar)["guardrail_outbox_records"] < BOUND, "outbox drained", 90)
    after = sidecar.prompt("after the outage", tenant="acme").audit_id
    assert after
    ids = [*kept, after]
    deadline = time.monotonic() + 90
    while True:
        with psycopg.connect(url) as conn:
            total, distinct = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT id) FROM records WHERE id = ANY(%s)",
                (ids,)).fetchone() or (0, 0)
        if total == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (total, distinct) == (len(ids), len(ids))  # every kept record, none twice
