"""What the gateway adds to a model call (issue 20): latency p50/p99 over a direct call
to the same upstream, for a 1 KB prompt (JSON answer) and a 1 KB streamed completion,
and the time to first token the hold-back window adds.

    .venv/bin/python bench/gateway.py [--calls 100] [--policies DIR] [--tenant T]

Both paths hit the same local upstream (127.0.0.1, answers at once), so the difference
is the gateway: HTTP in and out, prompt and completion inspection (inline runner, one
core), the pseudonym vault and the audit commit. Figures print as milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway import RecordingUpstream, gateway_sidecar

SENTENCE = ("Please summarise the attached quarterly report for the operations team and "
            "list the three main risks with a short note on each. ")
PROMPT = (SENTENCE * 8)[:1024]


def _post(url: str, body: dict[str, object], stream: bool,
          tenant: str = "") -> tuple[float, float]:
    """(seconds to the first content byte, seconds to the end)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer sk-bench",
                                              "x-guardrail-tenant": tenant})
    started = time.perf_counter()
    first = 0.0
    with urllib.request.urlopen(request, timeout=60) as page:
        if stream:
            for line in page:
                if not first and b'"content": "' in line and b'"content": ""' not in line:
                    first = time.perf_counter() - started
        else:
            page.read()
    total = time.perf_counter() - started
    return first or total, total


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[int(0.99 * (len(ordered) - 1))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--policies", type=Path,
                        default=Path(__file__).resolve().parent.parent / "policies")
    parser.add_argument("--tenant", default="")
    args = parser.parse_args()
    upstream = RecordingUpstream()
    try:
        with tempfile.TemporaryDirectory() as tmp, gateway_sidecar(
                Path(tmp), upstream, policies=args.policies, upstream_timeout=60.0,
                metrics_listen="") as gateway:
            body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
            rows = []
            for label, stream in (("1 KB prompt, JSON answer", False),
                                  ("1 KB streamed completion", True)):
                payload = {**body, "stream": stream}
                timings: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
                for url, key in ((f"{upstream.url}/chat/completions", "direct"),
                                 (f"{gateway.base_url}/chat/completions", "gateway")):
                    for _ in range(5):  # warm-up
                        _post(url, payload, stream, args.tenant)
                    for _ in range(args.calls):
                        upstream.received.clear()
                        timings[key].append(_post(url, payload, stream, args.tenant))
                direct = [t for _, t in timings["direct"]]
                through = [t for _, t in timings["gateway"]]
                added = [g - d for g, d in zip(sorted(through), sorted(direct), strict=True)]
                p50, p99 = _percentiles(added)
                rows.append(f"{label:28s} added latency p50 {p50:6.1f} ms  p99 {p99:6.1f} ms "
                            f"(direct p50 {_percentiles(direct)[0]:.1f} ms)")
                if stream:
                    ttft_direct = [f for f, _ in timings["direct"]]
                    ttft_gateway = [f for f, _ in timings["gateway"]]
                    t50 = _percentiles(ttft_gateway)[0] - _percentiles(ttft_direct)[0]
                    rows.append(f"{'':28s} time to first token added p50 {t50:6.1f} ms "
                                "(hold-back window + prompt inspection)")
            print(f"gateway bench: {args.calls} calls each, policies {args.policies}")
            print("\n".join(rows))
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
