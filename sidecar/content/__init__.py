"""Blocked content: word lists, patterns and built-in detectors over a normalized view."""


def warm() -> None:
    """Build the normalizer's look-alike tables now (~0.1-0.2 s of CPU, once per process),
    not on the first request with an accented or look-alike letter (`Pipeline.prepare`)."""
    from sidecar.content import normalize

    normalize._char_table()
    normalize._lettered()
    normalize._homoglyphs()
