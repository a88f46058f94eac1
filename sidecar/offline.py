"""Keep the sidecar offline: nothing it runs may reach the internet.

Presidio's email recognizer calls `tldextract.extract`, whose default extractor downloads
the public-suffix list on first use (and writes a cache under ~/.cache). Inside a pod
that either hangs on DNS or leaks the fact that we are running. We replace the module's
default extractor with one that uses only the snapshot shipped inside the package and
no disk cache. `tldextract.extract` looks the global up at call time, so this covers every
caller, including ones imported earlier.
"""

from __future__ import annotations

import os

_OFFLINE_ENV = {
    # Libraries that might otherwise try a model hub.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # tldextract honours this for any extractor built without explicit URLs.
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
}


def enforce_offline() -> None:
    """Idempotent: make tldextract (and friends) use bundled data only."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import tldextract.tldextract as tld

    if not getattr(tld.TLD_EXTRACTOR, "_guardrail_offline", False):
        extractor = tld.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
        extractor._guardrail_offline = True  # type: ignore[attr-defined]
        tld.TLD_EXTRACTOR = extractor
