"""Nothing the sidecar runs may open a non-loopback connection or resolve a public name.

The guard records attempts instead of raising, because tldextract catches network errors
and silently falls back: a raising guard would let the attempt go unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, TEST_POLICIES

GUARD = r"""
import json, socket, sys
attempts = []
LOOPBACK = ("127.", "::1", "localhost", "unix:")

def _blocked(host):
    host = str(host)
    return not host.startswith(LOOPBACK) and host not in ("", "None")

_getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect
def getaddrinfo(host, *a, **k):
    if _blocked(host):
        attempts.append(f"resolve {host}")
        raise socket.gaierror("blocked by test guard")
    return _getaddrinfo(host, *a, **k)
def connect(self, address):
    if isinstance(address, tuple) and _blocked(address[0]):
        attempts.append(f"connect {address[0]}")
        raise OSError("blocked by test guard")
    return _connect(self, address)
socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect

MODE = sys.argv[1]
if MODE == "sidecar":
    from sidecar.config import Settings
    from sidecar.pipeline import Pipeline
    from sidecar.types import Inspection
    settings = Settings(policies=sys.argv[2], data_dir=sys.argv[3])
    pipeline = Pipeline.from_settings(settings)
    pipeline.prepare()
    verdict = pipeline.run(Inspection.of_text(
        "Mail John Smith at john.smith@example.co.uk or visit https://example.org/x"))
    result = [f.entity_type for f in verdict.findings]
else:  # the control: vanilla tldextract, as Presidio would use it without our fix
    import tldextract
    result = [tldextract.extract("john.smith@example.co.uk").suffix]
print(json.dumps({"attempts": attempts, "result": result}))
"""


def run_guarded(*args: str) -> dict[str, list[str]]:
    env = {"PATH": "/usr/bin:/bin", "HOME": args[-1] if len(args) > 1 else "/tmp",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", GUARD, *args], capture_output=True, text=True,
                         env=env, timeout=180, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_control_guard_catches_vanilla_tldextract(tmp_path: Path) -> None:
    report = run_guarded("control", str(tmp_path))
    assert report["attempts"], "the guard must see tldextract's fetch, else it proves nothing"


def test_full_inspection_makes_no_outbound_attempt(tmp_path: Path) -> None:
    report = run_guarded("sidecar", str(TEST_POLICIES), str(tmp_path / "data"), str(tmp_path))
    assert report["attempts"] == []
    assert "EMAIL_ADDRESS" in report["result"] and "PERSON" in report["result"]
    assert not (tmp_path / ".cache").exists()  # and no public-suffix cache written either
