"""What an audit record's commit costs at one caller, and what a segment file would.

    .venv/bin/python bench/audit_sync.py

One record every 2 ms (as at c=1), 600 each, medians, on the disk holding a temporary
directory: a preallocated file's pwrite + fdatasync (what an append-only segment would
cost), SQLite's WAL commit of one row (synchronous=FULL), the sidecar's whole
AuditStore.append (seal, chain, insert, commit), and the same through the writer thread
from an event loop (what a call waits). Round 8: 0.40 / 0.73-0.78 / 0.95 / 1.19-1.34 ms,
and on a quieter machine 0.23 / 0.52 / 0.85 / 1.03 ms: a segment would save ~0.3-0.55 ms
of a lone call's audit wait, not ~0.9.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROUNDS = 600
RECORD = os.urandom(1200)


def timed(step: Callable[[], object]) -> float:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
        time.sleep(0.002)
    return statistics.median(samples) * 1e3


def main() -> None:
    from audit.store import NewRecord
    from sidecar.auditing import AuditWriter, _LoopWaiter, open_store
    from sidecar.config import Settings

    root = Path(tempfile.mkdtemp())
    segment = os.open(root / "segment", os.O_WRONLY | os.O_CREAT, 0o600)
    os.posix_fallocate(segment, 0, 64 << 20)
    offset = [0]

    def append_to_segment() -> None:
        os.pwrite(segment, RECORD, offset[0])
        offset[0] += len(RECORD)
        os.fdatasync(segment)

    database = sqlite3.connect(root / "plain.db", isolation_level=None)
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA synchronous=FULL")
    database.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, a TEXT, p BLOB)")
    database.execute("CREATE INDEX r_a ON r(a)")

    def commit_a_row() -> None:
        database.execute("BEGIN IMMEDIATE")
        database.execute("INSERT INTO r (a, p) VALUES (?, ?)", (os.urandom(8).hex(), RECORD))
        database.execute("COMMIT")

    settings = Settings(policies=root, data_dir=root / "data")
    store = open_store(settings)
    record = NewRecord(tenant="t", app="a", direction="prompt", decision="MODIFY",
                       policy="default", revision="r", entities={"PERSON": 1},
                       tags={"request_id": "x"}, retain_until=time.time() + 86400,
                       subject_id="user-1", payload=RECORD[:600])
    print(f"preallocated segment, pwrite + fdatasync  {timed(append_to_segment):6.2f} ms")
    print(f"SQLite WAL commit of one row             {timed(commit_a_row):6.2f} ms")
    whole = timed(lambda: store.append([record]))
    print(f"AuditStore.append of one record          {whole:6.2f} ms")
    writer = AuditWriter(store, lambda name: None)

    async def through_the_writer() -> float:
        loop = asyncio.get_running_loop()
        samples = []
        for _ in range(ROUNDS):
            future: asyncio.Future[str] = loop.create_future()
            started = time.perf_counter()
            writer._enqueue(record, _LoopWaiter(loop, future))
            await future
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.002)
        return statistics.median(samples) * 1e3

    print(f"the same through the writer thread       {asyncio.run(through_the_writer()):6.2f} ms")
    writer.close()


if __name__ == "__main__":
    main()
