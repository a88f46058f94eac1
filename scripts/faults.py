"""Break what an operator can break, one fault at a time, against real `guardrail serve`
processes; print what the sidecar did. Exit 1 if any promise was not kept.

    .venv/bin/python scripts/faults.py [NAME ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults import SCENARIOS, kill_leftovers  # noqa: E402


def main() -> int:
    chosen = sys.argv[1:] or list(SCENARIOS)
    failed = 0
    print(f"{'fault':30s} {'result':6s} {'s':>5s}  what the sidecar did")
    for name in chosen:
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="guardrail-fault-") as work:
                detail, result = SCENARIOS[name](Path(work)), "ok"
        except Exception as err:
            failed += 1
            detail, result = f"{type(err).__name__}: {err}"[:300], "FAILED"
            traceback.print_exc()
        finally:
            kill_leftovers()
        print(f"{name:30s} {result:6s} {time.perf_counter() - started:5.1f}  {detail}",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
