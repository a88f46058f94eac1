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

from tests.faults import Sidecar, guardrail, kill_leftovers, no_traceback
from tests.fleet.conftest import Postgres, fleet_secrets

BOUND = 6


def _metrics(pod: Sidecar) -> dict[str, float]:
    [entry] = pod.logged("metrics listening")
    with urllib.request.urlopen(f"http://{entry['address']}/metrics", timeout=10) as page:
        text = page.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(guardrail_[a-z_]+) ([0-9.e+-]+)$",
                                                   text, re.M)}


@pytest.fixture
def pod(postgres: Postgres, tmp_path: Path, request: pytest.FixtureRequest
        ) -> Iterator[tuple[Sidecar, str]]:
    url = postgres.database()
    keys = fleet_secrets(tmp_path / "secrets")
    bound = getattr(request, "param", BOUND)
    env = keys.env(url, GUARDRAIL_STORE_OUTBOX_MAX_RECORDS=str(bound))
    running = Sidecar(tmp_path / "pod", env=env).serving()
    try:
        yield running, url
    finally:
        running.stop()
        kill_leftovers()


def _health_detail(pod: Sidecar) -> str:
    """`guardrail health --detail`, as the probe's container would run it."""
    [entry] = pod.logged("metrics listening")
    done = guardrail("health", "--detail", "--listen", pod.address, "--metrics-listen",
                     str(entry["address"]), "--timeout", "10")
    no_traceback(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr  # serving: a store outage
    return done.stdout                                        # must not fail the probe


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
        detail = _health_detail(sidecar)
        assert detail.startswith("SERVING\n")
        assert "store: DOWN" in detail
        assert f"outbox: {BOUND} of {BOUND} records - FULL" in detail
        assert "Ann Lee" not in detail
    finally:
        postgres.resume()
    _wait(lambda: _metrics(sidecar)["guardrail_store_up"] == 1, "store_up turned 1", 90)
    _wait(lambda: _metrics(sidecar)["guardrail_outbox_records"] < BOUND, "outbox drained", 90)
    after = sidecar.prompt("after the outage", tenant="acme").audit_id
    assert after
    detail = _health_detail(sidecar)
    assert "store: up" in detail and "DOWN" not in detail
    shipped = re.search(r"store: up, (\d+) records shipped", detail)
    assert shipped is not None and int(shipped[1]) >= len(kept), detail
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


@pytest.mark.parametrize("pod", [3], indirect=True)
def test_records_shipped_before_their_checkpoint_are_pruned_once_it_ships(
        pod: tuple[Sidecar, str]) -> None:
    """The store is up all along: a pod that filled its outbox must get it back once
    the store holds the records and their checkpoint, not only when more records come
    (which a full outbox refuses: with on_error block, the pod would refuse for good)."""
    sidecar, _ = pod
    _wait(lambda: _metrics(sidecar).get("guardrail_outbox_records") == 0, "start-up pruned")
    for n in range(3):
        assert sidecar.prompt(f"quiet {n}", tenant="acme").audit_id
    # Shipped within the shipper's interval; signed by the next checkpoint (5 s).
    _wait(lambda: _metrics(sidecar)["guardrail_outbox_records"] == 0,
          "the shipped, checkpointed records pruned while the pod is idle", 20)
    assert sidecar.prompt("after a quiet spell", tenant="acme").audit_id


def test_health_detail_reads_counters_and_says_when_it_cannot() -> None:
    """No metrics port, a silent one, a single-mode page, a fleet page: a line each,
    never an exception (the probe must still print SERVING and exit by its status)."""
    from sidecar.health_detail import describe, lines

    assert describe(None, 1) == ["detail: metrics are off (GUARDRAIL_METRICS_LISTEN is empty)"]
    [silent] = describe("127.0.0.1:9", 1)  # discard port: nothing listens
    assert silent.startswith("detail: cannot read the metrics at 127.0.0.1:9")
    single = "guardrail_audit_queue_depth 2.0\nguardrail_audit_write_failures_total 1.0\n"
    assert lines(single) == ["audit: 2 records waiting, 1 write failures"]
    fleet = single + ("guardrail_store_up 1.0\nguardrail_outbox_records 3.0\n"
                      "guardrail_outbox_limit 10.0\nguardrail_store_shipped_records_total 42.0\n"
                      "guardrail_store_refused 1.0\n")
    assert lines(fleet)[1:] == [
        "store: up, 42 records shipped", "outbox: 3 of 10 records",
        "store: REFUSES this chain (see the logs: a rolled-back or altered outbox, a newer "
        "schema, another index key)"]
