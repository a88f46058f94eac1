"""Precision rules: findings that are almost never personal data, dropped by their shape.

Every rule here was prompted by a false finding a user reported (issue 18) and is written
as a rule about the *shape* of a finding, not about the example, so it holds for the
whole family:

- `ner_shape` (PERSON, LOCATION from the NER model; organisation names do hold digits
  and inner capitals): a name holds a letter -- of any script; this part judges
  ORGANIZATION and NRP too (outside trial: the model took the regional-indicator
  symbols of flags, "🇺🇸🇬🇧", for people and places, and replacing them split the
  flags) -- and it holds no digit and none of `_ = / @ < > { } [ ] |`
  ("user4", "Outlook 16.0", "P2",
  "shared_buffers=4GB", "Raspberry Pi 4"), and has no capital inside a word after
  lower-case letters ("OpenAI", "CrashLoopBackOff", "iPhone", "GitHub") unless that
  is how surnames are built (Mc, Mac, O', De, Di, Da, Du, La, Le, Van, Von, Fitz:
  "McDonald", "DeShawn", "MacLeod" stay).
- `ner_stop_words` (PERSON, LOCATION): a finding that is one word of `NOT_NAMES` —
  common words a sentence starts with or a product is called ("Email", "Café",
  "Config", "Python", "Docker") — is not a name. A policy adds its own words with
  `pii.precision.not_names` and takes words out with `pii.precision.names`.
- `ip_not_host` (IP_ADDRESS): `0.0.0.0`, loopback and broadcast identify no one; a
  dotted quad with a version word within four words of it ("Version 10.2.3.4",
  "firmware 4.2.1.17", "upgrade ... to 10.4.0.1") is a version string.
- `phone_shape` (PHONE_NUMBER): a single-dot number ("1234567.891") is a decimal; a
  span that another recognizer has validated as an identifier with a check digit
  (UK_NHS, US_SSN, CREDIT_CARD, IBAN_CODE, AU_TFN, ...) is that identifier, not a
  phone ("NHS number 706 589 4819").
- `date_vague` (DATE_TIME): the NER model tags every time expression, but only one that
  names a date or a time can help identify someone. Dropped: an expression with no
  digit and no month or weekday name ("last month", "this morning", "the weekend",
  "a few months ago", "tomorrow", "quarterly"), a duration ("5 working days",
  "30 seconds", "the first three months", "8+ years"; "6 weeks ago" stays: it dates
  an event) and a decade ("the 60s"). Kept: dates, years, months, weekdays ("last
  Monday"), times ("3pm", "9:15"), ages ("45-year-old") and bare numbers: the model
  calls some card numbers, postcodes and ages a date, and dropping them would let
  those through.

Each rule has an id; `pii.precision.disable: [ids]` switches it off for a policy.

Before the rules judge a PERSON or LOCATION finding, it is cut at line breaks, real or
escaped as in JSON (`\\n`), and each line is judged on its own: no name spans lines,
and the model often runs one entity over a block ("Paul Waechter\\n\\nJestetten\\nGermany",
"Aurora Strømsnes\\n\\n475"). Judged whole, such a finding failed `ner_shape` (a digit,
or "r\\nJ" read as an inner capital) and the name in it went unredacted: the sidecar's
recall on the evaluator corpus fell below vanilla Presidio's (0.779 against 0.782).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import Any

# Where Presidio's results name their recognizer (`RecognizerResult.RECOGNIZER_NAME_KEY`,
# written out so compiling a policy imports no Presidio; sidecar.pii.internals checks it
# against the installed Presidio before any inspection).
RECOGNIZER_NAME_KEY = "recognizer_name"
RULES = ("ner_shape", "ner_stop_words", "ip_not_host", "phone_shape", "date_vague")
# Organisation names do hold digits and inner capitals ("3M", "OpenAI"): only people and
# places are judged by their shape.
NER_TYPES = frozenset({"PERSON", "LOCATION"})
# ... but every name the model finds holds a letter (only the model's findings: a
# policy's own recognizer may well find an organisation by a number).
NAMED_TYPES = NER_TYPES | {"ORGANIZATION", "NRP"}
# Identifiers whose recognizers check a checksum or a strict format.
CHECKED_IDS = frozenset({"UK_NHS", "US_SSN", "CREDIT_CARD", "IBAN_CODE", "AU_TFN", "AU_ABN",
                         "AU_ACN", "AU_MEDICARE", "IN_AADHAAR", "SG_NRIC_FIN", "ES_NIF",
                         "IT_FISCAL_CODE", "UK_NINO", "IN_PAN", "US_ITIN"})

# Single words taken for a person or a place that are, in prompts, almost always
# ordinary words or product names. Lower case; compared case-insensitively.
NOT_NAMES = frozenset([
    "email", "e-mail", "mail", "inbox", "subject", "re", "fwd", "hi", "hello", "hey", "dear",
    "thanks", "thank", "regards", "cheers", "please", "kindly", "sorry", "ok", "okay", "yes",
    "no", "note", "notes", "update", "upgrade", "version", "release", "build", "config",
    "configuration", "settings", "format", "error", "errors", "warning", "debug", "info",
    "log", "logs", "report", "summary", "summarise", "summarize", "translate", "rewrite",
    "draft", "write", "explain", "compare", "list", "ticket", "issue", "bug", "feature",
    "request", "order", "invoice", "receipt", "account", "password", "login", "café", "cafe",
    "latte", "espresso", "cappuccino", "menu", "pizza", "sushi", "python", "java",
    "javascript", "typescript", "rust", "golang", "kotlin", "swift", "ruby", "perl", "php",
    "scala", "docker", "kubernetes", "helm", "terraform", "ansible", "grafana", "prometheus",
    "kibana", "elasticsearch", "postgres", "postgresql", "mysql", "sqlite", "redis", "mongodb",
    "kafka", "nginx", "apache", "linux", "ubuntu", "debian", "windows", "macos", "android",
    "ios", "excel", "outlook", "word", "powerpoint", "teams", "slack", "jira", "confluence",
    "github", "gitlab", "bitbucket", "jenkins", "shopify", "stripe", "salesforce", "zendesk",
    "notion", "figma", "chatgpt", "openai", "anthropic", "claude", "gemini", "copilot",
    "llama", "mistral", "udp", "tcp", "http", "https", "api", "sql", "json", "yaml", "xml",
    "csv", "pdf", "html", "css", "url", "dns", "ssh", "ssl", "tls"
])

# Line breaks as text holds them: real ones, and JSON's escaped ones ("\\n", "\\r\\n").
_LINE_BREAKS = re.compile(r"(?:[ \t]*(?:\r?\n|\\r\\n|\\n|\\r)[ \t]*)+")
_NOT_IN_A_NAME = re.compile(r"[\d_=/@<>{}\[\]|]")
_NAME_PREFIXES = frozenset({"mc", "mac", "o", "de", "di", "da", "du", "la", "le", "van",
                            "von", "fitz", "d", "st"})
_VERSION_WORDS = frozenset({"version", "versions", "ver", "v", "firmware", "build",
                            "release", "upgrade", "upgraded", "update", "updated",
                            "rollback", "downgrade", "patch", "sdk", "fw", "bios",
                            "kernel", "semver"})
_WORD = re.compile(r"[^\W_]+")
_IP_NOBODY = re.compile(r"0\.0\.0\.0|127\.\d+\.\d+\.\d+|255\.255\.255\.255|::1?")
_DECIMAL = re.compile(r"\d+\.\d+")
# Names that date an expression: months and weekdays (English, with abbreviations),
# and the two times of day that are names.
_DATING = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|"
    r"april|june|july|august|september|october|november|december|mon|tue|tues|wed|thu|"
    r"thur|thurs|fri|sat|sun|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"mondays|tuesdays|wednesdays|thursdays|fridays|saturdays|sundays|noon|midnight)\b")
_AMOUNT = (r"(?:\d+(?:st|nd|rd|th)?|\d+\+|a|an|one|two|three|four|five|six|seven|eight|"
           r"nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|sixty|ninety|hundred|"
           r"few|several|couple|half|many)")
_DURATION = re.compile(
    r"(?:(?:about|around|approximately|over|under|within|for|almost|nearly|only|just|"
    r"at least|up to|the|first|last|next|past|another|more than|less than|of|and|a|an|"
    rf"business|working|calendar|full|whole|consecutive|{_AMOUNT})[\s-]+)*"
    rf"{_AMOUNT}[\s-]*(?:(?:business|working|calendar|full|whole|consecutive)[\s-]+)?"
    r"(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|nights?|weeks?|wks?|fortnights?|"
    r"months?|quarters?|years?|yrs?|decades?)")
_DECADE = re.compile(r"(?:the\s+)?(?:early\s+|late\s+|mid-?\s*)?(?:19|20)?\d0'?s")


def _has_letter(value: str) -> bool:
    """Whether `value` holds a letter of any script (not a digit of any kind, a mark, a
    symbol: `re`'s \\w also takes "¹" and "½")."""
    return any(character.isalpha() for character in value)


def _camel(value: str) -> bool:
    """A capital after lower-case letters inside a word, unless those letters are a
    surname prefix: "OpenAI", "iPhone", "GitHub" -- but not "McDonald", "DeShawn"."""
    for word in value.split():
        for index in range(1, len(word)):
            if word[index].isupper() and word[index - 1].islower():
                prefix = word[:index].lower().replace("'", "").replace("\u2019", "")
                if prefix not in _NAME_PREFIXES:
                    return True
    return False


def _vague_date(value: str) -> bool:
    """A DATE_TIME finding that dates nothing (see `date_vague` above)."""
    folded = " ".join(value.lower().replace("\\n", " ").split()).strip(" .,:;!?()'\"")
    if not any(char.isdigit() for char in folded):
        return not _DATING.search(folded)
    return bool(_DURATION.fullmatch(folded) or _DECADE.fullmatch(folded))


def _near_version_word(text: str, start: int, end: int) -> bool:
    before = _WORD.findall(text[max(0, start - 64):start])[-4:]
    after = _WORD.findall(text[end:end + 64])[:4]
    return any(word.lower() in _VERSION_WORDS for word in before + after)


class PrecisionRules:
    """The rules above, as one policy configures them (`pii.precision`)."""

    def __init__(self, disable: Iterable[str] = (), not_names: Iterable[str] = (),
                 names: Iterable[str] = ()) -> None:
        self.enabled = frozenset(RULES) - set(disable)
        keep = {name.casefold() for name in names}
        self.not_names = frozenset(
            (NOT_NAMES | {word.casefold() for word in not_names}) - keep)

    def keeps(self, text: str, entity: str, start: int, end: int,
              validated: Sequence[tuple[int, int]] = (), *, stop_words: bool = True) -> bool:
        """False when the finding `text[start:end]` of type `entity` is not personal data
        by one of the enabled rules. `validated`: spans of CHECKED_IDS findings;
        `stop_words`: whether `ner_stop_words` is judged here (see `apply`)."""
        value = text[start:end]
        enabled = self.enabled
        if entity in NER_TYPES:
            if "ner_shape" in enabled and (not _has_letter(value)
                                           or _NOT_IN_A_NAME.search(value) or _camel(value)):
                return False
            if stop_words and "ner_stop_words" in enabled and \
                    value.strip(" .,:;!?'\"").casefold() in self.not_names:
                return False
        elif entity == "IP_ADDRESS" and "ip_not_host" in enabled:
            if _IP_NOBODY.fullmatch(value):
                return False
            if value.count(".") == 3 and _near_version_word(text, start, end):
                return False
        elif entity == "PHONE_NUMBER" and "phone_shape" in enabled:
            if _DECIMAL.fullmatch(value.strip()):
                return False
            if any(low <= start and end <= high for low, high in validated):
                return False
        elif entity == "DATE_TIME" and "date_vague" in enabled and _vague_date(value):
            return False
        return True

    def apply(self, text: str, results: list[Any]) -> list[Any]:
        """Presidio results without those the rules drop (order kept); PERSON and
        LOCATION findings are judged line by line (see the module docstring)."""
        if not self.enabled or not results:
            return results
        validated = [(r.start, r.end) for r in results if r.entity_type in CHECKED_IDS]
        kept: list[Any] = []
        for result in results:
            if "ner_shape" in self.enabled and result.entity_type in NAMED_TYPES \
                    and _from_the_model(result) \
                    and not _has_letter(text[result.start:result.end]):
                continue  # no name without a letter (a policy's own recognizers judge theirs)
            if result.entity_type in NER_TYPES and not _from_the_model(result):
                kept.append(result)  # a name recognizer's own rules decided already
            elif result.entity_type in NER_TYPES:
                # A stop word is judged on the whole finding (`Tom\nSwift` is a name, and
                # `Swift` a surname in it); the shape, line by line.
                if "ner_stop_words" in self.enabled and text[result.start:result.end].strip(
                        " .,:;!?'\"").casefold() in self.not_names:
                    continue
                kept.extend(line for line in _lines(text, result)
                            if self.keeps(text, line.entity_type, line.start, line.end,
                                          validated, stop_words=False))
            elif self.keeps(text, result.entity_type, result.start, result.end, validated):
                kept.append(result)
        return kept


def _from_the_model(result: Any) -> bool:
    """Whether spaCy's NER made this finding (PERSON, LOCATION, ORGANIZATION, NRP): the
    rules here are about what that model gets wrong (names.py and a policy's recognizers
    judge their own)."""
    metadata = result.recognition_metadata or {}
    name = metadata.get(RECOGNIZER_NAME_KEY, "SpacyRecognizer")
    return bool(name == "SpacyRecognizer")


def _lines(text: str, result: Any) -> list[Any]:
    """`result` cut at line breaks: copies of it, one per non-empty line (itself when
    it holds none)."""
    value = text[result.start:result.end]
    breaks = list(_LINE_BREAKS.finditer(value))
    if not breaks:
        return [result]
    lines, cursor = [], 0
    for found in [*breaks, None]:
        low, high = cursor, found.start() if found is not None else len(value)
        if high > low:
            line = copy.copy(result)
            line.start, line.end = result.start + low, result.start + high
            lines.append(line)
        if found is not None:
            cursor = found.end()
    return lines
