"""Every private detail of Presidio, spaCy and phonenumbers the sidecar depends on.

Why this module exists: the PII stage returns what vanilla Presidio returns, but faster
(`FastPhoneRecognizer`, `BisectContextEnhancer`, `LeanSpacyEngine`, `LazyArtifacts`). To
skip work without changing results they override or call methods, and read constants,
that these libraries do not promise to keep. An upgrade that renamed one would show up
as an AttributeError on some request; one that changed what a method *does* would show
up as nothing at all -- a phone number or a context word silently missed.

So every such detail is named here, and only here, with the library versions it was
read from (`WRITTEN_FOR`) and a fingerprint of its source (`PRIVATE_DETAILS`):

- `tests/test_internals.py` fails when an installed version or a fingerprint differs
  from what is recorded. Whoever upgrades re-reads the listed details against the code
  that relies on them (the `used_by` column), re-runs the equivalence tests
  (`tests/test_recognizers*.py`, `tests/test_nlp*.py`), and then records the new
  versions and fingerprints (`python -m sidecar.pii.internals` prints them).
- At run time, `check()` runs once per process when the PII stage loads. A detail that
  is missing or whose parameters changed is a ConfigError (the worker refuses to start,
  naming it) rather than a failure on some later request; a version other than the
  one recorded only logs a warning, since the hash-locked requirements make that a
  deliberate local change.

Public APIs are used everywhere else: nothing outside this module imports a private
name from these libraries (a test greps for it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import logging
import threading
from dataclasses import dataclass
from typing import Any

from sidecar.errors import ConfigError

log = logging.getLogger(__name__)

# The versions every detail below was read from (distribution name -> version).
WRITTEN_FOR = {
    "presidio-analyzer": "2.2.366",
    "phonenumbers": "9.0.43",
    # Not newer: the 3.8.8+ wheels take the GIL twice per token read in NER's
    # transition loop (pyproject.toml, README "Speed suite on equal cores"). Before
    # moving on, check the new wheel: in its spacy/pipeline/_parser_internals/ner*.so,
    # `objdump -d FILE | awk '/StateC2B_Ei>:/,/^$/' | grep -c PyGILState_Ensure`
    # must print 0 (3.8.7: 0; 3.8.8-3.8.18: 2).
    "spacy": "3.8.7",
}


@dataclass(frozen=True)
class Detail:
    """One private name: where it lives, what it looks like, who relies on it and how."""

    module: str
    qualname: str  # "Class.method" or "CONSTANT"
    distribution: str
    params: tuple[str, ...] | None  # parameter names of a callable; None for a value
    fingerprint: str  # sha256 of its source (callables) or repr (values), 16 hex digits
    used_by: str


PRIVATE_DETAILS: tuple[Detail, ...] = (
    # phonenumbers' matcher: FastPhoneRecognizer's BoundedMatcher re-runs its search loop
    # with each candidate found once per text, so it overrides these and must keep their
    # control flow (what is searched next, when the retry budget is spent).
    Detail("phonenumbers.phonenumbermatcher", "PhoneNumberMatcher.__init__", "phonenumbers",
           ("self", "text", "region", "leniency", "max_tries", "min_candidate_length"),
           "dddc75cddbdf70c1",
           "recognizers.bounded_matcher: reads self._max_tries and self._min_candidate_length"),
    Detail("phonenumbers.phonenumbermatcher", "PhoneNumberMatcher._find", "phonenumbers",
           ("self", "index"), "a9e89d83733105cb", "recognizers.bounded_matcher: overridden"),
    Detail("phonenumbers.phonenumbermatcher", "PhoneNumberMatcher._extract_match",
           "phonenumbers", ("self", "candidate", "offset"), "59b5958e65b0c9e5",
           "recognizers.bounded_matcher: overridden"),
    Detail("phonenumbers.phonenumbermatcher", "PhoneNumberMatcher._extract_inner_match",
           "phonenumbers", ("self", "candidate", "offset"), "3f18c77cd6a26a92",
           "recognizers.bounded_matcher: overridden"),
    Detail("phonenumbers.phonenumbermatcher", "PhoneNumberMatcher._parse_and_verify",
           "phonenumbers", ("self", "candidate", "offset"), "d8adb854f3266ed5",
           "recognizers.bounded_matcher: overridden and called"),
    Detail("phonenumbers.phonenumbermatcher", "_PATTERN", "phonenumbers", None,
           "75f79a1fa059be92", "recognizers._Shared.candidate_at"),
    Detail("phonenumbers.phonenumberutil", "_SECOND_NUMBER_START_PATTERN", "phonenumbers",
           None, "b78a972165a1d603", "recognizers._Shared.candidate_at"),
    Detail("phonenumbers.phonenumbermatcher", "_SLASH_SEPARATED_DATES", "phonenumbers", None,
           "a55be012c40c0024", "recognizers._Shared.not_a_number"),
    Detail("phonenumbers.phonenumbermatcher", "_TIME_STAMPS", "phonenumbers", None,
           "e712d8c16f7d7594", "recognizers._Shared.not_a_number"),
    Detail("phonenumbers.phonenumbermatcher", "_TIME_STAMPS_SUFFIX", "phonenumbers", None,
           "88e1c5c398928611", "recognizers._Shared.not_a_number"),
    Detail("phonenumbers.phonenumbermatcher", "_INNER_MATCHES", "phonenumbers", None,
           "848a4c0068c27760", "recognizers._Shared.inner_groups"),
    Detail("phonenumbers.phonenumberutil", "_UNWANTED_END_CHAR_PATTERN", "phonenumbers", None,
           "283c1faff63f126d", "recognizers._Shared.inner_groups"),
    Detail("phonenumbers.phonenumberutil", "_MIN_LENGTH_FOR_NSN", "phonenumbers", None,
           "d4735e3a265e16ee", "recognizers._shortest_valid"),
    # Presidio: the phone recognizer's result builder, the context enhancer's token walk
    # (made near-linear) and the spaCy engine's entity mapping (reused on lean Docs).
    Detail("presidio_analyzer.predefined_recognizers", "PhoneRecognizer._get_recognizer_result",
           "presidio-analyzer", ("self", "match", "text", "region", "nlp_artifacts"),
           "c3490d1d9a294e7f", "recognizers.FastPhoneRecognizer.analyze: called"),
    Detail("presidio_analyzer.context_aware_enhancers",
           "LemmaContextAwareEnhancer._extract_surrounding_words", "presidio-analyzer",
           ("self", "nlp_artifacts", "word", "start"), "26be5215b4b65250",
           "recognizers.BisectContextEnhancer: overridden, falls back to it"),
    Detail("presidio_analyzer.context_aware_enhancers",
           "LemmaContextAwareEnhancer.enhance_using_context", "presidio-analyzer",
           ("self", "text", "raw_results", "nlp_artifacts", "recognizers", "context"),
           "a7a5aafaaf901f26",
           "recognizers.BisectContextEnhancer: relies on it deep-copying raw_results and "
           "then changing only each result's score and analysis_explanation"),
    Detail("presidio_analyzer.context_aware_enhancers", "LemmaContextAwareEnhancer._add_n_words",
           "presidio-analyzer",
           ("index", "n_words", "lemmas", "lemmatized_filtered_keywords", "is_backward"),
           "fb5e80dcc4d30b86",
           "recognizers.BisectContextEnhancer and nlp.LazyArtifacts._walk: re-implemented"),
    Detail("presidio_analyzer.context_aware_enhancers",
           "LemmaContextAwareEnhancer._find_index_of_match_token", "presidio-analyzer",
           ("word", "start", "tokens", "tokens_indices"), "37ce924de8995481",
           "recognizers.BisectContextEnhancer and nlp.LazyArtifacts: re-implemented"),
    Detail("presidio_analyzer.nlp_engine", "SpacyNlpEngine._get_updated_entities",
           "presidio-analyzer", ("self", "entities", "scores"), "b3e5ccad124807e3",
           "nlp.LeanSpacyEngine: called (Presidio's label mapping)"),
    Detail("presidio_analyzer.nlp_engine", "SpacyNlpEngine._get_scores_for_entities",
           "presidio-analyzer", ("self", "doc"), "d8fa97ff70150b36",
           "nlp.LeanSpacyEngine._doc_to_nlp_artifact: called"),
    Detail("presidio_analyzer.nlp_engine", "SpacyNlpEngine._doc_to_nlp_artifact",
           "presidio-analyzer", ("self", "doc", "language"), "96eedc40b43ed6bd",
           "nlp.LeanSpacyEngine: overridden (same artifacts, read from Doc arrays)"),
    # Presidio's regex matching: a pattern whose match times out (REGEX_TIMEOUT_SECONDS)
    # is skipped with a warning, never an error; `PatternTimeouts` counts the warnings
    # (their texts are TIMEOUT_WARNINGS) so that the PII stage fails instead.
    Detail("presidio_analyzer.pattern_recognizer",
           "PatternRecognizer._PatternRecognizer__analyze_patterns", "presidio-analyzer",
           ("self", "text", "flags"), "a9f12c77810d2f1a",
           "PatternTimeouts: its TimeoutError warning is TIMEOUT_WARNINGS[0]"),
    Detail("presidio_analyzer.predefined_recognizers",
           "IbanRecognizer._IbanRecognizer__analyze_patterns", "presidio-analyzer",
           ("self", "text", "flags"), "c21700d984218eb5",
           "PatternTimeouts: its TimeoutError warning is TIMEOUT_WARNINGS[0]"),
    Detail("presidio_analyzer.predefined_recognizers",
           "IbanRecognizer._IbanRecognizer__is_valid_format", "presidio-analyzer",
           ("iban", "bos_eos", "flags"), "7c35ee6dc8038dd8",
           "PatternTimeouts: its TimeoutError warning is TIMEOUT_WARNINGS[1]"),
    # Presidio's URL patterns, matched by RE2 after a translation checked for exactly
    # these (sidecar.pii.re2_patterns); the Pattern attributes Presidio reads to decide
    # whether to compile again are set there (its __analyze_patterns, above).
    Detail("presidio_analyzer.predefined_recognizers", "UrlRecognizer.PATTERNS",
           "presidio-analyzer", None, "d7b7f08ec2e7e35d",
           "re2_patterns.match_with_re2: translates them; tests/test_re2_patterns.py"),
    Detail("presidio_analyzer.predefined_recognizers", "EmailRecognizer.PATTERNS",
           "presidio-analyzer", None, "36416eb15ee71653",
           "re2_patterns.StartsOnRe2: derived for exactly this pattern; "
           "tests/test_re2_patterns.py"),
    # spaCy: the lexeme attribute getters, trimmed for tokenizer-only pipelines.
    Detail("spacy.vocab", "Vocab.lex_attr_getters", "spacy", None, "",
           "nlp._load: replaced for pipelines without NER"),
)


def _resolve(detail: Detail) -> Any:
    """The object `detail` names (AttributeError/ImportError when it is gone)."""
    found: Any = importlib.import_module(detail.module)
    for part in detail.qualname.split("."):
        found = getattr(found, part)
    return found


def fingerprint(detail: Detail) -> str:
    """A fingerprint of what `detail` is now: its source, or the value's repr."""
    found = _resolve(detail)
    if detail.params is not None:
        text = inspect.getsource(found)
    elif isinstance(found, property) or detail.fingerprint == "":
        return ""  # an attribute set per instance: only its presence is checked
    else:
        text = repr(getattr(found, "pattern", found)) if not isinstance(found, (list, tuple)) \
            else repr([getattr(item, "pattern", item) for item in found])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def installed_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in WRITTEN_FOR}


