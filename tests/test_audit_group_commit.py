"""Group commit as the writer does it (sidecar/auditing.py, issue 21): whatever queued
while a commit ran goes into the next one, each waiter gets its own record's id (one
wake-up of its event loop per batch), and the commit counters say how many shared.

Through a real SQLite trail and, for concurrent callers, the real gRPC server.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.auditing import AuditWriter, open_store
from sidecar.types import Decision, Inspection, Verdict
from tests.conftest import Sidecar, make_settings
from tests.test_operability import sample


def verdict_of(inspection: Inspection) -> Verdict:
    return Verdict(decision=Decision.ALLOW, messages=inspection.messages, chat=False,
                   findings=(), violations=(), policy="default", policy_revision="r1",
                   request_id=inspection.request_id)


@settings(max_examples=8, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(callers=st.integers(1, 40), loops=st.integers(1, 3))
def test_every_waiter_gets_its_own_committed_record(tmp_path_factory: object, callers: int,
                                                    loops: int) -> None:
    """Callers on several event loops at once: each gets the id of the record that holds
    its own request id, every record is committed once, and batches were shared."""
    directory = Path(tmp_path_factory.mktemp("gather"))  # type: ignore[attr-defined]
    writer = AuditWriter(open_store(make_settings(directory)), lambda name: None)
    try:
        async def burst(loop_number: int) -> list[tuple[str, str]]:
            inspections = [Inspection.of_text("hello", request_id=f"r-{loop_number}-{n}")
                           for n in range(callers)]
            ids = await asyncio.gather(*(writer.record(i, verdict_of(i))
                                         for i in inspections))
            return [(i.request_id, audit_id) for i, audit_id in zip(inspections, ids,
                                                                     strict=True)]

        with ThreadPoolExecutor(loops) as threads:
            pairs = [pair for got in threads.map(lambda n: asyncio.run(burst(n)), range(loops))
                     for pair in got]
        assert len({audit_id for _, audit_id in pairs}) == len(pairs) == callers * loops
        for request_id, audit_id in pairs:
            (record,) = writer.store.records("id = ?", (audit_id,))
            assert '"request_id": "' + request_id + '"' in record["tags"]
        assert writer.committed == callers * loops
        assert 1 <= writer.batches <= writer.committed
    finally:
        writer.close()


def test_concurrent_callers_each_get_their_own_committed_record(sidecar: Sidecar) -> None:
    """Through gRPC with two workers: a burst of callers, every answer's id committed
    once, and the commit counters account for every record."""
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
    assert records >= len(texts) and 1 <= commits <= records


def test_a_record_the_store_refuses_fails_alone_not_its_commit_group(tmp_path: Path) -> None:
    """Records of several callers share one transaction; one the store refuses (here a
    subject that is not Unicode, which the doors now refuse before it gets here) failed
    the whole group, and innocent callers under `on_error: block` got UNAVAILABLE
    (outside trial 9: 24 of 48). Now the group is written again one record at a time."""
    import threading
    import time

    from sidecar.errors import AuditUnavailable

    writer = AuditWriter(open_store(make_settings(tmp_path)), lambda name: None)
    append = writer.store.append
    first = threading.Event()

    def slow_first(records: list[object]) -> list[str]:
        if not first.is_set():  # hold the writer, so that the next callers queue as one group
            first.set()
            time.sleep(0.3)
        return append(records)  # type: ignore[arg-type]

    writer.store.append = slow_first  # type: ignore[method-assign]
    try:
        async def callers() -> list[str | BaseException]:
            opener = Inspection.of_text("hello", request_id="opener")
            holding = asyncio.ensure_future(writer.record(opener, verdict_of(opener)))
            await asyncio.get_running_loop().run_in_executor(None, first.wait)
            group = [Inspection.of_text("hello", request_id=f"r-{n}") for n in range(6)]
            group.insert(3, Inspection.of_text("hello", request_id="bad",
                                               subject_id="subject \ud800"))
            got = await asyncio.gather(*(writer.record(i, verdict_of(i)) for i in group),
                                       return_exceptions=True)
            await holding
            return got

        outcomes = asyncio.run(callers())
        assert isinstance(outcomes.pop(3), AuditUnavailable)
        assert all(isinstance(audit_id, str) and audit_id for audit_id in outcomes), outcomes
        for number, audit_id in enumerate(outcomes):
            (record,) = writer.store.records("id = ?", (audit_id,))
            assert f'"request_id": "r-{number}"' in record["tags"]
        assert writer.failures == 1 and writer.committed == 7
    finally:
        writer.close()


def test_a_disk_error_fails_its_group_once_without_writing_it_again(tmp_path: Path) -> None:
    """A disk or database error is no one record's doing: the group fails as one (one
    attempt; a commit whose sync failed may have landed, and writing its records again
    would record those decisions twice)."""
    import sqlite3

    from sidecar.errors import AuditUnavailable

    writer = AuditWriter(open_store(make_settings(tmp_path)), lambda name: None)
    attempts: list[int] = []

    def failing(records: list[object]) -> list[str]:
        attempts.append(len(records))
        raise sqlite3.OperationalError("disk I/O error")

    writer.store.append = failing  # type: ignore[method-assign]
    try:
        async def callers() -> list[str | BaseException]:
            group = [Inspection.of_text("hello", request_id=f"r-{n}") for n in range(8)]
            return await asyncio.gather(*(writer.record(i, verdict_of(i)) for i in group),
                                        return_exceptions=True)

        outcomes = asyncio.run(callers())
        assert all(isinstance(outcome, AuditUnavailable) for outcome in outcomes)
        assert sum(attempts) == 8 and writer.failures == 8  # each record tried once
    finally:
        writer.store.append = lambda records: []  # type: ignore[method-assign]
        writer.close()


def test_the_writer_thread_outlives_a_batch_it_fails_on(tmp_path: Path) -> None:
    """Every caller's answer waits for the one writer thread: a batch that makes it
    raise (here the store answers the wrong number of ids) fails that batch's callers,
    and the next records are committed; before, the thread died and every later call
    waited until its deadline."""
    from sidecar.errors import AuditUnavailable

    writer = AuditWriter(open_store(make_settings(tmp_path)), lambda name: None)
    append = writer.store.append
    writer.store.append = lambda records: []  # type: ignore[method-assign]
    try:
        async def one(request_id: str) -> str:
            inspection = Inspection.of_text("hello", request_id=request_id)
            return await asyncio.wait_for(writer.record(inspection, verdict_of(inspection)), 10)

        with pytest.raises(AuditUnavailable):
            asyncio.run(one("lost"))
        writer.store.append = append  # type: ignore[method-assign]
        audit_id = asyncio.run(one("after"))
        (record,) = writer.store.records("id = ?", (audit_id,))
        assert '"request_id": "after"' in record["tags"]
    finally:
        writer.close()


def test_a_record_that_cannot_be_built_fails_by_on_error_not_with_a_traceback(
        tmp_path: Path) -> None:
    """A string the doors should have refused (here a role that is not Unicode, which
    they did not: outside trial 10) made building the record raise UnicodeEncodeError
    out of the call: a 500 even under `on_error: allow`. It is a record not written."""
    from sidecar.errors import AuditUnavailable
    from sidecar.types import Message

    writer = AuditWriter(open_store(make_settings(tmp_path)), lambda name: None)
    try:
        bad = Inspection(Inspection.of_text("").direction, (Message("user\udc00", "hi"),),
                         chat=True, request_id="bad")
        with pytest.raises(AuditUnavailable):
            asyncio.run(writer.record(bad, verdict_of(bad)))
        good = Inspection.of_text("hello", request_id="good")
        assert asyncio.run(writer.record(good, verdict_of(good)))
    finally:
        writer.close()
