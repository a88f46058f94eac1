"""Recognizers: Presidio's predefined set, ours beyond it, the policy's own, and two
faster equivalents.

Ours: street addresses (`sidecar.pii.addresses`). Presidio's country recognizers of
personal identifiers are selectable by policy (`COUNTRY_RECOGNIZERS`).

`FastPhoneRecognizer` and `BisectContextEnhancer` return exactly what Presidio's
`PhoneRecognizer` and `LemmaContextAwareEnhancer` return (tests compare them on a
corpus); they only skip work that cannot change the result.
"""

from __future__ import annotations

import bisect
import copy
import functools
import re
from collections.abc import Iterable
from typing import Any

import re2
from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

from sidecar import abandon
from sidecar.errors import ConfigError
from sidecar.pii import re2_patterns
from sidecar.pii.internals import phone_matcher_constants
from sidecar.pii.nlp import LazyArtifacts
from sidecar.policy.model import CustomRecognizer
from sidecar.regex import compile_re2

# A phone number holds at least two digits (phonenumbers' shortest national number);
# most prompts hold none, and the per-region scans are then pure cost.
_TWO_DIGITS = re.compile(r"\d\D*?\d", re.DOTALL)


class FastPhoneRecognizer(PhoneRecognizer):
    """Presidio's PhoneRecognizer, minus work that cannot change its result.

    Presidio scans the whole text once per region in ("US", "GB", "DE", "FR", "IL",
    "IN", "CA", "BR"); phonenumbers parses every candidate it finds (dates, amounts,
    zip codes, card numbers...) under each region, and those parses are most of its cost.
    Skipped here:

    - scans of a region that shares its calling code with an earlier one ("CA" and "US"
      are both +1: a national-form number parses to the same number under both and is
      validated against its own region either way), or that phonenumbers does not know
      (then only "+..." numbers parse, the same under any region);
    - texts with fewer than two digits;
    - parses of candidates too short to be valid in the scanned region
      (`bounded_matcher`), and of plain national-form candidates with too many digits
      for any number of the region's calling code (`national_length_possible`: card
      numbers, long IDs).

    Compiled metadata patterns are kept (phonenumbers' own pattern cache) instead of
    being recompiled whenever they fall out of the `re` module's bounded cache.
    Tests compare it with Presidio's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.supported_regions = effective_regions(self.supported_regions)
        from phonenumbers import re_util

        re_util.enable_pattern_cache()

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Presidio's PhoneRecognizer.analyze, with `bounded_matcher()` doing the scans."""
        import phonenumbers

        if not _TWO_DIGITS.search(text):
            return []
        results = []
        shared = _Shared()
        for region in self.supported_regions:
            for match in bounded_matcher()(text, region, shared, leniency=self.leniency):
                try:
                    found_in = phonenumbers.region_code_for_number(
                        phonenumbers.parse(text[match.start:match.end]))
                except phonenumbers.NumberParseException:
                    found_in = region
                results.append(self._get_recognizer_result(  # type: ignore[no-untyped-call]
                    match, text, found_in, nlp_artifacts))
        return EntityRecognizer.remove_duplicates(results)


