"""Data-residency stage: where may this request be processed?

Runs last, when the content and PII stages have said what kinds of data the request
holds. Rules map facts (tenant, app, user region, request attributes, data classes
found) to tags; the first rule that matches wins and a default rule always exists. The
tags are signed (sidecar.tags) so a gateway can route on them without trusting the app.
A request that names a `target_region` outside the allowed regions is blocked.

Tenants, apps, regions and attributes match case-insensitively (sidecar.policy.
matching.fold): `EU-WEST-1` meets `eu-*`. A region that is still not a plain ASCII
region name once folded (a Cyrillic letter, a space inside) matches no rule as
written, so it could only fall through to a more permissive one: it is blocked instead
(`residency.region_name`). Attribute names and values are words people write
(`free trial`, `cc 1001`, accented, in any script): runs of blanks inside fold to one
space, and they match, or not, as folded text. Only what hides a difference from what
it shows is blocked (`residency.attribute_value`), since it would match no rule as
written and fall through: an invisible or control character, a combining mark on
nothing, or a look-alike letter of another script inside a word (`premium` spelt with
a Cyrillic er, U+0440, for its `p`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from sidecar import tags
from sidecar.content.normalize import clean, renders_as_nothing
from sidecar.policy.matching import REGION_NAME, any_glob, fold, fold_words
from sidecar.policy.model import ResidencyCondition, ResidencyConfig, ResidencyRule
from sidecar.types import Finding, Inspection, Prior, StageResult, Violation

# Entity types (Presidio's names) and content categories → data classes. A policy's
# `residency.data_classes` is merged over these.
DEFAULT_DATA_CLASSES = {
    **dict.fromkeys(["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "LOCATION", "IP_ADDRESS",
                     "NRP", "US_SSN", "US_PASSPORT", "US_DRIVER_LICENSE", "US_ITIN",
                     "MAC_ADDRESS"], "personal"),
    **dict.fromkeys(["CREDIT_CARD", "IBAN_CODE", "US_BANK_NUMBER", "CRYPTO"], "financial"),
    **dict.fromkeys(["MEDICAL_LICENSE", "UK_NHS"], "health"),
    **dict.fromkeys(["secrets"], "credentials"),
}


# A run of letters and digits: where a look-alike of another script would hide.
_WORD = re.compile(r"[^\W_]+")
# Scripts written together in one word (Japanese mixes these): not a disguise.
_EAST_ASIAN = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL"})


def _script(char: str) -> str:
    script = unicodedata.name(char, "?").split(" ", 1)[0]
    return "CJK" if script in _EAST_ASIAN else script


def disguised_text(folded: str) -> bool:
    """Whether a folded attribute name or value hides a difference from what it shows.

    Only what hides one counts: an invisible or control character (the content stage's
    set, sidecar.content.normalize), a combining mark on nothing (at the start, after a
    blank or a symbol), and a word that mixes scripts with a letter the clean view folds
    to a Latin letter or digit (`\u0440remium`, a Cyrillic er for the `p`). A space, an
    accent, punctuation or a word wholly in another script shows what it is: such a
    value matches, or does not, as folded text (`free trial`, `büsiness`, a Russian
    word).
    """
    if folded.isascii():
        return any(not char.isprintable() and not char.isspace() for char in folded)
    previous = " "
    for char in folded:
        if renders_as_nothing(char):
            return True
        if unicodedata.category(char) in ("Mn", "Me") and not (
                previous.isalnum() or unicodedata.category(previous) in ("Mn", "Me")):
            return True
        previous = char
    for word in _WORD.findall(folded):
        if word.isascii():
            continue
        letters = [char for char in word if char.isalpha()]
        if len({_script(char) for char in letters}) > 1 and any(
                not char.isascii() and _script(char) != "LATIN" and _look_alike(char)
                for char in letters):
            return True
    return False


@functools.cache
def _look_alike(char: str) -> bool:
    """Whether the clean view reads a letter as a Latin letter or digit (Cyrillic er,
    U+0440, as `p`; Greek omicron as `o`; Cyrillic be, U+0431, as `6`)."""
    view = clean(char).text
    return len(view) == 1 and view.isascii() and view.isalnum()


@dataclass(frozen=True)
class _When:
    """A rule's condition with every glob folded once, at compile time."""

    tenants: tuple[str, ...]
    apps: tuple[str, ...]
    user_regions: tuple[str, ...]
    data_classes: frozenset[str]
    attributes: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(cls, when: ResidencyCondition) -> _When:
        def folded(values: list[str]) -> tuple[str, ...]:
            return tuple(fold(value) for value in values)

        return cls(folded(when.tenants), folded(when.apps), folded(when.user_regions),
                   frozenset(when.data_classes),
                   tuple((fold_words(key), tuple(fold_words(value) for value in values))
                         for key, values in when.attributes.items()))


