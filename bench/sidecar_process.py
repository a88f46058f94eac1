"""Start `guardrail serve` for a benchmark and wait until it serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(args: list[str], log_path: Path,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`guardrail serve --listen 127.0.0.1:0 ARGS`; (process, address) once it serves.

    Its log goes to a file, so no reader thread competes with the benchmark's client for
    this process's GIL.
    """
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve", "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0", *args],
            cwd=ROOT, stderr=log_file, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        address = _logged_address(log_path, "serving")
        if address is not None:
            _await_idle_work(log_path, process, _workers(args, env))
            return process, address
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the sidecar did not start:\n" + log_path.read_text())


def _workers(args: list[str], env: dict[str, str] | None) -> int:
    """How many worker processes `guardrail serve ARGS` starts (0: inline)."""
    if "--workers" in args:
        return int(args[args.index("--workers") + 1])
    configured = (env or {}).get("GUARDRAIL_WORKERS") or os.environ.get("GUARDRAIL_WORKERS")
    if configured:
        return int(configured)
    from sidecar.runner import available_cpus

    return available_cpus()


def _await_idle_work(log_path: Path, process: subprocess.Popen[bytes], workers: int) -> None:
    """Wait until every worker has done the work it does once while idle after start (it
    fills spaCy's tokenizer cache, ~0.8 s of CPU): measured rounds then see workers as
    they serve from then on, and none of that one-off CPU counts against a side."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        done = sum(1 for line in log_path.read_text().splitlines()
                   if '"worker finished its idle work"' in line)
        if done >= workers:
            return
        time.sleep(0.2)


def _logged_address(log_path: Path, message: str) -> str | None:
    """The `address` of the first JSON log line whose `msg` is `message`, if any."""
    for line in log_path.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("msg") == message:
            return str(entry["address"])
    return None


def metrics_address(log_path: Path) -> str:
    """Where the sidecar started by `start` serves /metrics (from its log)."""
    address = _logged_address(log_path, "metrics listening")
    if address is None:
        raise SystemExit("the sidecar logged no metrics address")
    return address


def scrape(address: str, name: str) -> float:
    """The value of an unlabelled sample `name` on the sidecar's /metrics page."""
    from urllib.request import urlopen

    with urlopen(f"http://{address}/metrics", timeout=10) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return 0.0
