"""The private library details the PII stage relies on are all named in one module, and
an upgrade that changes any of them fails here (issue 21).

If a test here fails after an upgrade: read `sidecar/pii/internals.py`, re-check each
differing detail against the code that uses it (its `used_by`), run the equivalence
tests, then record the new versions and fingerprints (`python -m sidecar.pii.internals`).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.pii import internals

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("presidio_analyzer", "presidio_anonymizer", "phonenumbers", "spacy", "thinc")


def test_installed_versions_are_the_ones_the_fast_paths_were_checked_against() -> None:
    assert internals.installed_versions() == internals.WRITTEN_FOR


def test_the_click_name_spacy_imports_is_still_there() -> None:
    """spaCy 3.8.7, held there for speed (pyproject.toml), imports
    `click.parser.split_arg_string` when `import spacy` loads its CLI; click deprecates
    it for removal in 9.0, where `import spacy` would fail in every process. The warning
    is filtered in pytest's settings, so this is the test that says so first (outside
    trial: a click whose `click.parser` lacks the name makes `import spacy` raise)."""
    import warnings

    import click.parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert callable(getattr(click.parser, "split_arg_string", None))


@pytest.mark.parametrize("detail", internals.PRIVATE_DETAILS,
                         ids=lambda d: f"{d.module}.{d.qualname}")
def test_every_private_detail_is_unchanged(detail: internals.Detail) -> None:
    assert internals.fingerprint(detail) == detail.fingerprint, (
        f"{detail.module}.{detail.qualname} changed: re-check {detail.used_by}")


def test_the_shapes_hold_and_check_passes() -> None:
    assert internals.shape_problems() == []
    internals.check.cache_clear()
    internals.check()


def test_a_changed_signature_refuses_to_start_naming_the_detail(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What an upgrade that renamed a parameter would do at run time: a ConfigError at
    stage load, naming the detail and its user, never a failure on a request."""
    changed = dataclasses.replace(internals.PRIVATE_DETAILS[1], params=("self", "position"))
    monkeypatch.setattr(internals, "PRIVATE_DETAILS",
                        (changed, *internals.PRIVATE_DETAILS[2:]))
    internals.check.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"PhoneNumberMatcher\._find .*bounded_matcher"):
            internals.check()
    finally:
        internals.check.cache_clear()


def test_a_vanished_detail_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(internals.PRIVATE_DETAILS[5], qualname="_NO_SUCH_PATTERN")
    monkeypatch.setattr(internals, "PRIVATE_DETAILS", (gone,))
    assert any("_NO_SUCH_PATTERN is gone" in p for p in internals.shape_problems())


def _private_library_names(path: Path) -> list[str]:
    """`from <library>... import _name` and `<library module>._name` in a source file."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in LIBRARIES:
            found += [f"{node.module}.{alias.name}" for alias in node.names
                      if alias.name.startswith("_")]
    return found


def test_no_module_but_internals_imports_a_private_library_name() -> None:
    offenders = {str(path.relative_to(ROOT)): names
                 for path in sorted((ROOT / "sidecar").rglob("*.py"))
                 if path.name != "internals.py"
                 for names in [_private_library_names(path)] if names}
    assert offenders == {}


def test_every_overridden_private_method_is_listed() -> None:
    """A subclass of a library class that defines a `_method` the library also defines
    overrides a private detail: it must be in PRIVATE_DETAILS."""
    from sidecar.pii import nlp, recognizers

    listed = {detail.qualname.split(".")[-1] for detail in internals.PRIVATE_DETAILS}
    classes = [recognizers.FastPhoneRecognizer, recognizers.BisectContextEnhancer,
               nlp.LeanSpacyEngine, recognizers.bounded_matcher()]
    missing = []
    for cls in classes:
        library_bases = [base for base in cls.__mro__[1:]
                         if base.__module__.split(".")[0] in LIBRARIES]
        for name in vars(cls):
            if name.startswith("_") and not name.startswith("__") and name != "_abc_impl" and \
                    any(name in vars(base) for base in library_bases) and name not in listed:
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []


def test_a_changed_recognizer_name_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """precision.py reads Presidio's recognizer name under a key it writes out (so that
    compiling imports no Presidio): a Presidio that renames the key refuses to start."""
    from presidio_analyzer import RecognizerResult

    monkeypatch.setattr(RecognizerResult, "RECOGNIZER_NAME_KEY", "recognizer")
    assert any("RECOGNIZER_NAME_KEY is now 'recognizer'" in p
               for p in internals.shape_problems())


def test_the_timeout_warnings_are_the_ones_presidio_logs() -> None:
    """PatternTimeouts recognises Presidio's skipped patterns by their warning's text;
    a reworded warning would make a timeout a silent miss again."""
    import inspect

    sources = [inspect.getsource(internals._resolve(detail))
               for detail in internals.PRIVATE_DETAILS
               if detail.used_by.startswith("PatternTimeouts")]
    assert len(sources) == 3
    assert all(any(f'"{warning}"' in source for warning in internals.TIMEOUT_WARNINGS)
               for source in sources)
    assert all(any(f'"{warning}"' in source for source in sources)
               for warning in internals.TIMEOUT_WARNINGS)


def test_presidio_warnings_stay_out_of_the_logs_and_timeouts_are_still_counted(
        tmp_path: Path) -> None:
    """As a worker runs: logs configured first (Presidio shows errors only), then the PII
    stage; a pattern skipped on a timeout fails the request, and no warning is printed."""
    import subprocess
    import sys

    from tests.conftest import REPO, TEST_POLICIES

    script = f"""
import logging
from sidecar import logs
logs.configure("INFO")
from presidio_analyzer.predefined_recognizers import EmailRecognizer
from sidecar.pipeline import Pipeline
from sidecar.types import Inspection
from tests.conftest import make_settings
from pathlib import Path

def timing_out(self, pattern_text):
    raise TimeoutError("slow")

EmailRecognizer.validate_result = timing_out
pipeline = Pipeline.from_settings(make_settings(Path({str(tmp_path)!r}),
                                                policies=Path({str(TEST_POLICIES)!r})))
verdict = pipeline.run(Inspection.of_text("write to ana@example.com", tenant="fast-x"))
print("RULES", [v.rule_id for v in verdict.violations], verdict.decision.name)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RULES ['error.pii']" in done.stdout
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert not [entry for entry in logged if entry["logger"].startswith("presidio")], logged
    failed = [entry for entry in logged if entry["msg"] == "stage failed"]
    assert [entry["error_type"] for entry in failed] == ["PatternTimedOut"]
    assert "Traceback" not in done.stderr