@functools.cache
def bounded_matcher() -> Any:
    """PhoneNumberMatcher that declines, without parsing, a candidate with too few digits,
    and shares the work that does not depend on the region between a text's scans.

    Built on first use so importing this module stays cheap. The matcher's own control
    flow (where it searches next, its retry budget) depends only on whether
    `_parse_and_verify` returns a match, and a declined candidate is one it would have
    declined too: a number valid under region R has a national significant number of a
    length R's (or, written internationally, its own country's) metadata allows, and
    parsing takes those digits from the candidate, dropping (prefixes, an extension) or
    adding (national-prefix transform rules) a known number of them. `minimum_digits`
    turns that into the fewest digit-like characters a candidate must hold.

    A text is scanned once per region, and most of a scan comes out the same every time:
    how a candidate splits into inner groups (~50 regex searches per candidate) and how
    many digits a group holds. `_Shared` computes those once per text; it lives only
    while the text is analysed, so no number outlives its request.
    """
    from phonenumbers.phonenumbermatcher import PhoneNumberMatcher

    class BoundedMatcher(PhoneNumberMatcher):
        def __init__(self, text: str, region: str, shared: _Shared | None = None,
                     **kwargs: Any) -> None:
            super().__init__(text, region, **kwargs)
            self._minimum = minimum_digits(region)
            self._region = region
            self._shared = shared if shared is not None else _Shared()

        def _find(self, index: int) -> Any:
            """phonenumbers' search loop, with each candidate found once per text."""
            found = self._shared.candidate_at(self.text, index)
            while self._max_tries > 0 and found is not None:
                abandon.check()  # digit-dense text: ~100 µs of parsing a character
                start, candidate = found
                if len(candidate) >= self._min_candidate_length:
                    match = self._extract_match(candidate, start)
                    if match is not None:
                        return match
                    self._max_tries -= 1
                found = self._shared.candidate_at(self.text, start + len(candidate))
            return None

        def _extract_match(self, candidate: str, offset: int) -> Any:
            """phonenumbers' date and time-stamp checks (computed once per text), then the
            whole candidate, then its inner groups."""
            if self._shared.not_a_number(self.text, candidate, offset):
                return None
            match = self._parse_and_verify(candidate, offset)
            if match is not None:
                return match
            return self._extract_inner_match(candidate, offset)

        def _extract_inner_match(self, candidate: str, offset: int) -> Any:
            """phonenumbers' loop over a candidate's inner groups, with the groups
            computed once per text: its retry budget is checked before each turn and
            spent on each declined group, as phonenumbers does."""
            for turn in self._shared.inner_groups(candidate):
                if self._max_tries <= 0:
                    return None
                for group, start in turn:
                    match = self._parse_and_verify(group, offset + start)
                    if match is not None:
                        return match
                    self._max_tries -= 1
            return None

        def _parse_and_verify(self, candidate: str, offset: int) -> Any:
            if self._shared.digit_like(candidate) < self._minimum:
                return None
            if not national_length_possible(candidate, self._region):
                return None
            return super()._parse_and_verify(candidate, offset)

    return BoundedMatcher


class _Shared:
    """What one text's scans under different regions compute alike (see bounded_matcher)."""

    def __init__(self) -> None:
        self._candidates: dict[int, tuple[int, str] | None] = {}
        self._dates: dict[tuple[str, int], bool] = {}
        self._groups: dict[str, list[list[tuple[str, int]]]] = {}
        self._digits: dict[str, int] = {}

    def candidate_at(self, text: str, index: int) -> tuple[int, str] | None:
        """(start, candidate) of phonenumbers' next candidate at or after `index`, cut
        before a second number's start as its `_find` does."""
        if index not in self._candidates:
            constants = phone_matcher_constants()
            found = constants.candidate.search(text, index)
            if found is None:
                self._candidates[index] = None
            else:
                candidate = found.group()
                second = constants.second_number_start.search(candidate)
                self._candidates[index] = (found.start(),
                                           candidate[:second.start()] if second else candidate)
        return self._candidates[index]

    def not_a_number(self, text: str, candidate: str, offset: int) -> bool:
        """phonenumbers' `_extract_match` skips slash-separated dates and time stamps."""
        key = (candidate, offset)
        skip = self._dates.get(key)
        if skip is None:
            constants = phone_matcher_constants()
            skip = bool(constants.slash_separated_dates.search(candidate)) or bool(
                constants.time_stamps.search(candidate)
                and constants.time_stamps_suffix.match(text, offset + len(candidate)))
            self._dates[key] = skip
        return skip

    def inner_groups(self, candidate: str) -> list[list[tuple[str, int]]]:
        """The (group, offset in candidate) pairs phonenumbers' `_extract_inner_match`
        tries, one list per turn of its loop, in its order."""
        found = self._groups.get(candidate)
        if found is None:
            constants = phone_matcher_constants()

            def trimmed(group: str) -> str:  # phonenumbers' _trim_after_first_match
                end = constants.unwanted_end_char.search(group)
                return group[:end.start()] if end else group

            found = []
            for pattern in constants.inner_matches:
                group_match = pattern.search(candidate)
                first = True
                while group_match:
                    turn = [(trimmed(candidate[:group_match.start()]), 0)] if first else []
                    first = False
                    turn.append((trimmed(group_match.group(1)), group_match.start(1)))
                    found.append(turn)
                    group_match = pattern.search(candidate, group_match.start() + 1)
            self._groups[candidate] = found
        return found

    def digit_like(self, candidate: str) -> int:
        count = self._digits.get(candidate)
        if count is None:
            count = self._digits[candidate] = _digit_like(candidate)
        return count


