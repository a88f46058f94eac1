"""Fuzz a real `guardrail serve` through gRPC: 100,000 random requests by default.

    .venv/bin/python scripts/fuzz.py [--inputs N] [--seed S]

Hypothesis draws the requests (tests/fuzzing.py: text, chat, completions with schemas,
streams, on every tenant of tests/policies); they are sent --concurrency at a time, so
the sidecar batches and both workers stay busy. The run fails at the first answer the
API must never give: an error other than INVALID_ARGUMENT or RESOURCE_EXHAUSTED, a
stage that raised (an `error.*` violation), a finding outside its message, a call that
did not finish within --timeout (a hang); it prints that request. tests/test_fuzz.py
runs the same requests one at a time, where Hypothesis can shrink a failure. At the
end the sidecar's log must hold no traceback and no "stage failed", and the audit chain
must verify.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from bench.sidecar_process import start  # noqa: E402
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc  # noqa: E402
from tests.fuzzing import Call, Unexpected, calls, check, send  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a call may take before it counts as a hang")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="guardrail-fuzz-"))
    log = work / "sidecar.log"
    process, address = start(["--policies", str(ROOT / "tests/policies"),
                              "--data-dir", str(work / "data")], log)
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.GuardrailStub(channel)
    pool = ThreadPoolExecutor(max_workers=args.concurrency)
    slots = threading.BoundedSemaphore(args.concurrency)
    tally: Counter[str] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    shown = [started]

    def one(call: Call) -> None:
        try:
            tally[f"{call.kind} {check(call, send(stub, call, args.timeout))}"] += 1
        except Unexpected as err:
            failures.append(f"{err}\n    request: {call!r}"[:4000])
        finally:
            slots.release()

    @seed(args.seed)
    @settings(max_examples=args.inputs, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(call=calls())
    def fuzz(call: Call) -> None:
        if failures:
            return  # stop sending; the rest of the run only drains
        slots.acquire()
        pool.submit(one, call)
        if time.perf_counter() - shown[0] > 30:
            shown[0] = time.perf_counter()
            done = sum(tally.values())
            print(f"  {done:>7} inputs, {done / (shown[0] - started):.0f}/s", flush=True)

    try:
        fuzz()
    finally:
        pool.shutdown(wait=True)
        elapsed = time.perf_counter() - started
        channel.close()
        process.terminate()
        process.wait(timeout=60)
    return report(tally, failures, elapsed, exit_code=process.returncode, log=log, work=work,
                  wanted=args.inputs)


def report(tally: Counter[str], failures: list[str], elapsed: float, *, exit_code: int,
           log: Path, work: Path, wanted: int) -> int:
    """Print what happened; 0 when every check passed."""
    problems = [line for line in log.read_text().splitlines() if _problem(line)]
    key = subprocess.run([sys.executable, "-m", "sidecar", "audit", "public-key",
                          "--data-dir", str(work / "data")],
                         capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()
    verify = subprocess.run([sys.executable, "-m", "sidecar", "audit", "verify",
                             "--data-dir", str(work / "data"), "--public-key", key],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    total = sum(tally.values())
    print(f"\n{total} inputs in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
          f"sidecar exit code {exit_code}")
    for outcome, count in sorted(tally.items()):
        print(f"  {outcome:28s} {count:>7}")
    print(f"log problems: {len(problems)}; audit verify: {verify.stdout.strip()}")
    for line in problems[:5]:
        print("  " + json.dumps(line)[:300])
    for failure in failures[:3]:
        print("UNEXPECTED: " + failure)
    ok = not failures and not problems and verify.returncode == 0 \
        and exit_code == 0 and total >= wanted
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


ERRORS = {"stage failed", "batched stage failed; retrying one request at a time",
          "inspection failed", "stream failed", "batch failed", "worker exited; starting a "
          "new one", "audit batch failed"}


def _problem(line: str) -> bool:
    """A traceback (a line that is not one of our JSON entries) or an error we log."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return "Traceback (most recent call last)" in line
    return isinstance(entry, dict) and entry.get("msg") in ERRORS


if __name__ == "__main__":
    sys.exit(main())
