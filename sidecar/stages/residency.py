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
(`residency.region_name`). Attributes a rule compares are guarded the same way: a
name or value with an invisible, control or blank character inside, or (when every
value the policy lists is plain ASCII) a non-ASCII one such as `premium` spelt with a
Cyrillic er (U+0440) for its `p`, would match no rule as written and fall through,
so it is blocked (`residency.attribute_value`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from sidecar import tags
from sidecar.policy.matching import REGION_NAME, any_glob, fold
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


# Printable ASCII without blanks: what an attribute name or value of a policy written in
# ASCII looks like once folded.
_PLAIN_ASCII = re.compile(r"[!-~]+")


def _plain(value: str, ascii_only: bool) -> bool:
    """Whether a folded attribute name or value can only mean what it shows."""
    if ascii_only:
        return bool(_PLAIN_ASCII.fullmatch(value))
    return not any(unicodedata.category(char)[0] in "CZM" for char in value)


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
                   tuple((fold(key), folded(values)) for key, values in when.attributes.items()))


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
        # Attribute names the rules compare → whether every value they accept is ASCII.
        compared: dict[str, bool] = {}
        for when in self._when:
            for key, accepted in when.attributes if when is not None else ():
                compared[key] = compared.get(key, True) and all(
                    glob.isascii() for glob in accepted)
        self._compared = compared
        self._ascii_names = all(key.isascii() for key in compared)

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
                f"{disguised} holds an invisible, control or blank character, or a letter "
                "outside the characters the policy's values use: refused rather than "
                "matched against no rule"))
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
        """What of the request's attributes the rules could not read as written: "" when
        all is plain. Names the attribute only when it is one the policy names."""
        if not self._compared:
            return ""
        for key, value in attributes.items():
            ascii_only = self._compared.get(key)
            if ascii_only is None:
                if not _plain(key, self._ascii_names):
                    return "a request attribute name"
                continue
            if value and not _plain(value, ascii_only):
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
                   {fold(key): fold(value) for key, value in inspection.attributes},
                   frozenset(found))


def _holds(when: _When, facts: _Facts) -> bool:
    attributes = facts.attributes
    return ((not when.tenants or any_glob(facts.tenant, when.tenants))
            and (not when.apps or any_glob(facts.app, when.apps))
            and (not when.user_regions or any_glob(facts.user_region, when.user_regions))
            and (not when.data_classes or bool(when.data_classes & facts.found))
            and all(key in attributes and any_glob(attributes[key], accepted)
                    for key, accepted in when.attributes))