_ASCII_NOT_DIGIT_LIKE = frozenset(chr(c) for c in range(128) if not chr(c).isalnum())


def _digit_like(candidate: str) -> int:
    """An upper bound on the digits parsing can read from `candidate`.

    Counts ASCII letters and digits (letters become digits in vanity numbers) and every
    non-ASCII character (whatever phonenumbers' Unicode tables call a digit).
    """
    return sum(1 for char in candidate if char not in _ASCII_NOT_DIGIT_LIKE)


@functools.cache
def minimum_digits(region: str) -> int:
    """The fewest digit-like characters from which `region`'s parse can make a valid number.

    National form: the shortest valid national number of the region's calling code, less
    the digits a national-prefix transform rule can add (the region's own, or its calling
    code's main region's when the code is written out). International form ("+..." or an
    IDD prefix): the same for every calling code, plus the code's own digits; the IDD's
    digits only raise the count, so they are not relied on.
    """
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, region_code_for_country_code

    international = min(len(str(code)) + _shortest_valid(code)
                        - _digits_added(region_code_for_country_code(code))
                        for code in COUNTRY_CODE_TO_REGION_CODE)
    national = _national_minimum(region)
    if national is None:
        return max(1, international)
    return max(1, min(national, international))


def _national_minimum(region: str) -> int | None:
    """The fewest digits of a valid number of `region`'s calling code written nationally:
    its shortest valid national number, less the digits a national-prefix transform rule
    can add (the region's own, or its calling code's main region's). None for a region
    without a calling code."""
    from phonenumbers import country_code_for_region, region_code_for_country_code

    code = country_code_for_region(region)
    if not code:
        return None
    return _shortest_valid(code) - _digits_added(region) - _digits_added(
        region_code_for_country_code(code))


# Candidates of ASCII digits and separators only: no "+", no letters (vanity digits,
# extension labels such as "x" or "ext"), no other Unicode digits, no ";" or "," or "#".
_PLAIN_CANDIDATE = re.compile(r"[0-9 ().\-/]+")


def national_length_possible(candidate: str, region: str) -> bool:
    """False when parsing `candidate` under `region` cannot give a valid number.

    Only plain candidates (`_PLAIN_CANDIDATE`) that do not start with the region's
    international dialling prefix are judged: phonenumbers then reads all their digits as
    a national number of the region's own calling code. It may drop the calling code if
    they start with it, then the national prefix (at most twice on that path; once
    otherwise), and nothing else. A number is valid only if what is left has a length
    that some region of the calling code allows; when even the most it can drop leaves
    too many digits (a card number, most IDs), or too few remain at best, it is not.
    With a national-prefix transform rule (which writes digits back), a candidate that
    starts with the calling code is not judged: the second strip reads what the first
    one wrote.
    """
    if not _PLAIN_CANDIDATE.fullmatch(candidate):
        return True
    rules = _national_rules(region)
    if rules is None:
        return True
    code, international, national_prefix, transforms, shortest, longest = rules
    digits = "".join(char for char in candidate if char.isdigit())
    if international is not None and international.match(digits):
        return True  # international form: another calling code's lengths apply
    if len(digits) < shortest:
        return False
    if longest is None:
        return True

    def strip(number: str) -> str:
        found = national_prefix.match(number) if national_prefix is not None else None
        return number[found.end():] if found else number

    fewest = len(strip(digits))  # a transform rule only writes digits back: still fewest
    if digits.startswith(code):
        if transforms:  # a second strip reads the digits the first one wrote
            return True
        fewest = min(fewest, len(strip(strip(digits[len(code):]))))
    return fewest <= longest


