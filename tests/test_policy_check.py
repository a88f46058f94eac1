"""`guardrail policy check` on good and broken policy directories: file, line, field, reason."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.cli import main
from tests.conftest import REPO, TEST_POLICIES

DEFAULT = "name: default\npii:\n  entities:\n    EMAIL_ADDRESS: {action: replace}\n"


def check(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["policy", "check", str(directory)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


@pytest.mark.parametrize("directory", [REPO / "policies", TEST_POLICIES])
def test_shipped_policies_are_valid(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(directory, capsys)
    assert (code, err) == (0, "")
    assert "default (default)" in out


BROKEN = {
    "bad yaml": ("pii:\n  entities: [unclosed\n", "bad.yaml:", "invalid YAML"),
    "unknown field": ("name: bad\nmatch: {tenants: [x]}\npii:\n  entites: {}\n",
                      "bad.yaml:4: pii.entites: unknown field", None),
    "bad regex": ("name: bad\nmatch: {tenants: [x]}\npii:\n  entities:\n"
                  "    X_ID: {action: replace}\n  recognizers:\n    - entity: X_ID\n"
                  "      patterns: ['(?<=id)\\d+']\n",
                  "bad.yaml:8: pii.recognizers[0].patterns:", "not a valid RE2 pattern"),
    "unknown entity": ("name: bad\nmatch: {tenants: [x]}\npii:\n  entities:\n"
                       "    EMAIL_ADRESS: {action: replace}\n",
                       "bad.yaml:5: pii.entities.EMAIL_ADRESS:", "unknown entity type"),
    "unknown action": ("name: bad\nmatch: {tenants: [x]}\npii:\n  entities:\n"
                       "    EMAIL_ADDRESS: {action: smash}\n",
                       "bad.yaml:5: pii.entities.EMAIL_ADDRESS.action:",
                       "Input should be 'replace'"),  # the allowed values, never the file's
    "duplicate key": ("name: bad\nmatch: {tenants: [x]}\npii:\n  entities:\n"
                      "    EMAIL_ADDRESS: {action: block}\n    EMAIL_ADDRESS: {action: allow}\n",
                      "bad.yaml:6: pii.entities.EMAIL_ADDRESS:", "appears twice"),
    "option for another action": ("name: bad\nmatch: {tenants: [x]}\npii:\n  entities:\n"
                                  "    EMAIL_ADDRESS: {action: block, keep_last: 2}\n",
                                  "bad.yaml:5:", "only applies to action 'mask'"),
    "unknown mode": ("name: bad\nmatch: {tenants: [x]}\nmode: audit\n",
                     "bad.yaml:3: mode:", "'shadow'"),
    "not a mapping": ("- a\n- b\n", "bad.yaml:1:", "must be a mapping"),
    "content pattern not RE2": ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
                                "    - {id: r, category: c, action: block,\n"
                                "       patterns: ['(a)\\1']}\n",
                                "bad.yaml:6: content.rules[0].patterns:",
                                "not a valid RE2 pattern"),
    "content word with a space": ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
                                  "    - {id: r, category: c, action: block, words: ['a b']}\n",
                                  "bad.yaml:5: content.rules[0].words:", "put it under 'phrases'"),
    "content rule without category": ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
                                      "    - {id: r, action: block, words: [x]}\n",
                                      "bad.yaml:5: content.rules[0]:", "'category' is required"),
    "content rule matching nothing": ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
                                      "    - {id: r, category: c, action: flag}\n",
                                      "bad.yaml:5: content.rules[0]:", "at least one of"),
    "content unknown builtin": ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
                                "    - {id: r, action: block, builtin: malware}\n",
                                "bad.yaml:5: content.rules[0].builtin:", "'secrets'"),
    "content duplicate rule id": ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
                                  "    - {id: r, category: c, action: flag, words: [x]}\n"
                                  "    - {id: r, category: c, action: flag, words: [y]}\n",
                                  "bad.yaml:4: content.rules:",
                                  "rules[1].id: 'r' is used by another rule"),
    "content invisible-only word": ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
                                    "    - {id: r, category: c, action: flag,\n"
                                    "       words: [\"\\u200b\\u200d\"]}\n",
                                    "content.rules[0].words[0]:", "nothing is left"),
    "recognizer without a rule": ("name: bad\nmatch: {tenants: [x]}\npii:\n  recognizers:\n"
                                  "    - {entity: X_ID, patterns: ['X\\d+']}\n",
                                  "pii.recognizers[0].entity", "no rule for it"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_policy_is_reported_precisely(case: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    text, location, reason = BROKEN[case]
    write(tmp_path, {"default.yaml": DEFAULT, "bad.yaml": text})
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert location in err
    if reason:
        assert reason in err
    assert "Traceback" not in err


def test_every_issue_in_every_file_is_reported(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {
        "default.yaml": DEFAULT,
        "a.yaml": ("name: a\nmatch: {tenants: [a]}\ncolour: red\n"
                   "pii: {entities: {X: {action: no}}}\n"),
        "b.yaml": "name: b\nmatch: {tenants: [b]}\nmode: fast\n",
    })
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert "a.yaml:3: colour: unknown field" in err
    assert "a.yaml:4: pii.entities.X.action" in err
    assert "b.yaml:3: mode" in err


@pytest.mark.parametrize(("files", "reason"), [
    ({"a.yaml": "name: a\nmatch: {tenants: [a]}\n"}, "no default policy"),
    ({"default.yaml": DEFAULT, "other.yaml": DEFAULT.replace("default", "other")},
     "a second default policy"),
    ({"default.yaml": DEFAULT, "a.yaml": "name: default\nmatch: {tenants: [a]}\n"},
     "also used by"),
    ({"default.yaml": DEFAULT, "a.yaml": "name: a\nmatch: {tenants: [t]}\n",
      "b.yaml": "name: b\nmatch: {tenants: [t]}\n"}, "ambiguous"),
    ({}, "no policy files"),
])
def test_rules_about_the_whole_set(files: dict[str, str], reason: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, files)
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert reason in err


def test_world_writable_policy_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT})
    os.chmod(tmp_path / "default.yaml", 0o666)
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert "world-writable" in err


def test_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(tmp_path / "nope", capsys)
    assert code == 1
    assert "does not exist" in err


def test_revision_ignores_formatting_but_not_content(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a", {"default.yaml": DEFAULT})
    write(tmp_path / "b", {"default.yaml": "# comment\n" + DEFAULT.replace(": ", ":   ")})
    write(tmp_path / "c", {"default.yaml": DEFAULT.replace("replace", "redact")})
    revisions = []
    for name in "abc":
        code, out, _ = check(tmp_path / name, capsys)
        assert code == 0
        revisions.append(out.split("revision ")[1].strip())
    assert revisions[0] == revisions[1] != revisions[2]


BASE = """name: base
abstract: true
on_error: allow
content:
  rules:
    - {id: secrets, action: block, builtin: secrets}
