"""Building blocks of the PII stage: spaCy loading, recognizers and operators."""


def warm() -> None:
    """Build every PII detector's tables and compiled patterns now, once per process.

    Each is built on first use otherwise, and paid by the request that first reaches it:
    the address patterns alone are ~0.4 s of CPU, reached through the name cues by a
    worker's first multi-line request even when a policy does not ask for addresses.
    `Pipeline.prepare` calls this; tests/test_pipeline.py fails on a detector cache it
    leaves empty.
    """
    from sidecar.pii import addresses, cards, disguise, emails, names, phones, recognizers, ssn
    from sidecar.pii.internals import phone_matcher_constants

    addresses._patterns()
    cards._pattern()
    disguise._table()
    for escapes in (False, True):
        for astral in (False, True):
            disguise._pattern(escapes, astral)
    emails._patterns()
    names._patterns()
    names._record_patterns()
    names._introduction_patterns()
    names._name_word()
    phones._candidates()
    phones._word_regions()
    recognizers.bounded_matcher()
    ssn._pattern()
    phone_matcher_constants()
