"""docs/BAD_INPUT.md from the catalogue the tests record (tests/test_bad_input.py).

    GLAN_CATALOGUE=docs/bad_input.json .venv/bin/python -m pytest tests/test_bad_input.py \\
        && .venv/bin/python scripts/bad_input_table.py [CATALOGUE.json [OUT.md]]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = {
    "config": "Configuration (command line, `conf/`, directories)",
    "model": "The teacher model",
    "taxonomy file": "`taxonomy.file`",
    "prompt templates": "`prompts.<level>` templates",
    "schemas": "Structured-output schemas",
    "runtime": "While running",
    "teacher replies": "Nonsense from the teacher",
}

HEAD = """# When something is wrong: the bad-input catalogue

Every input below was tried by `tests/test_bad_input.py`; the message is the exact line the
test saw (paths shortened: `<tmp>` is the test's scratch folder, `<run>` the run directory).
A bad input stops `glan-local` with that single line on stderr, naming the culprit (config key,
file, line) and the fix, and a non-zero exit: **2** for bad input, **1** for a fault of the
machine (a full disk), **130** when stopped by a signal. No Python traceback is printed unless
`GLAN_DEBUG=1`. Inputs in the first four sections are refused before the model loads, and the
tests check that a complete run in the same `out_dir` is left byte for byte as it was. Bad
replies of the teacher or the backend do not stop a run: the request is retried with a new
seed, and after `engine.max_attempts` it is recorded in `levels/failures.jsonl` with the reason
shown here, never turned into a row.

Sizes: a taxonomy file may hold at most 100,000 disciplines (and 64 MiB); a run may plan at most
`engine.max_planned_requests` requests (default 100,000,000, five times `breadth=paper`), counted
from the breadth and the taxonomy as an upper bound before the model loads.

Regenerate this file (run the whole test file, then the script):

```bash
GLAN_CATALOGUE=docs/bad_input.json .venv/bin/python -m pytest tests/test_bad_input.py && .venv/bin/python scripts/bad_input_table.py
```
"""


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text) -> str:
    """An inline code span that may itself hold backticks."""
    return f"`` {_cell(text)} ``"


def render(records: list[dict]) -> str:
    out = [HEAD, f"{len(records)} cases.\n"]
    for group, title in GROUPS.items():
        rows = [r for r in records if r["group"] == group]
        if not rows:
            continue
        out += [f"## {title}\n", "| input | how | message | exit |", "|---|---|---|---|"]
        for r in rows:
            out.append(f"| {_cell(r['input'])} | {_code(r['setup'])} | {_code(r['message'])} | {_cell(r['exit'])} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    src = Path(argv[0]) if argv else ROOT / "docs" / "bad_input.json"
    dst = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "BAD_INPUT.md"
    records = json.loads(src.read_text(encoding="utf-8"))
    dst.write_text(render(records), encoding="utf-8")
    print(f"{dst}: {len(records)} cases")


if __name__ == "__main__":
    main(sys.argv[1:])
