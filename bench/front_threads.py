"""Where the front process's CPU goes, thread by thread, with the audit on and off.

The speed suite (bench/suite.py) sums CPU over the front and the workers; this splits
the front: its event loop (gRPC's Python layer, our servicer, the worker pipes, logs,
metrics), the audit writer thread, and gRPC's native threads. Each thread's
utime + stime comes from /proc/<pid>/task/<tid>/stat before and after the same corpus
requests at 16 callers; serves with the audit on and off alternate, so a noisy stretch
of the machine hits both.

    .venv/bin/python bench/front_threads.py [--rounds 2] [--docs 600] [--callers 16]

Round 7 (2 cores): the event loop 0.74-0.82 CPU-ms a request either way, the audit
writer 0.22-0.24, gRPC's threads ~0.07 (README, "The gRPC front").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fair import GrpcSide, Tally, run, warm
from pii_corpus import corpus
from sidecar_process import start
from suite import policy_dir

TICK = os.sysconf("SC_CLK_TCK")
# The corpus entities vanilla Presidio supports in English (what bench/suite.py uses).
ENTITIES = ["CREDIT_CARD", "CRYPTO", "DATE_TIME", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS",
            "LOCATION", "MAC_ADDRESS", "MEDICAL_LICENSE", "NRP", "ORGANIZATION", "PERSON",
            "PHONE_NUMBER", "UK_NHS", "URL", "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_ITIN",
            "US_PASSPORT", "US_SSN", "UUID"]


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """Each thread of `pid`: (name, user seconds, system seconds)."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:  # the thread ended
            continue
        threads[int(tid)] = (name, int(fields[11]) / TICK, int(fields[12]) / TICK)
    return threads


def role(tid: int, pid: int, name: str, busiest_python: int | None) -> str:
    if tid == pid:
        return "event loop (main thread)"
    if name == "event_engine" or name.startswith("grpc"):
        return "gRPC native threads"
    if tid == busiest_python:
        return "audit writer"
    return "other threads"


def measure(audit: bool, texts: list[str], callers: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="front-threads-"))
    policies = policy_dir(root, "full", ENTITIES)
    process, address = start(
        ["--policies", str(policies), "--data-dir", str(root / "data")], root / "log",
        {"GUARDRAIL_AUDIT": "true" if audit else "false"})
    try:
        side = GrpcSide("sidecar", address, process.pid)
        warm([side], texts[:64], callers)
        before = thread_cpu(process.pid)
        tally = Tally()
        run(side, texts, callers, tally)
        after = thread_cpu(process.pid)
    finally:
        process.terminate()
        process.wait()
    spent = {}  # thread: (name, CPU-ms a request, of which system)
    for tid, (name, user, system) in after.items():
        _, user_before, system_before = before.get(tid, (name, 0.0, 0.0))
        spent[tid] = (name, (user - user_before + system - system_before) * 1e3 / len(texts),
                      (system - system_before) * 1e3 / len(texts))
    others = [tid for tid, (name, _, _) in spent.items()
              if tid != process.pid and name not in ("event_engine",)]
    # With the audit on, the writer is the busiest Python thread after the loop.
    busiest = max(others, key=lambda tid: spent[tid][1]) if audit and others else None
    by_role: dict[str, list[float]] = {}
    for tid, (name, cpu_ms, system_ms) in spent.items():
        total = by_role.setdefault(role(tid, process.pid, name, busiest), [0.0, 0.0])
        total[0] += cpu_ms
        total[1] += system_ms
    print(f"audit {'on ' if audit else 'off'}: {tally.rate:.0f} docs/s, front "
          f"{tally.part_ms('front'):.2f} CPU-ms a request, workers "
          f"{tally.part_ms('workers'):.2f}")
    for name, (cpu_ms, system_ms) in sorted(by_role.items(), key=lambda item: -item[1][0]):
        print(f"   {name:28s} {cpu_ms:.3f} CPU-ms a request ({system_ms:.3f} system)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--callers", type=int, default=16)
    args = parser.parse_args()
    texts = [text for text, _ in corpus(args.docs, 42)] * 4
    for number in range(args.rounds):
        for audit in ((True, False) if number % 2 == 0 else (False, True)):
            measure(audit, texts, args.callers)


if __name__ == "__main__":
    main()