@functools.cache
def _national_rules(region: str) -> tuple[str, Any, Any, bool, int, int | None] | None:
    """(calling code, IDD pattern, national-prefix pattern, has a transform rule, fewest
    digits, most digits left in a valid national number or None when unbounded)."""
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
    from phonenumbers.phonemetadata import PhoneMetadata
    from phonenumbers.re_util import re_compile

    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None or not metadata.country_code:
        return None
    code = metadata.country_code
    shortest = _national_minimum(region) or 0
    longest: int | None = 0
    for other in COUNTRY_CODE_TO_REGION_CODE[code]:
        described = PhoneMetadata.metadata_for_region_or_calling_code(code, other)
        lengths = [n for n in (described.general_desc.possible_length or ())
                   if n > 0] if described is not None and described.general_desc else []
        if not lengths or longest is None:
            longest = None  # phonenumbers then checks no length at all
            break
        longest = max(longest, *lengths)
    return (str(code),
            re_compile(metadata.international_prefix) if metadata.international_prefix else None,
            re_compile(metadata.national_prefix_for_parsing)
            if metadata.national_prefix_for_parsing else None,
            bool(metadata.national_prefix_transform_rule), max(1, shortest), longest)


def _shortest_valid(code: int) -> int:
    """The shortest national number some region of calling code `code` accepts."""
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
    from phonenumbers.phonemetadata import PhoneMetadata

    minimum = phone_matcher_constants().min_length_for_nsn
    shortest = []
    for region in COUNTRY_CODE_TO_REGION_CODE[code]:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
        lengths = [n for n in (metadata.general_desc.possible_length or ())
                   if n > 0] if metadata is not None and metadata.general_desc else []
        shortest.append(min(lengths) if lengths else minimum)
    return max(minimum, min(shortest))


def _digits_added(region: str) -> int:
    """Digits `region`'s national-prefix transform rule writes ("9\\1" adds one)."""
    from phonenumbers.phonemetadata import PhoneMetadata

    metadata = PhoneMetadata.metadata_for_region(region)
    rule = metadata.national_prefix_transform_rule if metadata is not None else None
    return len(re.sub(r"\\\d", "", rule or "").strip()) if rule else 0


def effective_regions(regions: Any) -> list[str]:
    """The regions whose scans can each find a number no earlier scan finds."""
    import phonenumbers

    kept: list[str] = []
    codes: set[int] = set()
    for region in regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            continue
        code = phonenumbers.country_code_for_region(region)
        if code not in codes:
            kept.append(region)
            codes.add(code)
    return kept or list(regions)[:1]


