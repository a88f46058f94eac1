"""Time every recognizer the sidecar builds on crafted and generated text shapes.

    .venv/bin/python bench/regex_shapes.py              # twelve crafted shapes
    .venv/bin/python bench/regex_shapes.py --search 300 --seed 1   # + generated ones

Presidio's predefined recognizers match with the backtracking `regex` module (bounded
only by a 60 s timeout per pattern); a shape that makes one of them slow holds a worker.

Crafted: each recognizer runs over twelve shapes (runs of digits, separators, dots, hex,
`a@a.a.…`) at 5,000 and 20,000 characters; the slowest pairs are printed with their
growth (4x is linear). Round 8: UrlRecognizer on `"a@" + "a." * n` took 20.9 s at
20,000 characters (its patterns now run on RE2: sidecar/pii/re2_patterns.py).

Generated (`--search N`): for each recognizer, N random shapes (a unit of 1-4 pieces
from digits, letters, symbols, accents and newlines, repeated, sometimes between a
random prefix and suffix) at 1,000 characters; its five slowest are timed again at
4,000 and 16,000. Round 9's first search (seed 1, 300 shapes) found what the twelve
crafted shapes had not: Presidio's EmailRecognizer is quadratic in a run of local-part
characters before an "@" with no dotted domain after it (`"=0" * n + "@9"`: 18.3 s at
16,000 characters, growth 15x; through the shipped default policy 17.4 s, and 100 KB
hit the 60 s timeout). Its starts are now found by RE2 (re2_patterns.StartsOnRe2).
After it, the slowest generated shapes (seeds 1 and 2) grow linearly; the heaviest is
phone numbers on `" -0" * n` (~66 µs a character: every run of zeros is parsed, once
per region; README: "What a request can cost"). The thirteen national-identifier
recognizers a policy may list (UK_NINO, IT_FISCAL_CODE, ...), searched with seed 3:
all linear, the slowest ~9 ms at 16,000 characters.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from sidecar.pii.recognizers import (
    COUNTRY_RECOGNIZERS,
    country_recognizer,
    predefined_recognizers,
)

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
PIECES = [*"1 90aAxZ-./:@_,+()#\né%=?&;'\"", "ab", "12", "a1", "1a", "A1"]


def seconds(recognizer: Any, text: str) -> float:
    started = time.perf_counter()
    recognizer.analyze(text, recognizer.supported_entities, None)
    return time.perf_counter() - started


def generated(rng: random.Random) -> Callable[[int], str]:
    def unit() -> str:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 4)))

    repeated, prefix, suffix = unit(), unit(), unit()
    if rng.random() < 0.6:
        return lambda n: (repeated * (n // len(repeated) + 1))[:n]
    return lambda n: prefix + (repeated * (n // len(repeated) + 1))[
        :n - len(prefix) - len(suffix)] + suffix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", type=int, default=0, metavar="N",
                        help="also time N generated shapes per recognizer")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    recognizers = [r for r in predefined_recognizers("en")
                   if type(r).__name__ != "SpacyRecognizer"]  # NER: not a pattern
    # The national identifiers a policy may list (sidecar.pii.recognizers), too.
    recognizers += [country_recognizer(entity, "en") for entity in COUNTRY_RECOGNIZERS]
    rows = []
    for recognizer in recognizers:
        name = getattr(recognizer, "name", type(recognizer).__name__)
        for shape, make in SHAPES.items():
            small, large = seconds(recognizer, make(5_000)), seconds(recognizer, make(20_000))
            rows.append((large, large / max(small, 1e-6), name, shape))
    rows.sort(reverse=True)
    print("crafted: recognizer           shape          20K ms   growth 5K->20K")
    for at_20k, growth, name, shape in rows[:12]:
        print(f"{name:30s} {shape:12s} {at_20k * 1e3:8.1f}   x{growth:4.1f}")
    if not args.search:
        return
    rng = random.Random(args.seed)
    found = []
    for recognizer in recognizers:
        name = getattr(recognizer, "name", type(recognizer).__name__)
        shapes = [generated(rng) for _ in range(args.search)]
        timed = sorted(((seconds(recognizer, make(1_000)), index)
                        for index, make in enumerate(shapes)), reverse=True)
        print(f"{name:30s} median at 1K {statistics.median(t for t, _ in timed) * 1e3:.3f} "
              f"ms, slowest {timed[0][0] * 1e3:.3f}", flush=True)
        for _, index in timed[:5]:
            make = shapes[index]
            small, large = seconds(recognizer, make(4_000)), seconds(recognizer, make(16_000))
            found.append((large, large / max(small, 1e-7), name, make(40)))
    found.sort(reverse=True)
    print("generated: recognizer          16K ms   growth 4K->16K   shape (40 characters)")
    for at_16k, growth, name, sample in found[:20]:
        print(f"{name:30s} {at_16k * 1e3:8.1f}   x{growth:5.1f}   {sample!r}")


if __name__ == "__main__":
    main()
