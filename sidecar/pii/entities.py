"""Entity type names, for what must know them without running Presidio or spaCy.

Compiling a policy checks its entity names and decides whether it needs the NER model.
The front process of `guardrail serve` compiles every policy but never inspects (its
workers do), and `guardrail policy check` only compiles: reading the names from Presidio
cost ~1.7 CPU-s of imports (Presidio imports spaCy) plus building every predefined
recognizer, and left spaCy in the front's memory. The names are written here instead;
tests/test_pipeline.py checks them against what Presidio and our recognizers actually
detect, so an upgrade that adds or renames an entity fails a test, not a policy.
"""

from __future__ import annotations

# Labels of the model that map to Presidio entity types: Presidio's own default mapping,
# restricted to spaCy's label set. FAC (buildings, roads, bridges) is deliberately absent,
# as in Presidio: mapping it to LOCATION raised recall on the benchmark corpus by 0.007
# but lowered character precision by 0.004 (en_core_web_sm tags band and song names FAC).
NER_ENTITY_MAPPING = {
    "PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "LOC": "LOCATION",
    "GPE": "LOCATION", "LOCATION": "LOCATION", "ORG": "ORGANIZATION",
    "ORGANIZATION": "ORGANIZATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME",
}
NER_ENTITIES = frozenset(NER_ENTITY_MAPPING.values())

# sidecar.pii.recognizers.presidio_entities(language), written out: Presidio's predefined
# recognizers (presidio-analyzer 2.2.366), the national ones a policy may select, and
# ours (issue 18).
KNOWN_ENTITIES = {
    "en": frozenset({
        "AU_MEDICARE", "AU_TFN", "CA_SIN", "CREDIT_CARD", "CRYPTO", "DATE_TIME",
        "EMAIL_ADDRESS", "ES_NIE", "ES_NIF", "FI_PERSONAL_IDENTITY_CODE", "IBAN_CODE",
        "IN_AADHAAR", "IN_PAN", "IP_ADDRESS", "IT_FISCAL_CODE", "LOCATION", "MAC_ADDRESS",
        "MEDICAL_LICENSE", "NRP", "ORGANIZATION", "PERSON", "PHONE_NUMBER", "PL_PESEL",
        "SE_PERSONNUMMER", "SG_NRIC_FIN", "STREET_ADDRESS", "UK_NHS", "UK_NINO", "URL",
        "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_ITIN", "US_PASSPORT", "US_SSN", "UUID",
    }),
}


def known_entities(language: str) -> set[str]:
    """Entity types detectable for `language` without policy recognizers."""
    if language in KNOWN_ENTITIES:
        return set(KNOWN_ENTITIES[language])
    from sidecar.pii.recognizers import presidio_entities  # the slow, sure way

    return presidio_entities(language)
