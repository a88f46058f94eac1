"""The red-team suite: every guarantee attacked as an attacker would (issue 16, 17)."""
