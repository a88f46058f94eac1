"""Blocked-content stage: word and phrase lists, RE2 patterns, builtin detectors.

Runs first. Word and phrase lists of every rule go into one Aho-Corasick automaton
(pyahocorasick), so matching costs time linear in the text whatever the lists' size.
Matching runs on normalised views of the text (sidecar.content.normalize) so that
zero-width characters, homoglyphs, spacing and leetspeak do not evade a rule; every
match is reported, and redacted, at its span in the text the app sent.

Actions: `block` (the request is refused and later stages never run), `redact` (the
matched characters are replaced) and `flag` (reported only).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar import abandon
from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy.model import ContentConfig, ContentRule
from sidecar.types import Edit, Inspection, Prior, StageResult, Violation
from sidecar.wellformed import well_formed

if TYPE_CHECKING:
    from sidecar.content.normalize import View

DEFAULT_REPLACEMENT = "[REDACTED]"
# A text that matches thousands of times gets this many violations and a summary.
MAX_VIOLATIONS_PER_MESSAGE = 1000


@dataclass(frozen=True, slots=True)
class Hit:
    rule: int  # index into the policy's rules
    detector: str  # builtin detector id, or "" for lists and patterns
    start: int
    end: int


def longest_match(config: ContentConfig) -> int:
    """How long, in characters of the clean view, a match of these rules can be.

    Streaming holds back at least this much (sidecar.streaming), so that no match is
    cut in two between releases. Words and phrases count their length; patterns and
    builtin detectors their longest match where the pattern bounds it. An unbounded
    pattern (`a.*b`, `[a-z]{32,}`) adds nothing: its matches longer than the configured
    hold-back may be split when streamed (README, "Streaming completions").
    """
    from sidecar.content.builtins import detectors
    from sidecar.content.normalize import skeleton_of

    longest = 0
    for rule in config.rules:
        for term in (*rule.words, *rule.phrases):
            # An ASCII term's view is never longer than the term: skip the fold.
            longest = max(longest, len(term) if term.isascii() else len(skeleton_of(term)))
        patterns = list(rule.patterns)
        if rule.builtin:
            patterns += [detector.regex.pattern for detector in detectors(rule.builtin)]
        for pattern in patterns:
            longest = max(longest, _widest(pattern) or 0)
    return longest


def _widest(pattern: str) -> int | None:
    """The longest match of a pattern, or None when it is unbounded or not parseable.

    Read with Python's own regex parser (RE2's syntax is close enough for a bound; a
    pattern it cannot parse counts as unbounded).
    """
    import importlib

    parser: Any = importlib.import_module("re._parser")  # stdlib, untyped by typeshed
    try:
        widest = parser.parse(pattern).getwidth()[1]
    except (re.error, OverflowError, RecursionError, ValueError):
        return None
    return None if widest >= parser.MAXREPEAT else int(widest)


def _despaced(words_view: View, regex: Any) -> list[tuple[int, int]]:
    """Matches of a wording pattern across spaced-out letters: on the words view without
    its spaces, kept where the match starts and ends on word boundaries and holds a
    join or a gap (letters that were spaced out, or split by invisible characters)."""
    splits = words_view.joins | words_view.gaps
    if not splits:
        return []
    text = words_view.text
    kept = [index for index, char in enumerate(text) if char != " "]
    spans = []
    for match in regex.finditer(text.replace(" ", "")):
        if match.end() <= match.start():
            continue
        start, end = kept[match.start()], kept[match.end() - 1] + 1
        if (words_view.is_boundary(start) and words_view.is_boundary(end)
                and any(split in splits for split in range(start + 1, end))):
            spans.append(words_view.span(start, end))
    return spans


# Invisible characters that separate words, where they stand between two: control
# characters, the zero-width space, blanks (Braille, Hangul fillers), the Mongolian
# vowel separator. The screen shows `a\x00grenade` as one word, but a model reads two,
# so gluing a listed word to another with one must not hide it. Joiners and the soft
# hyphen stay inside a word (`ass\u00adessment` is one word).
_SEPARATORS = frozenset("\u200b\u2800\u3164\u115f\u1160\uffa0\u180e")


def _separated(view: View, position: int) -> bool:
    """Whether an invisible character that separates words stands at `position`."""
    if position not in view.gaps or not 0 < position < len(view.origin):
        return False
    between = view.source[view.origin[position - 1] + 1:view.origin[position]]
    return any(char in _SEPARATORS or (unicodedata.category(char) == "Cc"
                                       and not char.isspace()) for char in between)


def _view_of(text: str, name: str, views: dict[str, View]) -> View:
    """`views[name]`, made (with the views it is read from) when missing: `clean` views
    from the text, `skeleton` from `clean`, `words` from `skeleton`, each with the same
    suffix. A name ending in `+` is read from the unmarked clean view, one ending in `^`
    from the clean view with loose ends (both: `+^`)."""
    if name in views:
        return views[name]
    abandon.check()  # a view of 1 MB takes ~1-2 s: not for a caller who has gone
    from sidecar.content.normalize import clean, original, skeleton, visible, words

    base = name.rstrip("+^")
    suffix = name[len(base):]
    if base == "original":
        made = original(text)  # a range: no per-character copy
    elif base == "visible":
        made = visible(text)
    elif base == "folded":
        made = clean(text, join=False)
    else:  # clean, then skeleton from it, then words from that
        if "clean" + suffix not in views:
            views["clean" + suffix] = clean(text, unmark="+" in suffix,
                                            loose_ends="^" in suffix)
        made = views["clean" + suffix]
        if base in ("skeleton", "words"):
            if "skeleton" + suffix not in views:
                views["skeleton" + suffix] = skeleton(made)
            made = views["skeleton" + suffix]
        if base == "words":
            made = words(made)
    views[name] = made
    return made


def _add_key(automaton: Any, key: str, spaces: frozenset[int], rule_index: int) -> None:
    """Map `key` to (its length, {the positions of its removed spaces: [rule indices]})."""
    entry = automaton.get(key, None)
    if entry is None:
        automaton.add_word(key, (len(key), {spaces: [rule_index]}))
        return
    rules = entry[1].setdefault(spaces, [])
    if rule_index not in rules:
        rules.append(rule_index)


def _spaceless(key: str) -> tuple[str, frozenset[int]]:
    """`build a bomb` → (`buildabomb`, {5, 6}): the key's letters and digits alone, and
    the positions of those that a space or punctuation preceded."""
    chars: list[str] = []
    gaps: set[int] = set()
    for char in key:
        if char.isalnum():
            chars.append(char)
        elif chars:
            gaps.add(len(chars))
    return "".join(chars), frozenset(gaps)


_NOT_ALNUM = re.compile(r"[\W_]+")


class ContentStage:
    name = "content"
    # Its result for a message depends on that message alone (sidecar.cache).
    per_message = True

    def __init__(self, config: ContentConfig) -> None:
        import ahocorasick

        from sidecar.content.builtins import detectors
        from sidecar.content.normalize import skeleton_of
        from sidecar.regex import compile_re2

        self.rules: tuple[ContentRule, ...] = tuple(config.rules)
        issues: list[PolicyIssue] = []
        automaton: Any = ahocorasick.Automaton()
        phrases: Any = ahocorasick.Automaton()
        for rule_index, rule in enumerate(self.rules):
            for field in ("words", "phrases"):
                for term_index, term in enumerate(getattr(rule, field)):
                    key = skeleton_of(term)
                    if not key:
                        issues.append(PolicyIssue(
                            "", f"content.rules[{rule_index}].{field}[{term_index}]",
                            "nothing is left of this entry once invisible characters are "
                            "removed"))
                        continue
                    _add_key(automaton, key, frozenset(), rule_index)
                    if not key.isalnum():
                        _add_key(phrases, *_spaceless(key), rule_index)
        if issues:
            raise PolicyError(issues)
        self._automaton = automaton if len(automaton) else None
        if self._automaton is not None:
            self._automaton.make_automaton()
        # Phrases (and words with punctuation) again, letters and digits only (_joined).
        self._phrases = phrases if len(phrases) else None
        if self._phrases is not None:
            self._phrases.make_automaton()
        self._patterns = [(rule_index, compile_re2(pattern))
                          for rule_index, rule in enumerate(self.rules)
                          for pattern in rule.patterns]
        self._detectors = [(rule_index, detector)
                           for rule_index, rule in enumerate(self.rules) if rule.builtin
                           for detector in detectors(rule.builtin)]

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def run(self, inspection: Inspection, prior: Prior = ()) -> StageResult:
        result = StageResult()
        direction = inspection.direction.value
        applies = [direction in rule.on for rule in self.rules]
        if not any(applies):
            return result
        for index, message in enumerate(inspection.messages):
            if message.content:
                # RE2 takes UTF-8, which a lone surrogate cannot be: scan a copy with each
                # replaced by U+FFFD (same offsets), so no text can make the stage raise.
                self._report(index, self._scan(well_formed(message.content), applies), result)
        return result

    def _scan(self, text: str, applies: list[bool]) -> list[Hit]:
        from sidecar.content.normalize import has_markup

        # The views of this text, made on first use. Not a closure that calls itself: that
        # is a reference cycle (function -> cell -> function) holding every view, freed
        # only by a full garbage collection, which a worker with spaCy's millions of
        # long-lived objects seldom runs: each 50 KB request left ~1.4 MB behind, and a
        # worker grew by ~250 MiB per 1 MB request (outside trial). Loops, no recursion.
        views: dict[str, View] = {}

        def view(name: str) -> View:
            """A view by name (see `_view_of`)."""
            return _view_of(text, name, views)

        # Wording is read twice when the text holds markup or escapes: as written, and
        # as a reader sees it (`ki<i>ll</i>`, `bo\u006db`), so neither hides a word. And
        # where spaced-out letters were joined, once more with their loose ends apart
        # (`i.n.s.t.r.u.c.t.i.o.n.s: 0`: see `clean`), when that reads differently.
        readings = ["", "+"] if has_markup(view("clean")) else [""]
        readings += [plus + "^" for plus in readings if view("clean" + plus).joins
                     and view("clean" + plus + "^").text != view("clean" + plus).text]
        hits: set[Hit] = set()
        if self._automaton is not None:
            for plus in readings:
                hits.update(self._lists(view("skeleton" + plus), applies))
        for rule, regex in self._patterns:
            if applies[rule]:
                clean_view = view("clean")
                hits.update(Hit(rule, "", *clean_view.span(m.start(), m.end()))
                            for m in regex.finditer(clean_view.text) if m.end() > m.start())
        ascii_text = text.isascii()
        for rule, detector in self._detectors:
            abandon.check()
            if not applies[rule] or (detector.disguise_only and ascii_text):
                continue
            if detector.view == "despaced":
                for plus in readings:
                    hits.update(Hit(rule, detector.id, *span)
                                for span in _despaced(view("words" + plus), detector.regex))
                continue
            for plus in readings if detector.view in ("skeleton", "words") else ("",):
                hits.update(self._detected(rule, detector, view(detector.view + plus), text))
        return sorted(hits, key=lambda hit: (hit.start, hit.end, hit.rule, hit.detector))

    def _lists(self, skeleton_view: View, applies: list[bool]) -> set[Hit]:
        """Words and phrases, whole words only, on the skeleton view."""
        assert self._automaton is not None
        hits: set[Hit] = set()
        for end, (length, by_spaces) in self._automaton.iter(skeleton_view.text):
            start = end - length + 1
            if not ((skeleton_view.is_boundary(start) or _separated(skeleton_view, start))
                    and skeleton_view.may_end(
                        end + 1, lambda at: _separated(skeleton_view, at))):
                continue  # inside a longer word: whole words only
            span = skeleton_view.span(start, end + 1)
            hits.update(Hit(rule, "", *span) for rule in by_spaces[frozenset()]
                        if applies[rule])
        if self._phrases is not None:
            hits.update(self._joined(skeleton_view, applies))
        return hits

    @staticmethod
    def _detected(rule: int, detector: Any, target: View, text: str) -> set[Hit]:
        """One builtin detector's matches on its view, as hits on the text as sent."""
        from sidecar.content.builtins import shannon_entropy

        hits: set[Hit] = set()
        for match in detector.regex.finditer(target.text):
            if match.end() <= match.start():
                continue
            if detector.disguise_only and text[slice(*target.span(
                    match.start(), match.end()))].isascii():
                continue
            if detector.group and match.group(detector.group) is None:
                continue  # a branch that only keeps look-alikes from matching
            if detector.min_entropy and shannon_entropy(
                    match.group(detector.group)) < detector.min_entropy:
                continue
            hits.add(Hit(rule, detector.id, *target.span(match.start(), match.end())))
        return hits

    def _joined(self, skeleton_view: View, applies: list[bool]) -> set[Hit]:
        """Phrases whose words are apart in some other way than one space.

        `b u i l d a bomb` joins into `builda bomb` (joining cannot know where a word
        ended), `make-meth-now`, `**make** **meth**` and `make\u200bmeth` put other
        characters between the words. Here the view is read with only its letters and
        digits, against each phrase likewise; a hit counts where every gap of the phrase
        falls on a word boundary of the view (punctuation, a space, or a join: where
        spaced-out letters were glued) or a gap (where invisible characters were
        dropped), the phrase's
        words are whole in the view (nothing between their letters), and it starts and
        ends on word boundaries.
        """
        text = skeleton_view.text
        assert self._phrases is not None
        found = list(self._phrases.iter(_NOT_ALNUM.sub("", text)))
        if not found:
            return set()
        kept = [index for index, char in enumerate(text) if char.isalnum()]
        hits: set[Hit] = set()
        for end, (length, by_gaps) in found:
            where = kept[end - length + 1:end + 1]  # view positions of the hit
            if not (skeleton_view.is_boundary(where[0])
                    and skeleton_view.is_boundary(where[-1] + 1)):
                continue
            for gaps, rules in by_gaps.items():
                if all((skeleton_view.is_boundary(where[i]) or where[i] in skeleton_view.gaps
                        if i in gaps else where[i] == where[i - 1] + 1)
                       for i in range(1, length)):
                    span = skeleton_view.span(where[0], where[-1] + 1)
                    hits.update(Hit(rule, "", *span) for rule in rules if applies[rule])
        return hits

    def _report(self, index: int, hits: list[Hit], result: StageResult) -> None:
        for count, hit in enumerate(hits):
            rule = self.rules[hit.rule]
            if count < MAX_VIOLATIONS_PER_MESSAGE:
                rule_id = f"{rule.id}/{hit.detector}" if hit.detector else rule.id
                what = f"{rule.builtin} detector '{hit.detector}'" if hit.detector else \
                    f"{rule.kind} rule"
                shadow = " in shadow" if rule.shadow else ""
                result.violations.append(Violation(
                    rule_id, rule.kind, f"{what} matched ({rule.action}{shadow})",
                    hit.start, hit.end, index, shadow=rule.shadow))
            elif count == MAX_VIOLATIONS_PER_MESSAGE:
                result.violations.append(Violation(
                    "content.truncated", "content",
                    f"{len(hits) - count} more matches not listed", 0, 0, index))
            if rule.shadow:
                result.would_block |= rule.action == "block"
                result.would_edit |= rule.action == "redact"
            elif rule.action == "block":
                result.blocked = True
            elif rule.action == "redact":
                result.edits.setdefault(index, []).append(
                    Edit(hit.start, hit.end, rule.replacement or DEFAULT_REPLACEMENT))
