"""Fleet mode figures against a real PostgreSQL (scripts/pg.sh, started and stopped here):
shipping throughput into the store, a fleet export of N records, erasure propagation
to listening pods, and what fleet mode costs an inspection: p50 (one caller) and
throughput (8 callers) of a `guardrail serve` with the store vs one without, both with
the audit on, measured one after the other in this run (target: within 10%).

    python bench/fleet.py [--records 100000] [--part all|store|inspection]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit import chain, crypto  # noqa: E402
from audit.export import rows  # noqa: E402
from audit.pgstore import Central, FleetStore, KeyRing, prune_outbox, ship  # noqa: E402
from audit.store import _KEY_MIGRATIONS, _MIGRATIONS, AuditStore, NewRecord, open_database  # noqa: E402
from tests.fleet.conftest import PG  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--part", choices=["all", "store", "inspection"], default="all")
    parser.add_argument("--calls", type=int, default=400, help="per inspection figure")
    args = parser.parse_args()
    import subprocess

    pgdir = Path(tempfile.mkdtemp(prefix="guardrail-pg-"))
    url = subprocess.run([str(PG), "start", str(pgdir)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        if args.part in ("all", "store"):
            run(url, args.records)
        if args.part in ("all", "inspection"):
            inspection(url, args.calls)
    finally:
        subprocess.run([str(PG), "stop", str(pgdir)], check=False)
    return 0


def run(url: str, count: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="guardrail-fleet-bench-"))
    kek = crypto.Kek(crypto.new_dek())
    signer = chain.Signer.load_or_create(work / "signing.key")
    central = Central(url, kek)
    central.register_chain("pod-a", signer.public_hex())
    (work / "audit").mkdir()
    keys = open_database(work / "audit" / "audit-keys.db", _KEY_MIGRATIONS).conn
    keyring = KeyRing(central, keys)
    store = AuditStore(work / "audit", kek, signer, central.index_key, keyring=keyring)
    for start in range(0, count, 1000):
        store.append([NewRecord(tenant="acme", app="a", direction="prompt", decision="ALLOW",
                                policy="p", revision="r", retain_until=4e9,
                                subject_id=f"s{(start + i) % 500}", payload=b"x" * 200)
                      for i in range(min(1000, count - start))])
    store.checkpoint()
    outbox = open_database(work / "audit" / "audit.db", _MIGRATIONS).conn
    began = time.perf_counter()
    shipped = 0
    while True:
        result = ship(central, outbox, keys, "pod-a", batch=5000)
        shipped += result.shipped
        prune_outbox(outbox, result.acked_seq)
        if not result.shipped:
            break
    took = time.perf_counter() - began
    print(f"shipping: {shipped} records in {took:.2f} s = {shipped / took:,.0f} records/s "
          "(target >= 5,000/s)")
    fleet = FleetStore(Central(url, kek), signer)
    began = time.perf_counter()
    exported = sum(1 for _ in rows(fleet))
    took = time.perf_counter() - began
    print(f"fleet export: {exported} records in {took:.2f} s (target < 10 s)")
    began = time.perf_counter()
    verified = fleet.verify([signer.public_hex()])
    print(f"fleet verify: {verified.checked} records, ok={verified.ok}, "
          f"{time.perf_counter() - began:.2f} s")
    # Erasure propagation: three listening key rings (pods) hold the subject's key.
    rings = [KeyRing(Central(url, kek), open_database(work / "audit" / "audit-keys.db",
                                                      _KEY_MIGRATIONS).conn)
             for _ in range(3)]
    scope = ("subject", central.subject_ref("s7"))
    for ring in rings:
        ring.listen()
        ring.load({scope})
    while not all(ring.listening for ring in rings):
        time.sleep(0.01)
    done = [threading.Event() for _ in rings]
    old = rings[0].load({scope})[scope][0]
    began = time.perf_counter()
    fleet.erase("s7", actor="bench")
    erased_at = time.perf_counter()
    seen: list[float] = []
    while len(seen) < len(rings) and time.perf_counter() - erased_at < 30:
        for n, ring in enumerate(rings):
            if not done[n].is_set() and ("subject", scope[1]) not in ring._scopes:
                done[n].set()
                seen.append(time.perf_counter() - erased_at)
        time.sleep(0.001)
    print(f"erasure: committed in {(erased_at - began) * 1000:.0f} ms; dropped by 3 pods "
          f"after {', '.join(f'{s * 1000:.0f} ms' for s in seen)} (bound: cache "
          f"{rings[0].cache_seconds:g} s); old key {old[:8]}… destroyed")
    for ring in rings:
        ring.close()


def inspection(url: str, calls: int, rounds: int = 8) -> None:
    """p50 and throughput of InspectPrompt, fleet mode off vs on (audit on in both).

    Both sidecars run at once and are measured in alternating rounds, so load from
    elsewhere on the machine falls on both alike instead of on whichever ran second.
    """
    import concurrent.futures
    import statistics

    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
    from tests.fleet.conftest import fleet_secrets

    sys.path.insert(0, str(ROOT / "bench"))
    from sidecar_process import start

    work = Path(tempfile.mkdtemp(prefix="guardrail-fleet-inspect-"))
    keys = fleet_secrets(work / "secrets")
    processes, stubs = [], {}
    try:
        for mode, env in (("off", {}), ("on", keys.env(url))):
            process, address = start(["--data-dir", str(work / f"data-{mode}")],
                                     work / f"serve-{mode}.log", env)
            processes.append(process)
            stubs[mode] = pb_grpc.GuardrailStub(grpc.insecure_channel(address))

        def call(mode: str, n: int) -> float:
            began = time.perf_counter()
            stubs[mode].InspectPrompt(pb.InspectRequest(
                text=f"Mail jane{n}@example.com about order {n}, Ann Lee",
                subject_id=f"s{n % 50}", tenant="acme"), timeout=30)
            return time.perf_counter() - began

        for mode in stubs:  # warm-up: models, caches, the store's pool
            for n in range(30):
                call(mode, n)
        latency: dict[str, list[float]] = {mode: [] for mode in stubs}
        busy: dict[str, float] = dict.fromkeys(stubs, 0.0)
        per_round = max(calls // rounds, 1)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for round_ in range(rounds):
                order = list(stubs) if round_ % 2 == 0 else list(stubs)[::-1]
                for mode in order:
                    base = round_ * per_round * 3
                    latency[mode] += [call(mode, base + n) for n in range(per_round)]
                    began = time.perf_counter()
                    list(pool.map(lambda n, m=mode: call(m, n),
                                  range(base, base + per_round * 2)))
                    busy[mode] += time.perf_counter() - began
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
    p50 = {mode: statistics.median(samples) for mode, samples in latency.items()}
    rate = {mode: per_round * 2 * rounds / busy[mode] for mode in busy}
    print(f"inspection p50 (1 caller, {per_round * rounds} calls each): "
          f"{p50['off'] * 1000:.2f} ms off, {p50['on'] * 1000:.2f} ms fleet "
          f"({(p50['on'] / p50['off'] - 1) * 100:+.1f}%; target within 10%)")
    print(f"inspection throughput (8 callers): {rate['off']:,.0f}/s off, "
          f"{rate['on']:,.0f}/s fleet ({(rate['on'] / rate['off'] - 1) * 100:+.1f}%; "
          "target within 10%)")


if __name__ == "__main__":
    sys.exit(main())
