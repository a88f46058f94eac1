"""Audit trail benchmark (not a test): writes, latency share, erasure, export.

    .venv/bin/python bench/audit_trail.py        # (make bench runs it too)

1. Sustained encrypted writes per second through the sidecar's AuditWriter (group
   commit, synchronous=FULL) with 64 concurrent inspections submitting records.
2. The audit's share of inspection latency: a `guardrail serve` with the audit on and
   one with it off, same prompts, one caller, p50 of each, measured in this run.
3. Erasure of a subject who has 10,000 records.
4. Export of 100,000 records (metadata, JSONL, with its signed manifest).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def writes(directory: Path, total: int = 20_000, concurrency: int = 64) -> float:
    from sidecar.auditing import AuditWriter, open_store
    from sidecar.config import Settings
    from sidecar.types import Decision, Direction, Finding, Inspection, Message, Verdict

    settings = Settings(data_dir=directory, policies=ROOT / "policies")
    writer = AuditWriter(open_store(settings), lambda name: None)
    text = "Write to <EMAIL_ADDRESS> about the invoice from <PERSON>, due Friday. " * 4

    async def run() -> float:
        queue = list(range(total))

        async def inspector() -> None:
            while queue:
                n = queue.pop()
                inspection = Inspection(Direction.PROMPT, (Message("user", text),),
                                        tenant="acme", subject_id=f"subject-{n % 1000}")
                verdict = Verdict(Decision.MODIFY, (Message("user", text),), False,
                                  (Finding("EMAIL_ADDRESS", 9, 24, 1.0, "replace"),), (),
                                  "default", "r" * 64)
                await writer.record(inspection, verdict)

        started = time.perf_counter()
        await asyncio.gather(*(inspector() for _ in range(concurrency)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    writer.close()
    return total / elapsed


def latency_share(directory: Path, calls: int = 300) -> tuple[float, float]:
    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    results = []
    for audit in ("true", "false"):
        from sidecar_process import start

        process, address = start(["--data-dir", str(directory / f"data-{audit}")],
                                 directory / f"serve-{audit}.log", {"GUARDRAIL_AUDIT": audit})
        stub = pb_grpc.GuardrailStub(grpc.insecure_channel(address))
        samples = []
        for n in range(calls + 30):
            started = time.perf_counter()
            stub.InspectPrompt(pb.InspectRequest(text=f"Mail jane{n}@example.com today",
                                                 subject_id=f"s{n % 50}"), timeout=10)
            if n >= 30:
                samples.append(time.perf_counter() - started)
        process.terminate()
        process.wait(timeout=30)
        results.append(statistics.median(samples))
    return results[0], results[1]


def erase_and_export(directory: Path) -> tuple[float, float, float]:
    from audit.store import NewRecord
    from sidecar.auditing import open_store
    from sidecar.cli import main
    from sidecar.config import Settings

    settings = Settings(data_dir=directory, policies=ROOT / "policies")
    store = open_store(settings)
    payload = b'{"messages": [{"role": "user", "content": "Write to <EMAIL_ADDRESS>"}]}'
    started = time.perf_counter()
    for batch in range(100):
        store.append([NewRecord(tenant="acme", decision="MODIFY", subject_id=(
            "heavy-user" if n % 10 == 0 else f"s{batch}-{n}"), payload=payload,
            entities={"EMAIL_ADDRESS": 1}) for n in range(1000)])
    fill = time.perf_counter() - started
    started = time.perf_counter()
    receipt = store.erase("heavy-user")
    erase = time.perf_counter() - started
    assert receipt.records_affected == 10_000, receipt.records_affected
    store.close()
    output = directory / "export.jsonl"
    started = time.perf_counter()
    code = main(["audit", "export", "--data-dir", str(directory), "-o", str(output)])
    export = time.perf_counter() - started
    assert code == 0
    return fill, erase, export


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rate = writes(root / "writes")
        print(f"1. sustained encrypted writes, 64 concurrent inspections: {rate:,.0f}/s "
              f"(target >= 5,000/s)")
        with_audit, without = latency_share(root)
        print(f"2. inspection p50 over gRPC: {with_audit * 1000:.2f} ms with the audit, "
              f"{without * 1000:.2f} ms without: the audit adds "
              f"{(with_audit - without) * 1000:.2f} ms ({with_audit / without:.2f}x)")
        fill, erase, export = erase_and_export(root / "bulk")
        print(f"   (100,000 records written in {fill:.1f} s for steps 3-4)")
        print(f"3. erasure of a subject with 10,000 records: {erase:.2f} s (target < 1 s)")
        print(f"4. export of 100,000 records with manifest: {export:.2f} s (target < 10 s)")


if __name__ == "__main__":
    main()
