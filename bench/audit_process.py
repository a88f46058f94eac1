"""Would an audit writer process help? Two serves side by side, one as shipped and one
whose audit appends run in a process of their own (a probe, not product code).

    .venv/bin/python bench/audit_process.py [--rounds 4]

The probe (bench/probes/audit_process/sitecustomize.py, loaded through PYTHONPATH)
makes the front's AuditWriter hand each batch of records to a child process that
appends them to its own AuditStore on the same data directory and sends the ids
back; the writer thread in the front only pickles, waits with the GIL released, and
settles. Both serves get the same corpus requests at 16 callers and at c=1, in
alternating rounds; CPU is summed over each serve's processes (the child counts with
the workers). Round 11, 2 cores: front 0.85 -> 0.70 CPU-ms a request, the rest 1.73 ->
1.93, total 2.62 vs 2.63, docs/s 553 vs 560, c=1 p50 5.69 vs 5.85 ms (medians of four
rounds): the record's cost moves out of the front and an extra process's hops cost as
much again. Not built.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fair import GrpcSide, VanillaPool, interleave, warm
from pii_corpus import corpus
from sidecar_process import start
from suite import MODEL, policy_dir

PROBE = Path(__file__).resolve().parent / "probes" / "audit_process"


def main() -> None:
    from sidecar.pii.entities import known_entities

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    texts = [text for text, _ in corpus(1000, 42)]
    pool = VanillaPool(MODEL, 1)
    entities = sorted(set(pool.supported_entities()) & known_entities("en"))
    pool.close()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policies = policy_dir(root, "full", entities)
        processes = []
        try:
            sides = []
            for name, probe in (("as shipped", False), ("audit process", True)):
                data = root / f"data-{len(sides)}"
                env = {"PYTHONPATH": f"{PROBE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                       "AUDIT_PROC": "1", "PROBE_POLICIES": str(policies),
                       "PROBE_DATA_DIR": str(data)} if probe else {}
                process, address = start(["--policies", str(policies), "--data-dir", str(data),
                                          "--spacy-model", MODEL],
                                         root / f"{len(sides)}.log", env)
                processes.append(process)
                sides.append(GrpcSide(name, address, process.pid))
            warm(sides, texts[:64], 16)
            rows: dict[str, list[tuple[float, ...]]] = {side.name: [] for side in sides}
            for number in range(args.rounds):
                loaded = interleave(sides, texts, 16, 4)
                lone = interleave(sides, texts[:200], 1, 2)
                for side in sides:
                    at16, at1 = loaded[side.name], lone[side.name]
                    rows[side.name].append((at16.rate, at16.cpu_ms, at16.part_ms("front"),
                                            at16.part_ms("workers"), at1.p50 * 1000))
                print(f"round {number + 1}: " + "; ".join(
                    f"{name} {row[-1][0]:.0f} docs/s, {row[-1][1]:.2f} CPU-ms" for name, row
                    in rows.items()), flush=True)
            for name, row in rows.items():
                rate, cpu, front, rest, p50 = (statistics.median(column)
                                               for column in zip(*row, strict=True))
                print(f"{name:14s} c=16: {rate:.0f} docs/s, {cpu:.2f} CPU-ms a request (front "
                      f"{front:.2f}, the rest {rest:.2f}); c=1 p50 {p50:.2f} ms")
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
