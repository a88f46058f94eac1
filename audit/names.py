"""How the audit trail compares tenant and app names: folded, as policies match them.

A policy selected for `acme` also serves a request sent as `ACME` or in fullwidth letters
(sidecar.policy.matching folds before it compares); compliance tooling that compared
names exactly would export nothing for `--tenant ACME`, and a legal hold on tenant
`ACME` would silently protect none of `acme`'s records. So every tenant or app filter
and every tenant hold compares folded names. (A copy of the sidecar's rule: `audit`
never imports `sidecar`; tests/redteam/test_audit_attacks.py checks that they agree.)
"""

from __future__ import annotations

import unicodedata


def fold(value: object) -> str:
    """NFKC, case-folded, without surrounding whitespace ("" for a non-string)."""
    if not isinstance(value, str):
        return ""
    if value.isascii():
        return value.lower().strip()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()
                                 ).strip()
