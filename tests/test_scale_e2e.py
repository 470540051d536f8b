"""Scale-out with the REAL vLLM CPU engine and the embedded teacher, as a user runs it: a
two-job sweep leaves its summary table and the second job reuses the first's replies. Shards
merged and compared with the unsharded run, for real, are in tests/test_slurm_e2e.py (through a
one-node Slurm cluster). Slow (two tiny runs): pytest -m engine tests/test_scale_e2e.py"""
import json

import pytest

from e2e import TINY, run_glan

pytestmark = pytest.mark.engine

def test_two_job_sweep_writes_a_summary_row_per_job_and_reuses_upstream_replies(tmp_path):
    """A sweep over a question knob: each job in its own process and directory, a summary row
    each, and the second job takes taxonomy, subjects and syllabi from the shared cache."""
    sweep = tmp_path / "sweep"
    base = [a for a in TINY if not a.startswith("breadth.questions_per_syllabus")]
    p = run_glan(None, f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}", "quality.enabled=false",
                 "breadth.questions_per_syllabus=1,2", args=["-m", *base])
    for job in ("0", "1"):
        assert (sweep / job / "data" / "train.jsonl").exists(), job
        assert json.loads((sweep / job / "summary.json").read_text())["rows"] > 0, job
    jobs = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [j["job"] for j in jobs] == [0, 1] and all(j["status"] == "ok" for j in jobs), jobs
    assert "breadth.questions_per_syllabus=1" in jobs[0]["overrides"]
    assert jobs[0]["rows"] > 0 and jobs[1]["rows"] > 0
    first, second = (json.loads((sweep / j / "summary.json").read_text()) for j in ("0", "1"))
    assert first["totals"]["from_cache"] == 0
    for level in ("taxonomy", "subjects", "syllabus"):
        lv = second["levels"][level]
        assert lv["from_cache"] == lv["attempts"] > 0, level
    table = (sweep / "sweep_summary.md").read_text().splitlines()
    assert sum(1 for line in table if line.startswith("| 0 |") or line.startswith("| 1 |")) == 2
    assert "sweep summary" in p.stdout
    print(f"\nsweep: job 1 generated {first['totals']['generated']} replies; job 2 took "
          f"{second['totals']['from_cache']} from the cache and generated {second['totals']['generated']}")
