"""Write policies/policy.schema.json, the JSON Schema of policy files, from the pydantic models.

    make policy-schema        # tests/test_policy_schema.py fails when it is out of date

Editors that speak the YAML language server (VS Code, IntelliJ, Neovim) pick it up from
the `# yaml-language-server: $schema=policy.schema.json` line at the top of a policy and
complete and check fields as people type.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = ROOT / "policies" / "policy.schema.json"


def generate() -> str:
    from sidecar.policy.model import Policy

    schema = Policy.model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": "https://guardrail.local/policy.schema.json",
              "title": "Guardrail sidecar policy", **schema}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    TARGET.write_text(generate())
    print(f"wrote {TARGET.relative_to(ROOT)}")
