"""Building blocks of the PII stage: spaCy loading, recognizers and operators."""
