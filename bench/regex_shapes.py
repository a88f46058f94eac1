"""Time every predefined Presidio pattern recognizer on crafted text shapes.

    .venv/bin/python bench/regex_shapes.py

Presidio's predefined recognizers match with the backtracking `regex` module (bounded
only by a 60 s timeout per pattern); a shape that makes one of them slow holds a worker.
Each recognizer the sidecar builds runs over twelve shapes (runs of digits, separators,
dots, hex, `a@a.a.…`) at 5,000 and 20,000 characters; the slowest pairs are printed
with their growth from 5,000 to 20,000 (4x is linear). Round 8: UrlRecognizer on
`"a@" + "a." * n` took 20.9 s at 20,000 characters (its patterns now run on RE2:
sidecar/pii/re2_patterns.py); after that change the slowest pair is DateRecognizer
on "1-1-1…" at ~31 ms (growth ~2-4x: linear).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from presidio_analyzer import PatternRecognizer

from sidecar.pii.recognizers import predefined_recognizers

SHAPES: dict[str, Callable[[int], str]] = {
    "digits": lambda n: "1" * n,
    "digit-dash": lambda n: "1-" * (n // 2),
    "digit-space": lambda n: "1 " * (n // 2),
    "dots": lambda n: "a." * (n // 2),
    "at-dots": lambda n: "a@" + "a." * (n // 2 - 1),
    "hex": lambda n: "ab" * (n // 2),
    "alnum": lambda n: "a1" * (n // 2),
    "colon-hex": lambda n: "ab:" * (n // 3),
    "url-ish": lambda n: "http://" + "a-" * (n // 2),
    "upper-digit": lambda n: "A1" * (n // 2),
    "slash": lambda n: "1/" * (n // 2),
    "spaces-words": lambda n: "ab " * (n // 3),
}


def main() -> None:
    recognizers = [r for r in predefined_recognizers("en") if isinstance(r, PatternRecognizer)]
    rows = []
    for recognizer in recognizers:
        for shape, make in SHAPES.items():
            seconds = []
            for size in (5_000, 20_000):
                text = make(size)
                started = time.perf_counter()
                recognizer.analyze(text, recognizer.supported_entities, None)
                seconds.append(time.perf_counter() - started)
            rows.append((seconds[1], seconds[1] / max(seconds[0], 1e-6),
                         type(recognizer).__name__, shape))
    rows.sort(reverse=True)
    print("recognizer                   shape          20K ms   growth 5K->20K")
    for at_20k, growth, name, shape in rows[:12]:
        print(f"{name:28s} {shape:12s} {at_20k * 1e3:8.1f}   x{growth:4.1f}")


if __name__ == "__main__":
    main()