def shape_problems() -> list[str]:
    """Details that are missing or whose parameters changed (cheap: no source read)."""
    problems = []
    for detail in PRIVATE_DETAILS:
        where = f"{detail.module}.{detail.qualname}"
        if detail.qualname == "Vocab.lex_attr_getters":
            continue  # an instance attribute: checked by _check_instances
        try:
            found = _resolve(detail)
        except (ImportError, AttributeError):
            problems.append(f"{where} is gone (used by {detail.used_by})")
            continue
        if detail.params is not None:
            try:
                params = tuple(inspect.signature(found).parameters)
            except (TypeError, ValueError):
                params = ()
            if params != detail.params:
                problems.append(f"{where} now takes {params}, not {detail.params} "
                                f"(used by {detail.used_by})")
    problems.extend(_check_instances())
    from presidio_analyzer import RecognizerResult

    from sidecar.pii.precision import RECOGNIZER_NAME_KEY

    if RecognizerResult.RECOGNIZER_NAME_KEY != RECOGNIZER_NAME_KEY:
        problems.append(f"RecognizerResult.RECOGNIZER_NAME_KEY is now "
                        f"{RecognizerResult.RECOGNIZER_NAME_KEY!r}, not {RECOGNIZER_NAME_KEY!r} "
                        "(used by sidecar.pii.precision)")
    return problems


