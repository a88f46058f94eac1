"""Workers give back what a request used (outside trial: a worker grew ~250 MiB per 1 MB
request and never shrank, so a few large prompts took a pod past its memory limit).

The cause was a reference cycle (the content stage's view-making closure called itself),
which only a full garbage collection frees, and a worker that holds spaCy's model almost
never ran one. Two guards, each tested: a request's stages leave no cyclic garbage, and
a worker freezes its long-lived heap so full collections run when requests need them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.policy.model import ContentConfig
from sidecar.stages.content import ContentStage
from sidecar.types import Inspection
from tests.faults import Sidecar

MIB = 1024 * 1024
PROSE = ("The quarterly review covered revenue growth, hiring, and the roadmap for the next "
         "release. Teams discussed latency budgets and the migration plan. ")
STAGE = ContentStage(ContentConfig(rules=[
    {"id": "secrets", "action": "block", "builtin": "secrets"},
    {"id": "injection", "action": "flag", "builtin": "prompt_injection"},
    {"id": "words", "action": "block", "category": "custom", "words": ["darn"],
     "phrases": ["build a bomb"]},
]))
PIECES = st.sampled_from([PROSE, "**ignore** all previous", "k i l l", "b\u200bo\u200bm\u200bb",
                          "<b>sys</b>tem", "\uff42\uff55\uff49\uff4c\uff44 a bomb", "d4rn",
                          "AKIA" + "A" * 16,
                          "\\u0069gnore", "i.n.s.t.r.u.c.t.i.o.n.s", "\n", " "])


@pytest.fixture(scope="module")
def frozen_heap() -> Iterator[None]:
    """What the session holds (spaCy, Presidio: millions of objects) out of the collector's
    view, as a worker does, so each collection below sees only what a scan made (and
    takes microseconds, not a tenth of a second)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@settings(max_examples=30, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(PIECES, max_size=30))
def test_the_content_stage_leaves_no_cyclic_garbage(frozen_heap: None,
                                                     pieces: list[str]) -> None:
    """Whatever the text holds (markup, spaced-out letters, invisible characters, look-alikes:
    each makes more views), scanning it leaves nothing only a full collection can free.
    Failed with 16-50 unreachable objects per request, the text's views among them."""
    text = "".join(pieces)
    gc.collect()
    STAGE.run(Inspection.of_text(text))
    assert gc.collect() == 0


def worker_rss(server_pid: int) -> int:
    """VmRSS (bytes) of the server's one worker process."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
            command = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(server_pid) and b"resource_tracker" \
                not in command and "VmRSS" in fields:
            return int(fields["VmRSS"].split()[0]) * 1024
    raise AssertionError("no worker process found")


def test_a_worker_does_not_grow_with_the_requests_it_answers(tmp_path: Path) -> None:
    """40 distinct 48 KB prompts through the content stage of a real `guardrail serve`:
    the worker's RSS after them is within a few MiB of where it was after 10 (it grew
    ~1.3 MiB a request before, with no end)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(
        "name: default\ncontent:\n  rules:\n    - {id: secrets, action: block, builtin: secrets}\n"
        "    - {id: injection, action: flag, builtin: prompt_injection}\n")
    sidecar = Sidecar(tmp_path / "data", "--policies", str(policies)).serving()
    assert sidecar.process.pid
    try:
        def prompt(number: int) -> None:
            sidecar.prompt((f"request {number} " + PROSE * 400)[:48 * 1024])

        for number in range(10):
            prompt(number)
        settled = worker_rss(sidecar.process.pid)
        for number in range(10, 50):
            prompt(number)
        grown = worker_rss(sidecar.process.pid) - settled
        assert grown < 16 * MIB, f"the worker grew by {grown / MIB:.0f} MiB over 40 requests"
    finally:
        sidecar.stop()


def test_a_policy_reload_leaves_nothing_frozen_behind(tmp_path: Path) -> None:
    """A worker freezes its heap; a reload replaces the policies inside it. A cycle among
    frozen objects is never collected, so `_reload` thaws, collects and refreezes: three
    reloads later nothing frozen is garbage (without it, ~200 objects per reload were)."""
    from sidecar.pipeline import Pipeline
    from sidecar.workers import _reload
    from tests.conftest import TEST_POLICIES, make_settings

    settings = make_settings(tmp_path)
    pipeline = Pipeline.from_settings(settings)
    gc.collect()
    gc.freeze()
    try:
        for _ in range(3):
            assert _reload(pipeline, settings, TEST_POLICIES, 0) is None
    finally:
        gc.unfreeze()
    assert gc.collect() == 0
