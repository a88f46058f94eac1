"""`explain`: why each PII finding was made, from Presidio's decision process.

Only for requests that ask (`InspectRequest.explain`, `guardrail inspect --explain`): the
analyzer is then called with `return_decision_process=True` and each result's
AnalysisExplanation becomes a sidecar.types.Explanation. A request that does not ask
costs nothing more than before: Presidio drops the explanations it built anyway, and
nothing here runs.

An explanation names the recognizer, the pattern (or the NER model), the base score,
the context words that raised it and the checksum or format validation applied. It
never carries the matched text nor the pattern's regular expression (a policy's
deny-list pattern spells out its words): the caller already has the offsets. Our own
recognizers (sidecar.pii.phones, ssn) weigh their context words inside `find`, which
does not collect them; for an explained finding they are read again here, with the
same windows.
"""

from __future__ import annotations

from typing import Any

from sidecar.types import Explanation

# What the `validate_result` of a recognizer checks, by recognizer name (Presidio's and
# ours); any other validation is a "format check".
CHECKS = {
    "CreditCardRecognizer": "Luhn checksum",
    "SeparatedCardRecognizer": "Luhn checksum",
    "IbanRecognizer": "IBAN mod-97 checksum",
    "UkNhsRecognizer": "NHS mod-11 check digit",
    "AbaRoutingRecognizer": "ABA routing checksum",
    "InAadhaarRecognizer": "Verhoeff checksum",
    "AuAbnRecognizer": "ABN check digits",
    "AuAcnRecognizer": "ACN check digit",
    "AuTfnRecognizer": "TFN check digit",
    "AuMedicareRecognizer": "Medicare check digit",
    "EsNifRecognizer": "NIF check letter",
    "EsNieRecognizer": "NIE check letter",
    "ItFiscalCodeRecognizer": "fiscal code check character",
    "PlPeselRecognizer": "PESEL check digit",
    "SgFinRecognizer": "NRIC/FIN check letter",
    "FiPersonalIdentityCodeRecognizer": "check character",
    "SePersonnummerRecognizer": "Luhn checksum",
    "CaSinRecognizer": "Luhn checksum",
    "EmailRecognizer": "public top-level domain check",
    "UrlRecognizer": "public top-level domain check",
}
# Our recognizers that only ever report what passed a check of their own.
_ALWAYS_CHECKED = {
    "SeparatedCardRecognizer": "Luhn checksum: passed",
    "BareSsnRecognizer": "SSA issuance rules: passed",
}


def explanation_of(result: Any, text: str, model: str) -> Explanation:
    """The Explanation of one Presidio RecognizerResult found in `text`."""
    from sidecar.pii import phones, ssn

    found = result.analysis_explanation
    recognizer = (found.recognizer if found is not None else "") or str(
        result.recognition_metadata.get("recognizer_name", "") if result.recognition_metadata
        else "")
    if found is None:  # a recognizer that built none: say who, nothing more
        return Explanation(recognizer=recognizer, pattern="", base_score=float(result.score))
    pattern = found.pattern_name or ""
    if not pattern and recognizer == "SpacyRecognizer":
        pattern = f"NER model {model}"
    words: tuple[str, ...] = ()
    if found.supportive_context_word:
        words = (str(found.supportive_context_word),)
    elif recognizer == phones.NAME:
        words = phones.context_words(text, result.start, result.end)
    elif recognizer == ssn.NAME:
        words = ssn.context_words(text, result.start, result.end)
    validation = _ALWAYS_CHECKED.get(recognizer, "")
    if found.validation_result is not None:
        outcome = "passed" if found.validation_result else "failed"
        validation = f"{CHECKS.get(recognizer, 'format check')}: {outcome}"
    return Explanation(
        recognizer=recognizer, pattern=pattern, base_score=float(found.original_score),
        context_words=words,
        context_improvement=round(float(found.score_context_improvement or 0.0), 6),
        validation=validation)
