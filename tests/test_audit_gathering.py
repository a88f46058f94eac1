"""The audit writer gathers a burst into one commit while inspections still run, and
never holds a record when nothing else does (sidecar/auditing.py, issue 21).

Through a real SQLite trail: which records shared a transaction is read from the
writer's commit count, and, through the real gRPC server, from /metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from audit.store import NewRecord
from sidecar.auditing import AuditWriter, open_store
from tests.conftest import Sidecar, make_settings
from tests.test_operability import sample

HOLD = 30.0  # a gather this long would fail every `record_event(timeout=10)` below


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[AuditWriter]:
    writer = AuditWriter(open_store(make_settings(tmp_path)), lambda name: None,
                         gather_seconds=HOLD)
    yield writer
    writer.close()


def event(number: int) -> NewRecord:
    return NewRecord(kind="policy", decision="APPLIED", tags={"n": str(number)})


def in_thread(writer: AuditWriter, record: NewRecord) -> tuple[threading.Thread, list[str]]:
    ids: list[str] = []
    thread = threading.Thread(target=lambda: ids.append(writer.record_event(record, 10)))
    thread.start()
    return thread, ids


def test_records_of_running_inspections_share_one_commit(writer: AuditWriter) -> None:
    running = [1]  # one inspection still at a worker: its record is coming
    writer.gather_while(lambda: running[0])
    first, first_id = in_thread(writer, event(1))
    deadline = time.monotonic() + 10
    while writer.queued == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert first_id == [] and writer.queued == 1  # held while the other one runs
    running[0] = 0  # it finished; its record arrives
    second, second_id = in_thread(writer, event(2))
    first.join(10)
    second.join(10)
    assert first_id and second_id and first_id != second_id
    assert (writer.batches, writer.committed) == (1, 2)
    assert {r["id"] for r in writer.store.records()} >= {first_id[0], second_id[0]}


@pytest.mark.parametrize("more_coming", [lambda: 0, lambda: -1, lambda: 1 // 0],
                         ids=["nothing-else-runs", "negative", "gauge-raises"])
def test_a_lone_record_is_never_held(writer: AuditWriter, more_coming: object) -> None:
    writer.gather_while(more_coming)  # type: ignore[arg-type]
    for number in range(3):  # each would time out after 10 s if held for HOLD
        assert writer.record_event(event(number), timeout=10)
    assert (writer.batches, writer.committed) == (3, 3)


def test_closing_commits_a_gathering_batch(writer: AuditWriter) -> None:
    writer.gather_while(lambda: 5)  # more always "coming": only closing ends the wait
    thread, ids = in_thread(writer, event(1))
    deadline = time.monotonic() + 10
    while writer.queued == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.close()
    thread.join(10)
    assert ids and writer.committed == 1
    store = open_store(make_settings(writer.store.directory.parent.parent))
    try:
        assert [r["id"] for r in store.records("id = ?", (ids[0],))] == ids
    finally:
        store.close()


def test_concurrent_callers_each_get_their_own_committed_record(sidecar: Sidecar) -> None:
    """Through gRPC with two workers: a burst of callers, every answer's id committed once,
    and fewer commits than records (the burst shared transactions)."""
    before = sidecar.scrape()
    texts = [f"ticket {n}: please reset the password for account {n}" for n in range(48)]
    with ThreadPoolExecutor(16) as callers:
        answers = list(callers.map(sidecar.prompt, texts))
    ids = [answer.audit_id for answer in answers]
    assert all(ids) and len(set(ids)) == len(ids)
    for audit_id in ids:
        assert len(list(sidecar.audit.records("id = ?", (audit_id,)))) == 1
    after = sidecar.scrape()
    records = (sample(after, "guardrail_audit_records_committed_total")
               - sample(before, "guardrail_audit_records_committed_total"))
    commits = (sample(after, "guardrail_audit_commits_total")
               - sample(before, "guardrail_audit_commits_total"))
    assert records >= len(texts) and 1 <= commits < records