class _ResultsToEnhance(list):  # type: ignore[type-arg]
    """Results whose deep copy is a copy of each result and of its explanation: what
    LemmaContextAwareEnhancer.enhance_using_context changes (internals.py lists it)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copies = []
        for result in self:
            copied = copy.copy(result)
            copied.analysis_explanation = copy.copy(result.analysis_explanation)
            copies.append(copied)
        return copies


class BisectContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer made near-linear: token lookup by bisection, keyword
    membership in a set.

    Presidio scans every token for every finding, which makes long texts with many
    findings quadratic. Tokens are sorted and disjoint, so the first token that ends after
    `start` (or begins at it) is found by bisection: the same index, found faster.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keyword_list: list[str] | None = None
        self._keyword_set: frozenset[str] = frozenset()

    def enhance_using_context(self, text: str, raw_results: list[Any], nlp_artifacts: Any,
                              recognizers: list[Any], context: list[str] | None = None,
                              ) -> list[Any]:
        """Presidio's, handed results that deep-copy cheaply (`_ResultsToEnhance`).

        Presidio starts with `copy.deepcopy(raw_results)` so that raising a score leaves
        the caller's results alone: 110 us for four results, ~3% of a corpus document.
        All it then changes is a result's score and its explanation, so a copy of each
        result and of its explanation is the same and costs a quarter of that.
        """
        return super().enhance_using_context(
            text, _ResultsToEnhance(raw_results), nlp_artifacts, recognizers, context)

    def _extract_surrounding_words(self, nlp_artifacts: Any, word: str,
                                   start: int) -> list[str]:
        """Context read from windows around `start` when the text was not tokenized whole
        (pattern-only policies, see LazyArtifacts); from the whole text's tokens otherwise."""
        if isinstance(nlp_artifacts, LazyArtifacts):
            found = nlp_artifacts.context_words(start, self.context_prefix_count,
                                                self.context_suffix_count)
            if found is not None:
                return found
        return super()._extract_surrounding_words(nlp_artifacts, word, start)

    def _add_n_words(self, index: int, n_words: int, lemmas: list[str],  # type: ignore[override]
                     lemmatized_filtered_keywords: list[str],
                     is_backward: bool) -> list[str]:
        """Presidio's loop, with membership tested in a set instead of a list.

        Presidio checks each nearby lemma against the list of every keyword lemma of the
        text: O(text) per check, so a 100 KB text spent a second here. The list is built
        once per analysis and not changed while findings are enhanced, so its set is
        built once too (keyed by identity) and the answers are the same.
        """
        if self._keyword_list is not lemmatized_filtered_keywords:
            self._keyword_list = lemmatized_filtered_keywords
            self._keyword_set = frozenset(lemmatized_filtered_keywords)
        keywords = self._keyword_set
        i = index
        context_words = []
        remaining = n_words + 1
        while 0 <= i < len(lemmas) and remaining > 0:
            lower_lemma = lemmas[i].lower()
            if lower_lemma in keywords:
                context_words.append(lower_lemma)
                remaining -= 1
            i = i - 1 if is_backward else i + 1
        return context_words

    @staticmethod
    def _find_index_of_match_token(word: str, start: int, tokens: Any,
                                   tokens_indices: list[int]) -> int:
        index = bisect.bisect_right(tokens_indices, start) - 1
        if index < 0:
            index = 0
        elif tokens_indices[index] != start and start >= tokens_indices[index] + len(tokens[index]):
            index += 1
        if index >= len(tokens_indices):
            raise ValueError("match lies beyond the last token")
        return index


