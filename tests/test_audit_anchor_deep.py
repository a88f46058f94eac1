"""A head anchor nested too deeply for Python's JSON parser, under a real `guardrail
serve`: a malformed anchor (logged, the anchor left alone), never a RecursionError.

Outside trial: with `'[' * 100000` in keys/audit-anchor.json the server logged "audit
retention sweep failed RecursionError" and, on SIGTERM, died with a traceback (the
store's close caught only OSError, sqlite3.Error and AuditKeyError).
"""

from __future__ import annotations

from pathlib import Path

from tests.faults import Sidecar, kill_leftovers, no_traceback


def test_a_deeply_nested_anchor_is_malformed_for_the_server_too(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "audit-anchor.json").write_text("[" * 100000)
    sidecar = Sidecar(data)
    try:
        sidecar.serving()
        assert sidecar.prompt("Mail Ann Lee at ann@example.com").audit_id
        code = sidecar.stop()
    finally:
        kill_leftovers()
    output = "".join(sidecar.lines)
    no_traceback(output)
    assert code == 0, output[-2000:]
    assert "RecursionError" not in output, output[-2000:]
    assert not sidecar.logged("audit retention sweep failed"), output[-2000:]
    assert "is malformed" in output, output[-2000:]
