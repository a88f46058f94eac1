"""Data-residency stage: where may this request be processed?

Runs last, when the content and PII stages have said what kinds of data the request
holds. Rules map facts (tenant, app, user region, request attributes, data classes
found) to tags; the first rule that matches wins and a default rule always exists. The
tags are signed (sidecar.tags) so a gateway can route on them without trusting the app.
A request that names a `target_region` outside the allowed regions is blocked.
"""

from __future__ import annotations

import fnmatch

from sidecar import tags
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


class ResidencyStage:
    name = "residency"

    def __init__(self, config: ResidencyConfig, tag_key: bytes) -> None:
        self.rules: tuple[ResidencyRule, ...] = tuple(config.rules)
        self.classes = {**DEFAULT_DATA_CLASSES, **config.data_classes}
        self._key = tag_key

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def run(self, inspection: Inspection, prior: Prior = ()) -> StageResult:
        kinds = {item.entity_type if isinstance(item, Finding) else item.category
                 for item in prior}
        found = sorted({self.classes[kind] for kind in kinds if kind in self.classes})
        rule = next(r for r in self.rules if r.when is None or _holds(r.when, inspection, found))
        result = StageResult()
        result.routing_tags = tags.sign(self._key, inspection.request_id, {
            "residency": rule.residency,
            "allowed_regions": ",".join(rule.allowed_regions),
            "data_classes": ",".join(found),
            "residency_rule": rule.id,
        })
        target = inspection.target_region
        if target and not any(fnmatch.fnmatchcase(target, allowed)
                              for allowed in rule.allowed_regions):
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


def _holds(when: ResidencyCondition, inspection: Inspection, found: list[str]) -> bool:
    def any_glob(value: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)

    attributes = dict(inspection.attributes)
    return ((not when.tenants or any_glob(inspection.tenant, when.tenants))
            and (not when.apps or any_glob(inspection.app, when.apps))
            and (not when.user_regions or any_glob(inspection.user_region, when.user_regions))
            and (not when.data_classes or bool(set(when.data_classes) & set(found)))
            and all(key in attributes and any_glob(attributes[key], accepted)
                    for key, accepted in when.attributes.items()))