class Re2Recognizer(LocalRecognizer):
    """A policy's custom recognizer: RE2 patterns and a deny-list, linear-time by design."""

    def __init__(self, spec: CustomRecognizer, index: int, language: str = "en") -> None:
        self.spec = spec
        self.label = f"policy.recognizers[{index}].{spec.entity}"
        self._patterns = [compile_re2(p) for p in spec.patterns]
        # What `explain` names as the pattern: where it is in the policy, never the regex
        # (a deny-list spells out its words).
        self._pattern_names = [f"patterns[{n}]" for n in range(len(spec.patterns))]
        if spec.deny_list:
            alternation = "|".join(re2.escape(term) for term in spec.deny_list)
            self._patterns.append(compile_re2(rf"\b(?:{alternation})\b", ignore_case=True))
            self._pattern_names.append("deny_list")
        super().__init__(
            supported_entities=[spec.entity],
            supported_language=language,
            context=list(spec.context),
            name=self.label,
        )

    def load(self) -> None:
        """Patterns are compiled in __init__, when the policy loads."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        results = []
        for pattern, pattern_name in zip(self._patterns, self._pattern_names, strict=True):
            for match in pattern.finditer(text):
                start, end = match.span()
                if start == end:
                    continue
                results.append(RecognizerResult(
                    entity_type=self.spec.entity, start=start, end=end, score=self.spec.score,
                    analysis_explanation=AnalysisExplanation(
                        recognizer=self.label, original_score=self.spec.score,
                        pattern_name=pattern_name),
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.label,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                ))
        return results


_predefined: dict[str, list[Any]] = {}


# Something every match of a recognizer's patterns contains, read off Presidio's
# patterns: a text without it cannot match, and the recognizer's scans (the costliest
# work on prose without PII: 0.3 ms a KB for the first four) are skipped. Where
# Presidio's pattern says `[0-9]` or a literal, so does the prefilter. Where it says
# `\d` or relies on case-insensitive letters, Presidio's `regex` engine reads Unicode
# by its own, newer tables than `re`'s: the prefilter then also lets through a
# non-ASCII character at that place (`_DIGIT`, `_LETTER`, `_HEX`), or any text with one
# (`_OR_NON_ASCII`), so it can never skip what `regex` would match. On 1,000 corpus
# documents a document gets 2.0 of these 16 recognizers' scans (13.8 when only the
# first four were prefiltered, 5.1 when each required one character or two in a row).
# tests/test_recognizer_equivalence.py holds each to what Presidio's own finds.
_OR_NON_ASCII = r"|[^\x00-\x7f]"
_HEX = r"(?:[0-9A-Fa-f]|[^\x00-\x7f])"
# Where Presidio's `\d` or a case-insensitive letter stands at one place of a match, the
# prefilter reads that place as an ASCII one or any non-ASCII character (not the whole
# text as soon as it holds one: names with accents are common).
_DIGIT = r"(?:[0-9]|[^\x00-\x7f])"
_LETTER = r"(?:[A-Za-z]|[^\x00-\x7f])"
_REQUIRED = {
    # `\d{3}` after one of these (the first group of every card pattern)
    "CreditCardRecognizer": rf"[13456]{_DIGIT}{{3}}",
    # 123-45-6789, 12345-6789, 123456789: three digits, maybe a - or . or space, two more
    "UsSsnRecognizer": r"[0-9]{3}[- .]?[0-9]{2}",
    "IbanRecognizer": rf"{_LETTER}{{2}}[0-9]{{2}}",  # country, check digits
    "IpRecognizer": r"[0-9]\.[0-9]|:",  # IPv4 "1.2": an octet, a dot, an octet; IPv6 ":"
    "UsBankRecognizer": r"[0-9]{8}",  # [0-9]{8,17}
    "UsPassportRecognizer": r"[0-9]{8}",  # [0-9]{9} or [A-Z][0-9]{8}
    "NhsRecognizer": r"[0-9]{3}[- ]?[0-9]{3}",  # [0-9]{3}[- ]?[0-9]{3}[- ]?[0-9]{4}
    # a letter (or the `]` of a typo in one alternative) then a digit, a digit then a
    # letter, or six digits: the weakest alternatives are [A-Z][0-9]{1,12}, [0-9]{7,8}[A-Z]
    # and [0-9]{6,14}
    "UsLicenseRecognizer": rf"(?:{_LETTER}|\])[0-9]|[0-9]{_LETTER}|[0-9]{{6}}",
    "UsItinRecognizer": rf"9{_DIGIT}{{2}}",  # every pattern starts 9\d{2}
    "CryptoRecognizer": rf"(?:[Bb][Cc]1|[13])(?:{_LETTER}|[0-9]){{25}}",
    "EmailRecognizer": r"@",  # [@]
    "MedicalLicenseRecognizer": rf"{_DIGIT}{{7}}",  # ...\d{7}
    # every date pattern has a digit beside its separator: 12/31, 2024-01, 31.12, 05-JAN,
    # JAN-24
    "DateRecognizer": rf"{_DIGIT}[-/.]|[-/.]{_DIGIT}",
    "MacAddressRecognizer": rf"{_HEX}{{2}}[:-]|{_HEX}{{4}}\.",
    "UuidRecognizer": rf"{_HEX}{{8}}-",
    # every URL pattern holds "[.]" then a top-level domain, each starting with a letter
    "UrlRecognizer": r"\.(?:[A-Za-z]" + _OR_NON_ASCII + ")",
}


def _skip_texts_without(recognizer: Any, required: str) -> None:
    """Make `recognizer` answer [] at once for a text without `required` (see _REQUIRED).

    Its `analyze` is replaced on the instance, not subclassed: the instance keeps the
    configuration, name and id the registry gave it (context words are looked up by id).
    """
    needed = re.compile(required)
    analyze = recognizer.analyze

    def analyze_if_possible(text: str, *args: Any, **kwargs: Any) -> Any:
        return analyze(text, *args, **kwargs) if needed.search(text) else []

    recognizer.analyze = analyze_if_possible


def _stop_before_if_abandoned(recognizer: Any) -> None:
    """Have `recognizer` stop the inspection before it reads a text nobody waits for
    (sidecar.abandon): a recognizer's pass over a 1 MiB text takes up to seconds."""
    analyze = recognizer.analyze

    def analyze_unless_abandoned(text: str, *args: Any, **kwargs: Any) -> Any:
        abandon.check()
        return analyze(text, *args, **kwargs)

    recognizer.analyze = analyze_unless_abandoned


