"""Group commit as the writer does it (sidecar/auditing.py, issue 21): whatever queued
while a commit ran goes into the next one, each waiter gets its own record's id (one
wake-up of its event loop per batch), and the commit counters say how many shared.

Through a real SQLite trail and, for concurrent callers, the real gRPC server.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


def test_a_lone_call_commits_its_record_without_waiting_for_the_writer(
        tmp_path: Path) -> None:
    """Alone in the process, a call's record is committed on its own loop: `record`
    finishes without suspending (a hop through the writer thread and back cost two
    wake-ups of an idle thread, ~0.6 ms at c=1), and the record is in the trail."""
    writer = AuditWriter(open_store(make_settings(tmp_path)), lambda name: None)
    try:
        async def lone() -> None:
            inspection = Inspection.of_text("hello", request_id="lone-1")
            step = writer.record(inspection, verdict_of(inspection), alone=True)
            try:
                step.send(None)
            except StopIteration as done:
                audit_id = done.value
            else:
                step.close()
                raise AssertionError("the lone record waited for the writer thread")
            (record,) = writer.store.records("id = ?", (audit_id,))
            assert '"request_id": "lone-1"' in record["tags"]
            assert writer.committed == 1 and writer.batches == 1

        asyncio.run(lone())
    finally:
        writer.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(alone=st.lists(st.booleans(), min_size=20, max_size=60), loops=st.integers(2, 3))
def test_lone_and_queued_commits_never_share_the_store_at_once(
        tmp_path_factory: object, alone: list[bool], loops: int) -> None:
    """Lone commits on callers' loops, queued ones on the writer thread and the writer's
    checkpoint timer (every 10 ms here), all at once from several loops: every caller
    gets its own committed record and the chain verifies. Without one lock around the
    store the two threads' transactions collided ("cannot start a transaction within a
    transaction")."""
    directory = Path(tmp_path_factory.mktemp("lone"))  # type: ignore[attr-defined]
    writer = AuditWriter(open_store(make_settings(directory)), lambda name: None,
                         checkpoint_interval=0.01)
    try:
        async def calls(loop_number: int) -> list[tuple[str, str]]:
            async def one(n: int, lone: bool) -> tuple[str, str]:
                inspection = Inspection.of_text("hello", request_id=f"r-{loop_number}-{n}")
                await asyncio.sleep(0.001 * (n % 3))
                return inspection.request_id, await writer.record(
                    inspection, verdict_of(inspection), alone=lone)

            return list(await asyncio.gather(*(one(n, lone) for n, lone in enumerate(alone))))

        with ThreadPoolExecutor(loops) as threads:
            pairs = [pair for got in threads.map(lambda n: asyncio.run(calls(n)), range(loops))
                     for pair in got]
        assert writer.failures == 0 and writer.committed == len(pairs)
        key = writer.store.signer.public_hex()
    finally:
        writer.close()  # signs the tail; the store is read below, not beside the writer
    assert len({audit_id for _, audit_id in pairs}) == len(pairs) == len(alone) * loops
    store = open_store(make_settings(directory))
    try:
        for request_id, audit_id in pairs:
            (record,) = store.records("id = ?", (audit_id,))
            assert '"request_id": "' + request_id + '"' in record["tags"]
        assert store.verify([key]).ok
    finally:
        store.close()


def test_after_a_slow_commit_lone_records_go_through_the_writer_again(
        tmp_path: Path) -> None:
    """A disk that turns slow must not hold a caller's event loop commit after commit:
    after one commit over INLINE_COMMIT_LIMIT, a lone record waits for the writer thread
    (the loop stays free); once a commit is quick again, lone records commit inline.
    The slow disk is stood in for by a delay before the real append."""
    from sidecar.auditing import INLINE_COMMIT_LIMIT

    writer = AuditWriter(open_store(make_settings(tmp_path)), lambda name: None)
    real_append = writer.store.append
    slow = [True]

    def append(records: list[Any]) -> list[str]:
        if slow[0]:
            time.sleep(INLINE_COMMIT_LIMIT * 2)
        return real_append(records)

    writer.store.append = append  # type: ignore[method-assign]

    def suspends(number: int) -> bool:
        """Whether a lone record waited for the writer thread: inline, its task is done
        after its first step; through the writer, the answer needs more loop passes."""
        async def lone() -> bool:
            inspection = Inspection.of_text("hello", request_id=f"slow-{number}")
            task = asyncio.ensure_future(writer.record(inspection, verdict_of(inspection),
                                                       alone=True))
            await asyncio.sleep(0)  # the task's first step
            waited = not task.done()
            assert await task
            return waited

        return asyncio.run(lone())

    try:
        assert not suspends(1)  # inline, and slow
        assert suspends(2)  # the writer thread takes it (and it is slow too)
        slow[0] = False
        assert suspends(3)  # the writer's commit is quick again
        assert not suspends(4)  # so lone records commit inline again
    finally:
        writer.close()
