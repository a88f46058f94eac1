"""`python -m sidecar` is the `guardrail` command."""

from sidecar.cli import main

raise SystemExit(main())