def predefined_recognizers(language: str) -> list[Any]:
    """Presidio's predefined recognizers for `language`, built once per process.

    They are stateless after construction, so every policy shares the same instances.
    """
    if language not in _predefined:
        registry = RecognizerRegistry(supported_languages=[language])
        registry.load_predefined_recognizers(languages=[language])
        recognizers: list[Any] = []
        for recognizer in registry.recognizers:
            if type(recognizer) is PhoneRecognizer:
                recognizers.append(FastPhoneRecognizer(supported_language=language))
            else:
                required = _REQUIRED.get(type(recognizer).__name__)
                if required is not None:
                    _skip_texts_without(recognizer, required)
                _stop_before_if_abandoned(recognizer)
                if type(recognizer).__name__ in re2_patterns.ON_RE2 \
                        and not re2_patterns.match_with_re2(recognizer):
                    raise ConfigError(f"{type(recognizer).__name__}'s patterns changed: "
                                      "see sidecar/pii/re2_patterns.py")
                recognizers.append(recognizer)
        from sidecar.pii import cards, emails, names, organizations, phones, ssn
        from sidecar.pii.addresses import StreetAddressRecognizer
        from sidecar.pii.finder import FinderRecognizer

        # Beyond Presidio (issue 18): each in its own module, its reasoning there.
        recognizers.append(StreetAddressRecognizer(supported_language=language))
        for module in (phones, emails, ssn, cards, organizations, names):
            recognizers.append(FinderRecognizer(module.ENTITY, module.NAME, module.find,
                                                supported_language=language))
        _predefined[language] = recognizers
    return _predefined[language]


# Presidio's recognizers of national personal identifiers that its default registry
# leaves out (issue 18). A policy selects one by listing its entity; it then joins that
# policy's registry only, built for the policy's language (Presidio declares some for
# "es", "it", ... only because of their context words). Chosen for a checksum or a
# distinctive shape: postcodes, vehicle plates and company numbers are not here.
COUNTRY_RECOGNIZERS = {
    "UK_NINO": "UkNinoRecognizer", "IT_FISCAL_CODE": "ItFiscalCodeRecognizer",
    "ES_NIF": "EsNifRecognizer", "ES_NIE": "EsNieRecognizer", "IN_PAN": "InPanRecognizer",
    "IN_AADHAAR": "InAadhaarRecognizer", "AU_TFN": "AuTfnRecognizer",
    "AU_MEDICARE": "AuMedicareRecognizer", "SG_NRIC_FIN": "SgFinRecognizer",
    "PL_PESEL": "PlPeselRecognizer", "FI_PERSONAL_IDENTITY_CODE":
    "FiPersonalIdentityCodeRecognizer", "SE_PERSONNUMMER": "SePersonnummerRecognizer",
    "CA_SIN": "CaSinRecognizer",
}
_country: dict[tuple[str, str], Any] = {}
# What every match of each country recognizer's patterns holds (as _REQUIRED above, read
# off Presidio's patterns; `\\d` where Presidio writes `\\d`, which also matches other
# scripts' digits, `[0-9]` where it writes that): most texts have no such digit run and
# then cost one search instead of the recognizer's scans. A test checks, on generated
# identifiers and on both corpora, that the prefilter never hides a finding.
_COUNTRY_REQUIRED = {
    "UK_NINO": r"[0-9]{2}", "IT_FISCAL_CODE": r"[^\W_]{16}", "ES_NIF": r"[0-9]{7}",
    "ES_NIE": r"[0-9]{7}", "IN_PAN": r"[0-9]{4}", "IN_AADHAAR": r"[0-9]{4}",
    "AU_TFN": r"\d{3}", "AU_MEDICARE": r"\d{4}", "SG_NRIC_FIN": r"[0-9]{7}",
    "PL_PESEL": r"[0-9]{11}", "FI_PERSONAL_IDENTITY_CODE": r"\d{6}",
    "SE_PERSONNUMMER": r"\d{6}", "CA_SIN": r"\d{3}",
}