def _check_instances() -> list[str]:
    """Attributes that exist only on instances."""
    problems = []
    from phonenumbers.phonenumbermatcher import PhoneNumberMatcher

    matcher = PhoneNumberMatcher("", "US")
    for name in ("_max_tries", "_min_candidate_length", "text"):
        if not hasattr(matcher, name):
            problems.append(f"PhoneNumberMatcher instances have no {name} "
                            "(used by recognizers.bounded_matcher)")
    from spacy.vocab import Vocab

    if not isinstance(getattr(Vocab(), "lex_attr_getters", None), dict):
        problems.append("spacy Vocab.lex_attr_getters is no longer a dict (used by nlp._load)")
    return problems


@functools.cache
def check() -> None:
    """Once per process, before the fast paths run (see the module docstring)."""
    problems = shape_problems()
    if problems:
        raise ConfigError("a library the PII stage relies on changed a private detail; "
                          "see sidecar/pii/internals.py: " + "; ".join(problems))
    drifted = {name: version for name, version in installed_versions().items()
               if version != WRITTEN_FOR[name]}
    if drifted:
        log.warning("PII stage libraries differ from the versions its fast paths were "
                    "checked against", extra={"installed": drifted, "written_for": {
                        name: WRITTEN_FOR[name] for name in drifted}})


