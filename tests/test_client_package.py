"""guardrail-client (clients/python): installable alone, and what users found missing.

The package is installed into a fresh virtual environment that can import grpcio and
protobuf and nothing else of ours (no sidecar, no spaCy, no Presidio), and a script
run there calls a real sidecar over gRPC: `retryable` is false for a request that can
never succeed, `would_block`/`would_modify` and `request_id` are on `Result`,
`StreamUpdate` carries `released_chars`, `restored` and `routing_tags`, schema errors
keep `pointer`, `keyword` and `schema_path`. Its committed stubs must equal what
scripts/gen_protos.py generates for its package.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_tree
from tests.gateway import GatewaySidecar, RecordingUpstream, gateway_sidecar

CLIENT = REPO / "clients" / "python"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" /
                                                  "gen_protos.py")
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.PACKAGE = "guardrail_client._proto"
    gen.generate(tmp_path)
    committed = CLIENT / "guardrail_client" / "_proto"
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh == sorted(p.relative_to(committed) for p in committed.rglob("*")
                           if p.is_file() and "__pycache__" not in p.parts)
    for name in fresh:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewaySidecar]:
    upstream = RecordingUpstream()
    try:
        with gateway_sidecar(tmp_path_factory.mktemp("client"), upstream,
                             max_text_bytes=4096) as running:
            yield running
    finally:
        upstream.stop()


def _fresh_venv(tmp: Path) -> Path:
    """A venv whose only third-party imports are grpc (with typing_extensions, which
    grpcio requires) and google.protobuf, with the
    client package installed by pip (no index, no dependencies resolved)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    import google.protobuf
    import grpc
    import typing_extensions  # grpcio's own dependency

    deps = tmp / "deps"
    (deps / "google").mkdir(parents=True)
    os.symlink(Path(grpc.__file__).parent, deps / "grpc")
    os.symlink(Path(google.protobuf.__file__).parent, deps / "google" / "protobuf")
    os.symlink(typing_extensions.__file__, deps / "typing_extensions.py")
    (site / "only-grpc-and-protobuf.pth").write_text(f"{deps}\n")
    source = tmp / "client-src"
    copy_tree(CLIENT, source)  # the build writes egg-info next to the sources
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--no-build-isolation", "--target", str(site),
                    str(source)], check=True, env={**os.environ, "PIP_CONSTRAINT": ""})
    return venv / "bin" / "python"


SCRIPT = textwrap.dedent('''
    import importlib.util, sys
    for name in ("sidecar", "spacy", "presidio_analyzer", "audit"):
        assert importlib.util.find_spec(name) is None, name
    from guardrail_client import GuardrailClient, GuardrailCallError, utf16_offset

    with GuardrailClient(sys.argv[1], timeout=20) as guard:
        ask = guard.inspect_prompt("Mail me at ada.stone@acme.com", tenant="pseudo",
                                   conversation_id="c-1", request_id="req-42")
        assert ask.decision == "MODIFY" and ask.text == "Mail me at <EMAIL_ADDRESS_1>", ask
        assert ask.request_id == "req-42"
        assert ask.would_block is False

        shadow = guard.inspect_prompt("throw a grenade at x@acme.com", tenant="shadow-mode")
        assert shadow.decision == "ALLOW" and shadow.would_block, shadow
        edit = guard.inspect_prompt("write to x@acme.com", tenant="shadow-mode")
        assert edit.decision == "ALLOW" and edit.would_modify and not edit.would_block

        invalid = guard.inspect_completion("{}", tenant="schema", output_schema="ticket")
        error = invalid.schema_errors[0]
        assert error.keyword == "required" and error.schema_path and error.pointer == ""

        updates = list(guard.stream_completion(
            ["Dear <EMAIL_", "ADDRESS_1>, thanks."], tenant="pseudo", conversation_id="c-1"))
        final = updates[-1]
        assert final.final and final.decision == "MODIFY"
        assert "".join(u.text for u in updates) == "Dear ada.stone@acme.com, thanks."
        assert final.released_chars == final.received_chars == 31
        assert "<EMAIL_ADDRESS_1>" in [r for u in updates for r in u.restored]
        assert final.request_id and final.policy == "pseudonyms"

        eu = list(guard.stream_completion(["hello"], tenant="eu-shop", user_region="eu-west"))
        assert eu[-1].routing_tags["residency"] == "eu"

        try:
            guard.inspect_prompt("x" * 5000)
        except GuardrailCallError as err:
            assert err.code.name == "RESOURCE_EXHAUSTED" and not err.retryable, err
        else:
            raise AssertionError("over-size request accepted")
        try:
            guard.inspect_prompt()
        except GuardrailCallError as err:
            assert err.code.name == "INVALID_ARGUMENT" and not err.retryable
    assert utf16_offset("\\U0001F600 Ada", 2) == 3
    print("client ok")
''')


def test_the_package_installs_alone_and_works(sidecar: GatewaySidecar, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path)
    (tmp_path / "check.py").write_text(SCRIPT)
    done = subprocess.run([str(python), "-I", str(tmp_path / "check.py"),
                           sidecar.server.running.address], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "client ok" in done.stdout
