"""Streamed completions: release text as early as it is safe, in linear total work.

A model streams its completion in small pieces. Showing each piece as it comes would
let an entity or a blocked phrase through whenever it is split across pieces;
re-inspecting the whole prefix on every piece would cost quadratic time. Instead:

    released            cut                received
    ────────┬────────────┼──────────────────┤
    context │ released now│ held back        │
            └──────── one window ───────────┘

- Lengths are measured as the content rules see the text (`normalize.weigh`, the
  length of the clean view): invisible characters and combining marks count for
  nothing and a run of whitespace for one, so padding a word with zero-width or space
  characters cannot stretch it past the hold-back.
- Text accumulates until `holdback + min_release` characters are unreleased (or the
  stream ends); then one window is inspected: that much unreleased text (never more, so
  windows fall where the text puts them, not where the network cut it) plus `context`
  characters already released (so context words and NER see what came before).
- The window's findings and edits decide a cut: `holdback` characters of its clean
  view before its end, moved back to a whitespace (a token without spaces, like an
  email or a URL, is never cut) and before any finding, violation or edit that crosses
  it. Everything before the cut is released, redacted/restored; the rest waits for
  more text. A match no longer than `holdback` characters of the clean view therefore
  never straddles a cut: it either lies wholly in a window's held-back part or was seen
  whole by the window that moved the cut before it. Streamed and buffered inspection
  agree on every such match, whatever the chunking (tests/redteam/test_evasion.py).
- Each character is inspected about (context + holdback + min_release) / min_release
  times (1.3 with the defaults): constant, so the work is linear in the length. A step
  that can release nothing (a span still open at the window's end) waits for the
  unreleased text to double before the next, so that stays linear too.
- At the end the rest is inspected and released; a BLOCK anywhere ends the stream.

Pure asyncio and domain types: the servicer feeds chunks in and turns releases into
StreamVerdicts; `analyze` is the runner plus the pseudonym vault.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sidecar.content.normalize import clean, has_markup, weigh
from sidecar.edits import apply_resolved
from sidecar.errors import RequestTooLarge
from sidecar.types import Decision, Edit, Finding, Inspection, Message, Verdict, Violation

Spanned = TypeVar("Spanned", Finding, Violation)


# The most a policy's longest match may raise the hold-back to (characters).
MAX_HOLDBACK = 65536


@dataclass(frozen=True)
class StreamLimits:
    holdback: int = 128
    # ~130 tokens per release; the work is (context + holdback + min_release) /
    # min_release = 1.3x a buffered inspection (bench/conversations.py measures it).
    min_release: int = 512
    context: int = 32
    max_bytes: int = 1024 * 1024
    # A token this long with no whitespace is cut anyway (at the hold-back point).
    max_token: int = 1024


@dataclass
class Release:
    """What one step releases; offsets are in the whole completion as sent."""

    text: str
    findings: list[Finding]
    violations: list[Violation]
    restored: list[str]
    received: int
    released: int
    blocked: bool = False


@dataclass
class _Totals:
    findings: list[Finding] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    restored: dict[str, None] = field(default_factory=dict)
    decision: Decision = Decision.ALLOW
    policy: str = ""
    revision: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    tags_rank: int = 1 << 30
    would_block: bool = False
    would_modify: bool = False


class CompletionStream:
    """One streamed completion on its way through the pipeline, window by window."""

    def __init__(self, template: Inspection,
                 analyze: Callable[[Inspection], Awaitable[Verdict]],
                 limits: StreamLimits,
                 rule_rank: Callable[[str, str], int] = lambda policy, rule: 0,
                 longest_match: Callable[[str, str], int] = lambda policy, revision: 0) -> None:
        self.template = template
        self.analyze = analyze
        self.limits = limits
        # Orders residency rules (first match wins): a stream keeps the tags of the
        # earliest rule any window matched, which is the rule the whole text matches.
        self.rule_rank = rule_rank
        # The longest match the policy's content rules can make (policy, revision →
        # characters of the clean view): the hold-back grows to it once the first window
        # has said which policy applies, so a long phrase or bounded pattern is never cut.
        self.longest_match = longest_match
        self.holdback = limits.holdback
        self._received: list[str] = []  # every chunk, for the audit record
        self._pending = ""  # text[released:received]
        self._pending_weight = 0  # weigh(self._pending): its length as rules see it
        self._received_space = False  # whether the received text ends in whitespace
        self._released_space = False  # whether the released text ends in whitespace
        self._context = ""  # the last `context` characters released (as sent)
        self._output: list[str] = []  # what was released, as shown
        self.received = 0
        self.released = 0
        self._bytes = 0
        self.windows = 0
        self.analysed_chars = 0
        self.blocked = False
        self.totals = _Totals()
        self._wait_until = 0
        self._spanless: set[tuple[str, str]] = set()  # (rule, message) reported (_first)

    # -- input ---------------------------------------------------------------------------

    def add(self, text: str) -> None:
        if not text:
            return
        self._bytes += len(text.encode("utf-8", "surrogatepass"))
        if self._bytes > self.limits.max_bytes:
            raise RequestTooLarge(f"text: the streamed completion exceeds the limit of "
                                  f"{self.limits.max_bytes} bytes")
        self._received.append(text)
        self._pending += text
        self.received += len(text)
        _, weight, self._received_space = weigh(text, self._received_space)
        self._pending_weight += weight

    def ready(self) -> bool:
        """Enough unreleased text to release some after holding back (and, after a step
        that could release nothing, enough new text to make another one worth it)."""
        return self._pending_weight >= self._window_chars()

    def _window_chars(self) -> int:
        return max(self.holdback + self.limits.min_release, self._wait_until)

    # -- steps ---------------------------------------------------------------------------

    async def advance(self, final: bool) -> list[Release]:
        """Every step the text received so far allows (and the last one, when final).

        A window never holds more than `_window_chars` of unreleased text, however much
        has arrived: where windows fall, and so what NER sees in each, depends on the
        text alone, not on how the network grouped its chunks. The steps come back as
        one release; a block comes back on its own, after the release of what was
        shown before it. No step yet: [].
        """
        releases: list[Release] = []
        while not self.blocked and self.ready():
            releases.append(await self.step(final=False))
        if final and not self.blocked:
            releases.append(await self.step(final=True))
        ending = releases.pop() if releases and releases[-1].blocked else None
        shown = [_merged(releases)] if releases else []
        return shown + ([ending] if ending is not None else [])

    async def step(self, final: bool) -> Release:
        """Inspect the window and release what is safe (everything, when final)."""
        context, pending = self._context, self._pending
        later = ""  # arrived text beyond this window (see advance)
        if not final and self._pending_weight >= self._window_chars():
            # Cut even at exactly the window's weight: zero-weight characters (zero-width,
            # combining marks, a second space) that arrived in the same chunk as the one
            # reaching it belong to the next window, as they would have had they come
            # one at a time.
            end, _, _ = weigh(pending, self._released_space, limit=self._window_chars())
            pending, later = pending[:end], pending[end:]
        window = context + pending
        origin = self.released - len(context)  # where the window starts in the stream
        verdict = await self.analyze(dataclasses.replace(
            self.template, messages=(Message("", window),)))
        self.windows += 1
        self.analysed_chars += len(window)
        self._absorb(verdict)
        local = len(context)  # where the unreleased text starts in the window
        if verdict.decision == Decision.BLOCK:
            self.blocked = True
            self.totals.decision = Decision.BLOCK
            findings = [_shift(f, origin) for f in verdict.findings if f.end > local]
            violations = [_shift(v, origin) for v in verdict.violations
                          if (self._first(v) if v.end <= v.start else v.end > local)]
            self.totals.findings.extend(findings)
            self.totals.violations.extend(violations)
            return Release("", findings, violations, [], self.received, self.released, True)
        edits = verdict.edits.get(0, ())
        cut = len(window) if final else self._cut(window, local, verdict, edits)
        if cut <= local:  # a long token or a span across the cut: wait for more
            # Twice as much before the next try: a span that stays open (a PEM header
            # without its END, a long token) is re-read in windows that double, so the
            # work stays linear in the stream's length instead of growing with its square.
            weight = weigh(pending, self._released_space)[1]
            self._wait_until = max(weight + self.limits.min_release, 2 * weight)
            return Release("", [], [], [], self.received, self.released)
        self._wait_until = 0
        released_edits = [_clip(e, local) for e in edits if e.end > local and e.start < cut]
        text = apply_resolved(window[local:cut], released_edits, offset=local)
        findings = [_shift(f, origin) for f in verdict.findings if local <= f.start < cut
                    or f.start < local < f.end]
        violations = [_shift(v, origin) for v in verdict.violations
                      if (self._first(v) if v.end <= v.start
                          else local <= v.start < cut or v.start < local < v.end)]
        restored = [window[e.start:e.end] for e in released_edits
                    if window[e.start:e.end] in verdict.restored]
        self.totals.findings.extend(findings)
        self.totals.violations.extend(violations)
        self.totals.restored.update(dict.fromkeys(restored))
        if text != window[local:cut]:
            self.totals.decision = Decision.MODIFY
        self._output.append(text)
        self.released += cut - local
        _, weight, self._released_space = weigh(window[local:cut], self._released_space)
        self._pending_weight -= weight
        self._pending = window[cut:] + later
        self._context = window[_word_start(window, max(0, cut - self.limits.context), cut):cut]
        return Release(text, findings, violations, list(dict.fromkeys(restored)),
                       self.received, self.released)

    def _first(self, violation: Violation) -> bool:
        """Whether this stream reports a violation without a span for the first time.

        Such a violation is about a window, not a place in it (a stage that failed under
        `on_error: allow`, the pseudonym vault down, a residency rule in shadow): it is
        reported once, by the first window that has it. Only the final window's were
        reported before, so a stage that failed in a middle window and released its
        text unchanged left no trace in the updates or the audit record."""
        key = (violation.rule_id, violation.message)
        if key in self._spanless:
            return False
        self._spanless.add(key)
        return True

    def _cut(self, window: str, local: int, verdict: Verdict,
             edits: tuple[Edit, ...]) -> int:
        """The latest safe place to stop releasing, in window coordinates."""
        # Measured on the unmarked reading when there is one: it is never longer than the
        # plain one over the same text, so a match of either reading fits the hold-back.
        view = clean(window)
        if has_markup(view):
            view = clean(window, unmark=True)
        held = len(view.text) - self.holdback  # the first held-back view character
        if held <= 0:
            return local
        cut = view.origin[held]
        space = max(window.rfind(" ", local, cut), window.rfind("\n", local, cut),
                    window.rfind("\t", local, cut))
        if space >= local:
            cut = space + 1
        elif held - bisect.bisect_left(view.origin, local) < self.limits.max_token:
            return local  # one long token so far: wait for its end
        spans = [(f.start, f.end) for f in verdict.findings]
        spans += [(v.start, v.end) for v in verdict.violations]  # spanless ones never cross
        spans += [(e.start, e.end) for e in edits]
        moved = True
        while moved:  # moving the cut back may make it cross another span
            moved = False
            for start, end in spans:
                if start < cut < end:
                    cut, moved = start, True
        return cut

    def _absorb(self, verdict: Verdict) -> None:
        totals = self.totals
        totals.policy, totals.revision = verdict.policy, verdict.policy_revision
        self.holdback = max(self.limits.holdback, min(
            MAX_HOLDBACK, self.longest_match(verdict.policy, verdict.policy_revision)))
        totals.would_block |= verdict.would_block
        totals.would_modify |= verdict.would_modify
        rank = self.rule_rank(verdict.policy, verdict.routing_tags.get("residency_rule", ""))
        if verdict.routing_tags and rank < totals.tags_rank:
            totals.tags, totals.tags_rank = dict(verdict.routing_tags), rank

    # -- the stream as one decision ------------------------------------------------------

    def summary(self, shown_chars: int | None = None) -> tuple[Inspection, Verdict]:
        """The whole stream as one inspection and verdict, for its audit record.

        `shown_chars`: how much of the released text (as shown, in characters) reached
        the caller's transport, when that is less than all of it: a stream abandoned in
        the middle of `advance` has released steps that were never handed over (outside
        trial 12: 3,500-14,945 characters recorded as shown, 0 received)."""
        inspection = dataclasses.replace(
            self.template, messages=(Message("", "".join(self._received)),))
        totals = self.totals
        output = "".join(self._output)
        if shown_chars is not None:
            output = output[:shown_chars]
        shown = (Message("", output),)  # what the user saw, even if blocked
        verdict = Verdict(
            decision=totals.decision, messages=shown, chat=False,
            findings=tuple(totals.findings), violations=tuple(totals.violations),
            policy=totals.policy, policy_revision=totals.revision,
            request_id=self.template.request_id, routing_tags=dict(totals.tags),
            would_block=totals.would_block or self.blocked,
            would_modify=totals.would_modify, restored=tuple(totals.restored))
        return inspection, verdict

    @property
    def output(self) -> str:
        return "".join(self._output)


def _word_start(window: str, start: int, cut: int) -> int:
    """Where the next window's context may start: at `start` if a word begins there,
    else at the beginning of that word (looking back at most 64 characters), else just
    after it. A context that began inside a word made its tail read as a whole word
    (`remake` as `make`, `unignore` as `ignore`): streamed and buffered disagreed."""
    if start == 0 or window[start - 1].isspace():
        return start
    low = max(0, start - 64)
    back = max(window.rfind(" ", low, start), window.rfind("\n", low, start),
               window.rfind("\t", low, start))
    if back >= 0:
        return back + 1
    ahead = [i for i in (window.find(" ", start, cut), window.find("\n", start, cut),
                         window.find("\t", start, cut)) if i >= 0]
    return min(ahead) + 1 if ahead else start


def _merged(releases: list[Release]) -> Release:
    last = releases[-1]
    return Release("".join(r.text for r in releases),
                   [f for r in releases for f in r.findings],
                   [v for r in releases for v in r.violations],
                   list(dict.fromkeys(x for r in releases for x in r.restored)),
                   last.received, last.released)


def _shift(item: Spanned, origin: int) -> Spanned:
    if item.end <= item.start and isinstance(item, Violation):
        return item  # not about a span
    return dataclasses.replace(item, start=item.start + origin, end=item.end + origin)


def _clip(edit: Edit, local: int) -> Edit:
    """An edit that began in already released context: replace only what is left."""
    return edit if edit.start >= local else dataclasses.replace(edit, start=local)