# What Presidio logs when it skips a pattern (or fails an IBAN's format check) because
# its regex timed out, instead of raising: the finding is then silently missing.
PRESIDIO_LOGGER = "presidio-analyzer"
TIMEOUT_WARNINGS = ("Regex pattern '%s' timed out after %s seconds, skipping.",
                    "IBAN format validation regex timed out after %s seconds.")


class PatternTimeouts(logging.Filter):
    """Counts, per thread, the patterns Presidio skipped because their regex timed out.

    Presidio catches the TimeoutError of its `regex` matching (a backtracking engine,
    60 s by default) and goes on without that pattern: the text comes back with fewer
    findings and nothing says so, and a chat message's result was then cached and served
    to other callers (outside trial 9). The PII stage reads this count around each
    analysis and fails when it moved, so the policy's `on_error` decides and nothing is
    cached. A filter on Presidio's logger sees the warning however the logger is
    configured, as long as its level lets warnings be made (`sidecar.logs.configure`
    keeps them from the output with a filter of its own, after this one).
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in TIMEOUT_WARNINGS:
            self._local.count = self.count() + 1
        return True

    def count(self) -> int:
        return int(getattr(self._local, "count", 0))


@functools.cache
def pattern_timeouts() -> PatternTimeouts:
    """The process's one watch, first among the filters of Presidio's logger."""
    watch = PatternTimeouts()
    logger = logging.getLogger(PRESIDIO_LOGGER)
    logger.filters.insert(0, watch)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)  # a warning not made is a warning not seen
    return watch


@dataclass(frozen=True)
class PhoneMatcherConstants:
    """phonenumbers' matcher patterns, as `recognizers._Shared` reads them."""

    candidate: Any
    second_number_start: Any
    slash_separated_dates: Any
    time_stamps: Any
    time_stamps_suffix: Any
    inner_matches: Any
    unwanted_end_char: Any
    min_length_for_nsn: int


@functools.cache
def phone_matcher_constants() -> PhoneMatcherConstants:
    from phonenumbers import phonenumbermatcher as matcher
    from phonenumbers import phonenumberutil as util

    return PhoneMatcherConstants(
        candidate=matcher._PATTERN,
        second_number_start=util._SECOND_NUMBER_START_PATTERN,
        slash_separated_dates=matcher._SLASH_SEPARATED_DATES,
        time_stamps=matcher._TIME_STAMPS,
        time_stamps_suffix=matcher._TIME_STAMPS_SUFFIX,
        inner_matches=matcher._INNER_MATCHES,
        unwanted_end_char=util._UNWANTED_END_CHAR_PATTERN,
        min_length_for_nsn=util._MIN_LENGTH_FOR_NSN,
    )


def main() -> None:
    """Print the installed versions and every detail's current fingerprint."""
    print("WRITTEN_FOR =", installed_versions())
    for detail in PRIVATE_DETAILS:
        try:
            now = fingerprint(detail)
        except (ImportError, AttributeError, OSError, TypeError) as err:
            now = f"<{type(err).__name__}>"
        mark = "" if now == detail.fingerprint else "   <- differs"
        print(f"{detail.module}.{detail.qualname}: {now}{mark}")


if __name__ == "__main__":
    main()