class ResidencyStage:
    name = "residency"

    def __init__(self, config: ResidencyConfig, tag_key: bytes) -> None:
        self.rules: tuple[ResidencyRule, ...] = tuple(config.rules)
        self._when = tuple(_When.of(rule.when) if rule.when is not None else None
                           for rule in self.rules)
        self._allowed = tuple(tuple(fold(r) for r in rule.allowed_regions)
                              for rule in self.rules)
        self.classes = {**DEFAULT_DATA_CLASSES, **config.data_classes}
        self._key = tag_key
        # Attribute names the rules compare.
        self._compared = frozenset(key for when in self._when if when is not None
                                   for key, _ in when.attributes)

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def run(self, inspection: Inspection, prior: Prior = ()) -> StageResult:
        kinds = {item.entity_type if isinstance(item, Finding) else item.category
                 for item in prior}
        found = sorted({self.classes[kind] for kind in kinds if kind in self.classes})
        facts = _Facts.of(inspection, found)
        index = next(i for i, when in enumerate(self._when)
                     if when is None or _holds(when, facts))
        rule = self.rules[index]
        result = StageResult()
        result.routing_tags = tags.sign(self._key, inspection.request_id, {
            "residency": rule.residency,
            "allowed_regions": ",".join(rule.allowed_regions),
            "data_classes": ",".join(found),
            "residency_rule": rule.id,
        })
        unnamed = [name for name, value in (("user_region", facts.user_region),
                                            ("target_region", facts.target_region))
                   if value and not REGION_NAME.fullmatch(value)]
        if unnamed:
            result.blocked = True
            result.violations.append(Violation(
                "residency.region_name", "residency",
                f"{' and '.join(unnamed)} is not a region name (ASCII letters, digits, "
                "'-', '_', '.'; case does not matter): refused rather than matched against "
                "no rule"))
        disguised = self._disguised(facts.attributes)
        if disguised:
            result.blocked = True
            result.violations.append(Violation(
                "residency.attribute_value", "residency",
                f"{disguised} holds an invisible or control character, a combining mark on "
                "nothing, or a look-alike letter of another script inside a word: refused "
                "rather than matched against no rule"))
        target = inspection.target_region
        if target and not unnamed and not any_glob(facts.target_region, self._allowed[index]):
            if rule.shadow:
                result.would_block = True
            else:
                result.blocked = True
            result.violations.append(Violation(
                "residency.target_region", "residency",
                f"target region '{target[:64]}' is not among the allowed regions "
                f"'{','.join(rule.allowed_regions)}' (rule '{rule.id}', residency "
                f"{rule.residency}{', in shadow' if rule.shadow else ''})", shadow=rule.shadow))
        return result

    def _disguised(self, attributes: dict[str, str]) -> str:
        """What of the request's attributes hides a difference from what it shows (see
        `disguised_text`): "" when nothing does. Names the attribute only when it is
        one the policy names."""
        if not self._compared:
            return ""
        for key, value in attributes.items():
            if key not in self._compared:
                if disguised_text(key):
                    return "a request attribute name"
                continue
            if disguised_text(value):
                return f"request attribute '{key[:64]}'"
        return ""


@dataclass(frozen=True)
class _Facts:
    """What the request says, folded as the rules are."""

    tenant: str
    app: str
    user_region: str
    target_region: str
    attributes: dict[str, str]
    found: frozenset[str]

    @classmethod
    def of(cls, inspection: Inspection, found: list[str]) -> _Facts:
        return cls(fold(inspection.tenant), fold(inspection.app), fold(inspection.user_region),
                   fold(inspection.target_region),
                   {fold_words(key): fold_words(value)
                    for key, value in inspection.attributes},
                   frozenset(found))


def _holds(when: _When, facts: _Facts) -> bool:
    attributes = facts.attributes
    return ((not when.tenants or any_glob(facts.tenant, when.tenants))
            and (not when.apps or any_glob(facts.app, when.apps))
            and (not when.user_regions or any_glob(facts.user_region, when.user_regions))
            and (not when.data_classes or bool(when.data_classes & facts.found))
            and all(key in attributes and any_glob(attributes[key], accepted)
                    for key, accepted in when.attributes))