def country_recognizer(entity: str, language: str) -> Any:
    """Presidio's recognizer for `entity` (a COUNTRY_RECOGNIZERS key), built once."""
    key = (entity, language)
    if key not in _country:
        from presidio_analyzer import predefined_recognizers as presidio

        kind = getattr(presidio, COUNTRY_RECOGNIZERS[entity])
        # Weak patterns (score < 0.3: "any ten letters and digits" for IN_PAN) match
        # ordinary ids and exist to be raised by context: they are left out, unless a
        # recognizer has only weak ones (IN_AADHAAR, AU_TFN, AU_MEDICARE), whose
        # checksum then decides (Presidio scores a failed checksum 0, a passed one 1).
        strong = [pattern for pattern in kind.PATTERNS if pattern.score >= 0.3]
        recognizer = kind(patterns=strong or list(kind.PATTERNS), supported_language=language)
        _skip_texts_without(recognizer, _COUNTRY_REQUIRED[entity])
        _country[key] = recognizer
    return _country[key]


class CachedRegistry(RecognizerRegistry):
    """Presidio's registry, answering `get_recognizers` from a cache.

    Presidio recomputes the answer on every analysis by testing every asked entity
    against every recognizer: 35 entities by 36 recognizers is 1,260 tests a text, a
    quarter of a millisecond -- 5% of an inspection, and it grows with the square of
    what a policy lists. A policy's registry and entity list do not change between
    requests, so the answer is computed once per (language, entities) and dropped
    whenever a recognizer is added or removed. Requests with ad-hoc recognizers (we
    send none) are not cached.

    The answer comes in the order the recognizers were registered (Presidio's, ours,
    the country ones, the policy's), not Presidio's: it returns `list(set(...))`, in an
    order set by the objects' addresses, so it differed between processes. The order
    decides which of two recognizers that found the same entity, span and score keeps
    the finding (`remove_duplicates` keeps the first), and so what `explain` names: a
    card number was CreditCardRecognizer's in one worker and SeparatedCardRecognizer's
    in the other. Findings themselves did not change with the order (1,310 corpus
    texts, registered and reversed order); their explanations now never do.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers: dict[tuple[str, tuple[str, ...] | None, bool], list[Any]] = {}

    def add_recognizer(self, recognizer: Any) -> None:
        self._answers = {}
        super().add_recognizer(recognizer)

    def remove_recognizer(self, *args: Any, **kwargs: Any) -> None:
        self._answers = {}
        super().remove_recognizer(*args, **kwargs)

    def get_recognizers(self, language: str, entities: list[str] | None = None,
                        all_fields: bool = False,
                        ad_hoc_recognizers: list[Any] | None = None) -> list[Any]:
        if ad_hoc_recognizers:
            return self._registered_first(super().get_recognizers(
                language, entities, all_fields, ad_hoc_recognizers))
        key = (language, tuple(entities) if entities is not None else None, all_fields)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = self._registered_first(
                super().get_recognizers(language, entities, all_fields))
        return list(answer)

    def _registered_first(self, recognizers: list[Any]) -> list[Any]:
        """`recognizers` in registration order (ad-hoc ones, which we never send, after)."""
        position = {id(recognizer): index for index, recognizer in enumerate(self.recognizers)}
        return sorted(recognizers, key=lambda recognizer: position.get(id(recognizer),
                                                                       len(position)))


def build_registry(language: str, custom: list[CustomRecognizer],
                   entities: Iterable[str] = ()) -> Any:
    """Presidio's and our recognizers, the country recognizers of `entities`, and the
    policy's own."""
    registry = CachedRegistry(supported_languages=[language])
    for recognizer in predefined_recognizers(language):
        registry.add_recognizer(recognizer)
    for entity in sorted(set(entities) & set(COUNTRY_RECOGNIZERS)):
        registry.add_recognizer(country_recognizer(entity, language))
    for index, spec in enumerate(custom):
        registry.add_recognizer(Re2Recognizer(spec, index, language))
    return registry


def presidio_entities(language: str) -> set[str]:
    """Entity types Presidio can detect for `language` without policy recognizers, as
    the built recognizers say (sidecar.pii.entities.known_entities has them written
    out, so that compiling a policy need not build them)."""
    found: set[str] = set(COUNTRY_RECOGNIZERS)
    for recognizer in predefined_recognizers(language):
        found.update(recognizer.supported_entities)
    return found
