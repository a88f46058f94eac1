"""Load check for live policy reload (not a timed test).

    .venv/bin/python bench/policy_reload.py [--reloads 100] [--clients 4]

Starts `guardrail serve` on a scratch policy directory, keeps `--clients` threads
calling it without pause, and edits the default policy `--reloads` times: every other
edit is invalid (a misspelt field, a non-RE2 pattern, a second default policy, a
deleted default, broken YAML), each tagged with its own replacement marker. Prints
failed calls (must be 0), markers of invalid edits ever served (must be none), and how
long valid edits took to reach the callers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICY = """name: default
pii:
  entities:
    EMAIL_ADDRESS: {{action: replace, replacement: "[{marker}]"}}
"""
BREAKAGES = [
    lambda m: POLICY.format(marker=m).replace("action:", "acton:"),
    lambda m: POLICY.format(marker=m) + "  recognizers:\n    - {entity: EMAIL_ADDRESS, "
                                        "patterns: ['(?<=x)y']}\n",
    lambda m: POLICY.format(marker=m) + "  min_score: 7\n",
    lambda m: POLICY.format(marker=m).replace("pii:", "pii: [unclosed"),
    lambda m: POLICY.format(marker=m).replace("EMAIL_ADDRESS", "EMAIL_ADRESS"),
]


def main() -> None:
    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        policies = Path(tmp) / "policies"
        policies.mkdir()
        target = policies / "default.yaml"
        target.write_text(POLICY.format(marker="v0"))
        from sidecar_process import start

        log_path = Path(tmp) / "sidecar.log"
        process, address = start(["--policies", str(policies), "--data-dir",
                                  str(Path(tmp) / "data")], log_path)
        stub = pb_grpc.GuardrailStub(grpc.insecure_channel(address))
        seen: list[tuple[float, str]] = []
        failures: list[str] = []
        stop = threading.Event()
        calls = [0]

        def client() -> None:
            while not stop.is_set():
                try:
                    reply = stub.InspectPrompt(pb.InspectRequest(text="mail a@example.com"),
                                               timeout=10)
                    seen.append((time.monotonic(), reply.text.removeprefix("mail ")))
                    calls[0] += 1
                except grpc.RpcError as err:
                    failures.append(err.code().name)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        valid, invalid, latencies = {"[v0]"}, set(), []
        started = time.monotonic()
        try:
            for number in range(1, args.reloads + 1):
                marker = f"v{number}" if number % 2 == 0 else f"bad{number}"
                if number % 2 == 0:
                    text = POLICY.format(marker=marker)
                    valid.add(f"[{marker}]")
                else:
                    text = BREAKAGES[(number // 2) % len(BREAKAGES)](marker)
                    invalid.add(f"[{marker}]")
                staging = target.with_suffix(".tmp")
                staging.write_text(text)
                os.replace(staging, target)
                edited = time.monotonic()
                if number % 2 == 0:
                    while not any(at >= edited and s == f"[{marker}]" for at, s in seen[-50:]):
                        if time.monotonic() - edited > 10:
                            raise SystemExit(f"edit {number} never served")
                        time.sleep(0.01)
                    latencies.append(time.monotonic() - edited)
                else:
                    time.sleep(0.4)  # long enough for the watcher to try (and refuse) it
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            process.terminate()
            process.wait(timeout=30)
        elapsed = time.monotonic() - started
        served = {s for _, s in seen}
        rejected = sum('"policy change rejected' in line
                       for line in log_path.read_text().splitlines())
    print(f"{args.reloads} edits ({len(valid) - 1} valid, {len(invalid)} invalid) in "
          f"{elapsed:.1f} s under {args.clients} clients: {calls[0]} calls, "
          f"{calls[0] / elapsed:.0f}/s")
    print(f"failed calls: {len(failures)} {sorted(set(failures))}")
    print(f"invalid edits served: {len(served & invalid)}; rejection log lines: {rejected}")
    print(f"valid edit → first reply with it: median {statistics.median(latencies):.2f} s, "
          f"max {max(latencies):.2f} s")
    if failures or served & invalid:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
