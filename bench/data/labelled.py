"""The hand-labelled prompt corpus: authored as marked-up text, stored as JSONL.

    .venv/bin/python bench/data/labelled.py      # rebuild prompts.jsonl from source/*.txt

Each file in `source/` holds prompts, each starting with a line `@@ <category>`; the
prompt is everything up to the next such line (its trailing newline dropped). A
labelled span is written `⟦TYPE|value⟧`, or `⟦TYPE@CC|value⟧` to record the country
(ISO 3166 alpha-2) of an address or a phone number. The brackets are removed and the
span's character offsets computed, so offsets can never drift from the text by hand.
`prompts.jsonl` is what the benchmark reads; a test checks it is this file's output.

Labelling rules: bench/data/README.md.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "source"
JSONL = HERE / "prompts.jsonl"

# Every label the corpus may use: Presidio's entity names where one exists, plus
# STREET_ADDRESS (a postal address; Presidio has no recognizer for it).
LABELS = frozenset({
    "PERSON", "LOCATION", "STREET_ADDRESS", "ORGANIZATION", "NRP", "DATE_TIME",
    "PHONE_NUMBER", "EMAIL_ADDRESS", "URL", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE",
    "US_SSN", "US_BANK_NUMBER", "US_PASSPORT", "US_DRIVER_LICENSE", "MEDICAL_LICENSE",
    "CRYPTO", "UK_NHS", "UK_NINO", "IT_FISCAL_CODE", "ES_NIF", "IN_PAN", "IN_AADHAAR",
    "AU_TFN", "AU_MEDICARE", "SG_NRIC_FIN",
})
CATEGORIES = frozenset({"ticket", "hr", "bank", "medical", "log", "csv", "chat", "address",
                        "phone", "ids", "clean"})
_SPAN = re.compile(r"⟦([A-Z_]+)(?:@([A-Z]{2}))?\|(.*?)⟧", re.DOTALL)


def parse(marked: str) -> tuple[str, list[dict[str, Any]]]:
    """(plain text, spans) of one marked-up prompt."""
    out: list[str] = []
    spans: list[dict[str, Any]] = []
    cursor = length = 0
    for match in _SPAN.finditer(marked):
        before = marked[cursor:match.start()]
        out.append(before)
        length += len(before)
        label, country, value = match.groups()
        span: dict[str, Any] = {"start": length, "end": length + len(value), "label": label}
        if country:
            span["country"] = country
        spans.append(span)
        out.append(value)
        length += len(value)
        cursor = match.end()
    out.append(marked[cursor:])
    return "".join(out), spans


def records() -> Iterator[dict[str, Any]]:
    """Every prompt of source/*.txt, in file order, with an id `<file>-<n>`."""
    for path in sorted(SOURCE.glob("*.txt")):
        blocks = re.split(r"^@@ ", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
        if blocks[0].strip():
            raise ValueError(f"{path.name}: text before the first '@@' line")
        for number, block in enumerate(blocks[1:], 1):
            category, _, body = block.partition("\n")
            text, spans = parse(body.removesuffix("\n"))
            yield {"id": f"{path.stem}-{number}", "category": category.strip(),
                   "text": text, "spans": spans}


def load(path: Path = JSONL) -> list[dict[str, Any]]:
    """The stored corpus (one JSON object a line)."""
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def dumps(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


if __name__ == "__main__":
    built = list(records())
    JSONL.write_text(dumps(built), encoding="utf-8")
    clean = sum(not item["spans"] for item in built)
    print(f"{len(built)} prompts ({clean} without PII) -> {JSONL}", file=sys.stderr)
