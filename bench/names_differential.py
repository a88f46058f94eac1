"""Names found now and not by an earlier revision (and the reverse), over real prose.

    .venv/bin/python bench/names_differential.py [REV]      # default: 8b37035

A precision check for the name cues of `sidecar.pii.names` that needs no labels: the
paragraphs of every README, METADATA and text file of the installed packages (and of
/usr/share/doc) go through REV's `find` and this tree's; each span one finds and the
other does not is printed with its context. Those documents hold almost no personal
names, so a span only this tree finds is most likely a new false positive. Round 11,
against 8b37035 (before the self-introduction cue): 19,689 paragraphs of 852 files, six
new spans, all names written as examples (`My name is Inigo Montoya`), none lost.
"""

from __future__ import annotations

import collections
import glob
import importlib.util
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def paragraphs() -> list[str]:
    site = sysconfig.get_paths()["purelib"]
    files = [name for pattern in ("**/*.md", "**/*.rst", "**/*.txt", "**/METADATA")
             for name in sorted(glob.glob(f"{site}/{pattern}", recursive=True))]
    files += sorted(glob.glob("/usr/share/doc/**/*.txt", recursive=True))[:2000]
    found = []
    for name in files:
        try:
            text = Path(name).read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        found += [part for part in text.split("\n\n") if 20 < len(part) < 4000]
    print(f"{len(files)} files, {len(found)} paragraphs", flush=True)
    return found


def main() -> None:
    from sidecar.pii import names

    revision = sys.argv[1] if len(sys.argv) > 1 else "8b37035"
    source = subprocess.run(["git", "show", f"{revision}:sidecar/pii/names.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "names_then.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("names_then", path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"cannot load {revision}'s names.py")
        then = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(then)
    counts: dict[str, collections.Counter[str]] = {"now only": collections.Counter(),
                                                   "then only": collections.Counter()}
    context: dict[str, str] = {}
    for text in paragraphs():
        before = {(start, end) for start, end, _, _ in then.find(text)}
        after = {(start, end) for start, end, _, _ in names.find(text)}
        for side, spans in (("now only", after - before), ("then only", before - after)):
            for start, end in spans:
                counts[side][text[start:end]] += 1
                context.setdefault(side + text[start:end],
                                   text[max(0, start - 60):end + 40].replace("\n", "\\n"))
    for side, counter in counts.items():
        print(f"{side}: {sum(counter.values())} spans")
        for span, count in counter.most_common(60):
            print(f"  {count:4d} {span!r:30} ... {context[side + span]!r}")


if __name__ == "__main__":
    main()
