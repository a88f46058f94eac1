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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.client import GuardrailCallError, GuardrailClient, InvalidText
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
        from guardrail_client import InvalidText
        try:
            guard.inspect_prompt("broken \\ud800 string")
        except InvalidText as err:
            assert err.where == "text" and err.position == 7 and not err.retryable
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


def test_the_sidecars_client_is_the_packages_client() -> None:
    """sidecar/client.py (the CLI's) is generated from the package: one set of fixes."""
    spec = importlib.util.spec_from_file_location("sync_client", REPO / "scripts" /
                                                  "sync_client.py")
    assert spec is not None
    assert spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert (REPO / "sidecar" / "client.py").read_text(encoding="utf-8") == sync.render(), \
        "sidecar/client.py is stale: run scripts/sync_client.py"


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
plain = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=plain, lone=surrogates, after=plain,
       where=st.sampled_from(["text", "message", "tenant", "chunk"]))
def test_a_lone_surrogate_is_the_clients_own_error_never_a_unicode_error(
        sidecar: GatewaySidecar, before: str, lone: str, after: str, where: str) -> None:
    """What a broken UTF-16 string (JavaScript, Windows) decodes to: refused before it
    is sent, naming the field and position, never quoting the text, never retryable;
    and the client keeps working."""
    bad = before + lone + after
    with GuardrailClient(sidecar.server.running.address, timeout=20) as guard:
        calls = {
            "text": lambda: guard.inspect_prompt(bad),
            "message": lambda: guard.inspect_completion(
                messages=[("user", "fine"), ("assistant", bad)]),
            "tenant": lambda: guard.inspect_prompt("fine", tenant=bad),
            "chunk": lambda: list(guard.stream_completion(["fine ", bad, "never sent"]))}
        with pytest.raises(InvalidText) as caught:
            calls[where]()
        err = caught.value
        assert isinstance(err, GuardrailCallError)
        assert err.code.name == "INVALID_ARGUMENT" and not err.retryable
        field = {"text": "text", "message": "messages[1].content", "tenant": "tenant",
                 "chunk": "chunks[1]"}[where]
        assert (err.where, err.position) == (field, len(before))
        assert str(err) == (f"INVALID_ARGUMENT: {field}: a lone surrogate at code point "
                            f"{len(before)} is not valid Unicode; the text cannot be sent")
        assert guard.inspect_prompt("still working").decision == "ALLOW"


def test_would_modify_and_would_block_on_enforced_decisions_as_the_proto_says(
        sidecar: GatewaySidecar) -> None:
    """The proto's promise: would_block / would_modify say what enforcing every rule
    would decide, so on an enforce-mode policy they follow the decision itself."""
    with GuardrailClient(sidecar.server.running.address, timeout=20) as guard:
        modified = guard.inspect_prompt("write to ada.stone@acme.com")
        assert modified.decision == "MODIFY"
        assert modified.would_modify and not modified.would_block
        blocked = guard.inspect_prompt("my SSN is 078-05-1120, card 4111 1111 1111 1111")
        assert blocked.decision == "BLOCK"
        assert blocked.would_block and not blocked.would_modify
        clean = guard.inspect_prompt("hello there")
        assert clean.decision == "ALLOW"
        assert not clean.would_block and not clean.would_modify