pii:
  min_score: 0.5
  entities:
    EMAIL_ADDRESS: {action: replace}
    PERSON: {action: replace}
"""


def test_extends_inherits_and_overrides_and_abstract_bases_are_not_served(
        tmp_path: Path) -> None:
    from sidecar.policy.loader import load_directory

    write(tmp_path, {
        "base.yaml": BASE,
        "default.yaml": "name: default\nextends: base\n",
        "team.yaml": ("name: team\nextends: default\nmatch: {tenants: [team]}\n"
                      "pii:\n  entities:\n    PERSON: {action: mask}\n"),
    })
    loaded = {p.policy.name: p.policy for p in load_directory(tmp_path)}
    assert set(loaded) == {"default", "team"}  # the abstract base is not served
    team = loaded["team"]
    assert team.on_error == "allow" and team.pii.min_score == 0.5
    assert team.pii.entities["PERSON"].action == "mask"  # overridden
    assert team.pii.entities["EMAIL_ADDRESS"].action == "replace"  # merged from the base
    assert [r.id for r in team.content.rules] == ["secrets"]
    assert loaded["default"].match is None  # match is never inherited


@pytest.mark.parametrize(("files", "expected"), [
    ({"a.yaml": "name: a\nextends: b\n", "b.yaml": "name: b\nextends: a\nabstract: true\n"},
     "extends cycle"),
    ({"a.yaml": "name: a\nextends: a\n"}, "extends cycle: a → a"),
    ({"a.yaml": "name: a\nextends: nowhere\n"}, "a.yaml:2: extends: no policy named 'nowhere'"),
])
def test_extends_cycles_and_missing_bases_are_load_errors(
        tmp_path: Path, files: dict[str, str], expected: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(write(tmp_path, files), capsys)
    assert code == 1
    assert expected in err


def test_policy_test_passes_the_shipped_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(REPO / "policies")]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out


def test_policy_test_fails_with_a_readable_diff_on_a_wrong_expectation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {
        "default.yaml": DEFAULT,
        "default.tests.yaml": (
            "tests:\n"
            "  - name: right\n    text: mail jane@example.com\n"
            "    expect: {decision: MODIFY, text: 'mail <EMAIL_ADDRESS>'}\n"
            "  - name: wrong\n    text: mail jane@example.com\n"
            "    expect:\n      decision: ALLOW\n      text: 'mail jane@example.com'\n"
            "      findings: [{entity_type: PERSON}]\n"),
    })
    assert main(["policy", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL default.tests.yaml: wrong" in out
    assert "-ALLOW" in out and "+MODIFY" in out
    assert "-mail jane@example.com" in out and "+mail <EMAIL_ADDRESS>" in out
    assert "findings (missing entries)" in out
    assert "1 passed, 1 failed" in out


def test_policy_test_reports_a_malformed_case_file(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT,
                     "x.tests.yaml": "tests:\n  - name: a\n    txet: hi\n    expect: {}\n"})
    assert main(["policy", "test", str(tmp_path)]) == 1
    assert "x.tests.yaml:3: tests[0].txet: unknown field" in capsys.readouterr().err


# -- round 12: what a security team writes must never quietly do less than it says ----

RULE = ("name: bad\nmatch: {tenants: [x]}\ncontent:\n  rules:\n"
        "    - id: r\n      category: c\n      action: block\n      patterns: [%s]\n")
DEAD_PATTERNS = {  # patterns run on the lower-cased, accent-free view: these never fire
    "upper-case literal": r"'SECRET-\d+'",
    "upper-case in a class": r"'id-[A-Z]{3}'",
    "accented literal": r"'\bcafé\b'",
    "hex escape of a capital": r"'\x41bc'",
    "octal escape of a capital": r"'\101bc'",
    "quoted capital": r"'\QAB\E'",
    "empty": "''",
    "accent-free view of a Greek word": "'λόγος'",
}
LIVE_PATTERNS = [r"secret-\d+", r"\D\S\W\B\A\z", r"\p{Lu}?x", r"\pL+y", r"(?i)SECRET-\d+",
                 r"[A-Za-z]+-\d", r"[^A-Z]+q", r"(?P<Name>abc)", r"(?i:CAFE)", r"x{2,3}",
                 r"[\p{Greek}]k", "日本語ж?", r"[[:upper:][:lower:]]z", r"\x61b"]


@pytest.mark.parametrize("case", sorted(DEAD_PATTERNS))
def test_a_content_pattern_that_can_never_match_is_refused(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT, "bad.yaml": RULE % DEAD_PATTERNS[case]})
    code, _, err = check(tmp_path, capsys)
    assert code == 1, err
    assert "bad.yaml:8: content.rules[0].patterns:" in err
    assert "patterns[0]" in err
    assert "Traceback" not in err
    assert "SECRET" not in err and "café" not in err  # never the file's content


@pytest.mark.parametrize("pattern", LIVE_PATTERNS)
def test_a_content_pattern_the_view_can_match_is_accepted(
        pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quoted = "'" + pattern.replace("'", "''") + "'"
    write(tmp_path, {"default.yaml": DEFAULT, "ok.yaml": RULE.replace("bad", "ok") % quoted})
    code, _, err = check(tmp_path, capsys)
    assert (code, err) == (0, "")


@pytest.mark.parametrize("match", ["{}", "{tenants: ['*']}", "{tenants: ['*'], apps: ['*']}",
                                   "{apps: ['**']}"])
def test_a_match_that_covers_all_traffic_is_a_second_default(
        match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT, "all.yaml": f"name: all\nmatch: {match}\n"})
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert "all.yaml:2: match:" in err
    assert "every tenant and every app" in err


def test_a_match_on_every_tenant_of_one_app_is_fine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT,
                     "chat.yaml": "name: chat\nmatch: {tenants: ['*'], apps: [chat]}\n"})
    code, _, err = check(tmp_path, capsys)
    assert (code, err) == (0, "")


@pytest.mark.parametrize(("field", "value"), [
    ("pii.min_score", "true"), ("pii.min_score", '"1"'), ("pii.min_score", "'0.5'"),
    ("entity min_score", "true"), ("entity min_score", '"0.9"'),
    ("recognizer score", "true"), ("keep_last", "true"), ("keep_last", '"2"'),
    ("ttl_seconds", '"60"'), ("retention", "true"), ("max_depth", '"5"'),
])
def test_numbers_must_be_numbers(field: str, value: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    texts = {
        "pii.min_score": f"pii:\n  min_score: {value}\n",
        "entity min_score": ("pii:\n  entities:\n"
                             f"    PERSON: {{action: block, min_score: {value}}}\n"),
        "recognizer score": ("pii:\n  entities: {X_ID: {action: block}}\n  recognizers:\n"
                             f"    - {{entity: X_ID, patterns: ['x\\d+'], score: {value}}}\n"),
        "keep_last": f"pii:\n  entities:\n    PERSON: {{action: mask, keep_last: {value}}}\n",
        "ttl_seconds": f"pii:\n  pseudonyms: {{ttl_seconds: {value}}}\n",
        "retention": f"audit:\n  retention_days: {{allow: {value}}}\n",
        "max_depth": f"structured_output:\n  max_depth: {value}\n",
    }
    write(tmp_path, {"default.yaml": DEFAULT,
                     "bad.yaml": "name: bad\nmatch: {tenants: [x]}\n" + texts[field]})
    code, _, err = check(tmp_path, capsys)
    assert code == 1, err
    assert "bad.yaml:" in err and "a number" in err
    assert "Traceback" not in err


def test_numbers_written_as_numbers_still_load(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT, "ok.yaml": (
        "name: ok\nmatch: {tenants: [x]}\npii:\n  min_score: 1\n  entities:\n"
        "    PERSON: {action: mask, keep_last: 2, min_score: 0.85}\n")})
    code, _, err = check(tmp_path, capsys)
    assert (code, err) == (0, "")


def test_a_policy_file_with_an_upper_case_suffix_is_loaded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT,
                     "loud.YAML": "name: loud\nmatch: {tenants: [loud]}\n",
                     "also.Yml": "name: also\nmatch: {tenants: [also]}\nmode: fast\n"})
    code, out, err = check(tmp_path, capsys)
    assert code == 1  # also.Yml is read, so its error is seen
    assert "also.Yml:3: mode" in err
    (tmp_path / "also.Yml").unlink()
    code, out, err = check(tmp_path, capsys)
    assert (code, err) == (0, "")
    assert "loud" in out


def test_a_long_unknown_key_is_not_echoed(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk_live_51h8xyzAbCdEfGh1234567890qwertyuiop"
    write(tmp_path, {"default.yaml": DEFAULT,
                     "bad.yaml": f"name: bad\nmatch: {{tenants: [x]}}\n{secret.lower()}: 1\n"})
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert "bad.yaml:3:" in err and "unknown field" in err
    assert secret.lower() not in err
    assert secret.lower()[12:] not in err


@settings(max_examples=40, deadline=None)
@given(word=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=8),
       where=st.integers(0, 8), letter=st.sampled_from("ABCXYZÉÀÇÑÖßé"),
       in_class=st.booleans(), ignore_case=st.booleans())
def test_generated_patterns_with_a_letter_the_view_never_holds(
        word: str, where: int, letter: str, in_class: bool, ignore_case: bool) -> None:
    """Any lower-case pattern with one letter the view folds away (capital, accented,
    ß) inserted, bare or as a one-letter class, is refused; with (?i), a capital ASCII
    letter is fine, since its lower case is in the view."""
    where = min(where, len(word))
    inserted = f"[{letter}]" if in_class else letter
    pattern = ("(?i)" if ignore_case else "") + word[:where] + inserted + word[where:]
    with tempfile.TemporaryDirectory() as folder:
        directory = write(Path(folder), {"default.yaml": DEFAULT,
                                         "bad.yaml": RULE % ("'" + pattern + "'")})
        code = main(["policy", "check", str(directory)])
    assert code == (0 if ignore_case and letter.isascii() else 1), ascii(pattern)


# -- round 12, second trial: a dead pattern in another script gets the right advice -------

# Each: a pattern the view never holds, the 1-based character the check names, and words
# of the reason the error must give. Written as escapes: the file must not look like
# Latin to a reader (ruff RUF001), and the errors must quote none of it.
OTHER_SCRIPTS = {
    "Cyrillic look-alikes": ("\u0431\u043e\u043c\u0431\u0430", 1, "looks like"),
    "Greek final sigma": ("\u03bb\u03bf\u03b3\u03bf\u03c2", 2, "looks like"),
    "Hangul syllables": ("\ud3ed\ud0c4", 1, "jamo"),
    "Arabic alef with hamza": ("\u0623\u0633\u0644\u062d\u0629", 1, "decomposed"),
    "a Hangul range": ("[\uac00-\ud7a3]+", 1, "jamo"),
    "upper-case Cyrillic": ("x\u0416", 2, "upper-case"),
}


@pytest.mark.parametrize("case", sorted(OTHER_SCRIPTS))
def test_a_dead_pattern_in_another_script_says_why(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pattern, position, reason = OTHER_SCRIPTS[case]
    write(tmp_path, {"default.yaml": DEFAULT, "bad.yaml": RULE % ("'" + pattern + "'")})
    code, _, err = check(tmp_path, capsys)
    assert code == 1, err
    assert "bad.yaml:8: content.rules[0].patterns: patterns[0]: can never match" in err
    assert f"character {position} is" in err
    assert reason in err
    if reason != "upper-case":  # lower case or (?i) cannot help these
        assert "(?i)" not in err and "without accents" not in err
        assert "words:" in err and "sidecar.content.normalize.clean" in err
    assert "Traceback" not in err
    assert not any(char in err for char in pattern if not char.isascii())


@pytest.mark.parametrize(("pattern", "reason"), [
    ("SECRET", "upper-case"), ("caf\u00e9", "accent"), ("[A-Z]", "upper-case")])
def test_a_dead_latin_pattern_keeps_its_advice(
        pattern: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT, "bad.yaml": RULE % ("'" + pattern + "'")})
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert reason in err and "lower case" in err


@pytest.mark.parametrize("pattern", [
    "\u0436\u0449\u0444",         # Cyrillic letters the view keeps as they are
    "[\u1100-\u11ff]+",           # Hangul jamo: what the view holds
    "\u0642\u0646\u0628\u0644\u0629",  # Arabic without hamza
    "[\u4e00-\u9fff]+"])          # CJK ideographs
def test_a_pattern_in_another_script_the_view_holds_is_accepted(
        pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"default.yaml": DEFAULT, "ok.yaml": RULE.replace("bad", "ok")
                     % ("'" + pattern + "'")})
    code, _, err = check(tmp_path, capsys)
    assert (code, err) == (0, "")


WORDS_IN_SCRIPTS = ("name: default\ncontent:\n  rules:\n"
                    "    - id: w\n      category: c\n      action: block\n"
                    "      words: ['\u0431\u043e\u043c\u0431\u0430', '\ud3ed\ud0c4', "
                    "'\u0623\u0633\u0644\u062d\u0629', '\u03b2\u03cc\u03bc\u03b2\u03b1']\n")


@pytest.mark.parametrize("text", [
    "\u043a\u0430\u043a \u0441\u0434\u0435\u043b\u0430\u0442\u044c "
    "\u0411\u041e\u041c\u0411\u0423 \u0431\u043e\u043c\u0431\u0430",  # Cyrillic, any case
    "\ud3ed\ud0c4 \uc81c\uc870 \ubc29\ubc95",                          # Hangul
    "\u0627\u0633\u0644\u062d\u0629",                                  # Arabic, no hamza
    "\u03b7 \u03b2\u03cc\u03bc\u03b2\u03b1"])                          # Greek
def test_words_rules_match_the_scripts_patterns_cannot_name(
        text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the error advises for them works: `words:` entries are folded as the text is,
    through `guardrail inspect`."""
    write(tmp_path / "p", {"default.yaml": WORDS_IN_SCRIPTS})
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["inspect", "--policies", str(tmp_path / "p"),
                 "--data-dir", str(tmp_path / "d")]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "BLOCK"
