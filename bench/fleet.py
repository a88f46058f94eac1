"""Fleet mode figures against a real PostgreSQL (scripts/pg.sh, started and stopped here):
shipping throughput into the store, a fleet export of N records, erasure propagation
to listening pods. `python bench/fleet.py [--records 100000]`.

Inspection latency with the store on vs off is not measured here (see README).
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
    args = parser.parse_args()
    import subprocess

    pgdir = Path(tempfile.mkdtemp(prefix="guardrail-pg-"))
    url = subprocess.run([str(PG), "start", str(pgdir)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        run(url, args.records)
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


if __name__ == "__main__":
    sys.exit(main())
