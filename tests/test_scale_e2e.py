"""Scale-out with the REAL vLLM CPU engine and the embedded teacher, as a user runs it:
two shards merged with `glan-local-merge` equal the unsharded run, and a two-job sweep leaves
its summary table. Slow (four tiny runs): pytest -m engine tests/test_scale_e2e.py"""
import json
import subprocess

import pytest
import yaml

from e2e import BIN, ROOT, TINY, env, run_glan

pytestmark = pytest.mark.engine

# Two disciplines: one per shard.
TAXONOMY = {"fields": [
    {"name": "Natural Sciences", "subfields": [{"name": "Chemistry", "disciplines": ["Organic Chemistry"]}]},
    {"name": "Services", "subfields": [{"name": "Retail", "disciplines": ["Retailing"]}]},
]}
COMPARED = ["data/train.jsonl", "data/train-00000-of-00001.parquet", "taxonomy.yaml",
            *(f"levels/{n}.jsonl" for n in ("taxonomy", "subjects", "syllabus", "questions", "answers", "failures"))]


def _cmd(name, *args):
    return subprocess.run([str(BIN / name), *map(str, args)], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=1800)


def test_two_shards_merged_equal_the_unsharded_run(tmp_path):
    tax = tmp_path / "taxonomy.yaml"
    tax.write_text(yaml.safe_dump(TAXONOMY))
    common = [f"taxonomy.file={tax}", "quality.enabled=false"]
    run_glan(tmp_path / "full", *common)
    for i in (0, 1):
        run_glan(tmp_path / f"shard{i}", *common, "shard.count=2", f"shard.index={i}")
        disciplines = [json.loads(x)["discipline"] for x in (tmp_path / f"shard{i}/levels/taxonomy.jsonl").open()]
        assert disciplines == [["Organic Chemistry"], ["Retailing"]][i]
    p = _cmd("glan-local-merge", tmp_path / "merged", tmp_path / "shard1", tmp_path / "shard0")
    assert p.returncode == 0, p.stderr[-3000:]
    for name in COMPARED:
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    full = json.loads((tmp_path / "full/summary.json").read_text())
    merged = json.loads((tmp_path / "merged/summary.json").read_text())
    assert merged["rows"] == full["rows"] > 0
    assert merged["totals"]["planned"] == full["totals"]["planned"]
    p = _cmd("glan-local-verify", tmp_path / "merged")
    assert p.returncode == 0 and "OK:" in p.stdout, p.stdout + p.stderr[-2000:]


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
