"""The committed stubs in sidecar/_proto must be exactly what proto/ generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import REPO


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = tmp_path / "_proto"
    gen.generate(fresh)
    committed = REPO / "sidecar" / "_proto"
    names = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    assert names == {p.relative_to(committed) for p in committed.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts}
    stale = [str(n) for n in sorted(names)
             if (fresh / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"run `make proto`: {stale} differ from proto/"
