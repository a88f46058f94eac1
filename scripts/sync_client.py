"""Write sidecar/client.py, the CLI's copy of the guardrail-client package's client.

    .venv/bin/python scripts/sync_client.py     # tests/test_client_package.py fails when stale

The package (clients/python/guardrail_client) is what apps install; the sidecar cannot
import it (it is not installed next to the sidecar, nor in the image), so the sidecar
keeps a copy that differs only in where the generated stubs come from. One source means
every fix (retryable, would_block, request_id, StreamUpdate fields, schema error fields,
InvalidText) reaches both.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "clients" / "python" / "guardrail_client" / "__init__.py"
TARGET = ROOT / "sidecar" / "client.py"
HEADER = ("# Generated from clients/python/guardrail_client/__init__.py by "
          "scripts/sync_client.py:\n# edit the package, then run the script. "
          "(Optional/Union: the package supports Python 3.9.)\n"
          "# ruff: noqa: UP007, UP045\n")


def render() -> str:
    text = SOURCE.read_text(encoding="utf-8")
    return HEADER + text.replace("from guardrail_client._proto.", "from sidecar._proto.")


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
