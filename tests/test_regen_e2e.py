"""Selective regeneration with the REAL engine and the embedded teacher: a small run whose
answers are mostly cut at max_tokens, then `glan-local-regen` of its cut answers with more
max_tokens. Only those asks are asked again; everything else comes from the store."""
import json
import subprocess

import pytest

from e2e import BIN, ROOT, env, run_glan
from glan_local.verify import verify

pytestmark = pytest.mark.engine


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_cut_answers_are_asked_again_with_more_max_tokens(tmp_path):
    tax = tmp_path / "disciplines.txt"
    tax.write_text("Marine Biology\n")
    out = tmp_path / "run"
    # 24 tokens: most answers of the 135M teacher are cut. If every one is, the run says so with
    # exit 3 and keeps what it made, which is what regeneration starts from either way.
    p = run_glan(out, f"taxonomy.file={tax}", "sampling.answers.max_tokens=24", "quality.enabled=false",
                 "engine.speculate_below=0", check=False)
    assert p.returncode in (0, 3), p.stderr[-3000:]
    cut = [f for f in _jsonl(out / "levels" / "failures.jsonl")
           if f["level"] == "answers" and f["reason"] == "cut at max_tokens"]
    assert cut, "no answer was cut at 24 tokens"
    before = json.loads((out / "summary.json").read_text())

    q = subprocess.run([str(BIN / "glan-local-regen"), str(out), "--level", "answers", "--reason", "cut",
                        "sampling.answers.max_tokens=384"], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=1800)
    assert q.returncode in (0, 3), q.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["regenerated"] == {"rounds": 1, "asks": len(cut)}
    for level, lv in s["levels"].items():       # every other request came from the store
        generated = lv["attempts"] - lv["from_store"]
        if level != "answers":
            assert generated == 0, level
    a = s["levels"]["answers"]
    # The other answers' attempts from the store; the cut asks' old attempts are not asked for.
    assert a["redone"] == len(cut)
    assert a["from_store"] == before["levels"]["answers"]["attempts"] - sum(f["attempts"] for f in cut)
    assert len(cut) <= a["attempts"] - a["from_store"] <= len(cut) * 4         # their attempts only
    assert s["rows"] >= before["rows"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["regenerated"][0]["settings"] == {"sampling": {"answers": {"max_tokens": 384}}}
    ok, lines = verify(out)
    assert ok, lines
    print(f"\nregen: {len(cut)} cut answers asked again, {a['attempts'] - a['from_store']} attempts; rows "
          f"{before['rows']} -> {s['rows']}")
