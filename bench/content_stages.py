"""Content matching at scale, and what each stage costs per request, in one run.

    .venv/bin/python bench/content_stages.py          # (make bench runs it too)

1. A 100,000-word deny-list over 10 KB of text: the content stage (one Aho-Corasick
   automaton on the normalised view) against a naive regex alternation of the same list
   (Python `re`, `\\b(?:w1|w2|...)\\b`, case-insensitive), build time and match time.
2. Per-request cost of each stage of policies/example.yaml on a typical prompt and a
   JSON completion, in-process (no gRPC), median of many runs.

Nothing here is a test: the figures go into README.md.
"""

from __future__ import annotations

import random
import re
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(function, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def deny_list_benchmark(words: int = 100_000, text_bytes: int = 10_000) -> None:
    from sidecar.policy.model import ContentConfig, ContentRule
    from sidecar.stages.content import ContentStage
    from sidecar.types import Inspection

    rng = random.Random(7)
    vocabulary = sorted({"".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 12)))
                         for _ in range(words * 2)})[:words]
    filler = ["the", "report", "says", "we", "should", "review", "the", "quarterly",
              "numbers", "before", "friday", "and", "send", "a", "summary", "to", "everyone",
              "on", "the", "team"]
    tokens = []
    while sum(len(t) + 1 for t in tokens) < text_bytes:
        tokens.append(rng.choice(vocabulary) if rng.random() < 0.01 else rng.choice(filler))
    text = " ".join(tokens)[:text_bytes]
    print(f"deny-list: {len(vocabulary):,} words, text {len(text):,} characters, "
          f"{sum(t in set(vocabulary) for t in text.split())} listed words in it")

    started = time.perf_counter()
    stage = ContentStage(ContentConfig(rules=[ContentRule(
        id="deny", category="test", action="flag", words=vocabulary)]))
    automaton_build = time.perf_counter() - started
    inspection = Inspection.of_text(text)
    automaton_hits = len(stage.run(inspection).violations)
    automaton_match = timed(lambda: stage.run(inspection), 20)

    started = time.perf_counter()
    naive = re.compile(r"\b(?:" + "|".join(map(re.escape, vocabulary)) + r")\b", re.IGNORECASE)
    naive_build = time.perf_counter() - started
    naive_hits = len(naive.findall(text))
    naive_match = timed(lambda: naive.findall(text), 3)

    print(f"{'':38s} {'build s':>8s} {'match ms':>9s} {'hits':>5s}")
    print(f"{'content stage (automaton, normalised)':38s} {automaton_build:8.2f} "
          f"{automaton_match * 1000:9.2f} {automaton_hits:5d}")
    print(f"{'naive re alternation (raw text)':38s} {naive_build:8.2f} "
          f"{naive_match * 1000:9.2f} {naive_hits:5d}")
    print(f"matching: the automaton is {naive_match / automaton_match:.1f}x faster, "
          "and also sees through Unicode tricks\n")


def stage_breakdown(repeat: int = 200) -> None:
    from sidecar.config import Settings
    from sidecar.pipeline import Pipeline
    from sidecar.types import Direction, Inspection

    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline.from_settings(Settings(policies=ROOT / "policies",
                                                   data_dir=Path(tmp)))
        pipeline.prepare()
        compiled = pipeline.policies.by_name["acme-support"]
        prompt = Inspection.of_text(
            "Hi, I'm John Smith (EMP-123456), my email is john.smith@example.com and my "
            "phone 212-555-0187. The server db1.corp.acme.example is down again, can you "
            "open a ticket?", tenant="acme", app="support-web", user_region="eu-west-1")
        completion = Inspection.of_text(
            '{"summary": "John Smith reports db1 is down; call 212-555-0187", '
            '"priority": "high", "customer": "john.smith@example.com", "tags": ["outage"]}',
            Direction.COMPLETION, tenant="acme", app="support-web", output_schema="ticket")
        print(f"per-request cost by stage (policy {compiled.name}, median of {repeat}, "
              "in-process):")
        print(f"{'stage':12s} {'prompt ms':>10s} {'JSON completion ms':>19s}")
        totals = [0.0, 0.0]
        rows = {}
        for column, inspection in enumerate((prompt, completion)):
            target, prior = inspection, ()
            for stage in compiled.stages:
                cost = timed(lambda s=stage, t=target, p=prior: s.run(t, p), repeat)
                result = stage.run(target, prior)
                rows.setdefault(stage.name, [None, None])[column] = cost
                totals[column] += cost
                if result.projection is not None:  # later stages see the JSON values
                    from sidecar.types import Message

                    target = Inspection(
                        Direction.COMPLETION,
                        tuple(Message("", s.value) for s in result.projection.strings),
                        chat=True, tenant=inspection.tenant)
                prior = (*prior, *result.findings, *result.violations)
        for name, (a, b) in rows.items():
            print(f"{name:12s} {_ms(a):>10s} {_ms(b):>19s}")
        whole = [timed(lambda i=i: pipeline.run(i), repeat) for i in (prompt, completion)]
        print(f"{'sum':12s} {totals[0] * 1000:10.3f} {totals[1] * 1000:19.3f}")
        print(f"{'pipeline.run':12s} {whole[0] * 1000:10.3f} {whole[1] * 1000:19.3f}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.3f}"


if __name__ == "__main__":
    deny_list_benchmark()
    stage_breakdown()
