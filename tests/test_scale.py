"""Scale-out with the FAKE engine (tests/fakes.py): shards, merge, sweep summary, Slurm launcher
config, the scale arithmetic. The real-engine counterparts are in test_scale_e2e.py."""
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from fakes import FakeEngine
from glan_local import shard
from glan_local.config import ConfigError
from glan_local.run import generate

ROOT = Path(__file__).resolve().parent.parent
# Three disciplines in two fields: two shards interleave in tree order (0 -> shard 0, 1 -> 1, 2 -> 0).
TAXONOMY = {"fields": [
    {"name": "Natural Sciences", "subfields": [{"name": "Chemistry", "disciplines": ["Organic Chemistry",
                                                                                   "Physical Chemistry"]}]},
    {"name": "Services", "subfields": [{"name": "Retail", "disciplines": ["Retailing"]}]},
]}
COMPARED = ["data/train.jsonl", "data/train-00000-of-00001.parquet", "taxonomy.yaml",
            *(f"levels/{n}.jsonl" for n in ("taxonomy", "subjects", "syllabus", "questions", "answers", "failures"))]


@pytest.fixture
def tax_file(tmp_path):
    p = tmp_path / "taxonomy.yaml"
    p.write_text(yaml.safe_dump(TAXONOMY))
    return p


def _run(compose, fake_model, out, *overrides, engine=None):
    cfg = compose(f"model.path={fake_model}", "quality.enabled=false", *overrides)
    engine = engine or FakeEngine()
    return generate(cfg, out, engine_factory=lambda p: engine), engine


def _fail_some(req):
    # Some questions fail every attempt (the prompt decides, not the seed): failures.jsonl has records.
    if req.level == "questions" and zlib.crc32(req.messages[-1]["content"].encode()) % 3 == 0:
        return ('{"question": "cut', "length")
    return None


# --- partition ---------------------------------------------------------------------------------

def test_lpt_assignment_is_balanced_and_deterministic():
    assert shard.assign([5, 5, 5, 5, 5], 2) == [0, 1, 0, 1, 0]          # equal: round robin in tree order
    assert shard.assign([1, 9, 3, 3, 2], 2) == [1, 0, 1, 1, 1]          # 9 | 3+3+2+1
    loads = [0, 0, 0]
    weights = [7, 3, 8, 2, 5, 4, 6, 1]
    for w, s in zip(weights, shard.assign(weights, 3)):
        loads[s] += w
    assert max(loads) - min(loads) <= max(weights)
    assert shard.assign(weights, 3) == shard.assign(list(weights), 3)
    assert shard.assign([4, 4], 1) == [0, 0]


def test_shard_config_is_validated_before_the_model(compose, fake_model, tmp_path, tax_file):
    for overrides, key, words in (
        (["shard.count=0"], "shard.count", "positive"),
        (["shard.count=2", "shard.index=2", f"taxonomy.file={tax_file}"], "shard.index", "0..1"),
        (["shard.count=2", "shard.index=-1", f"taxonomy.file={tax_file}"], "shard.index", "0..1"),
        (["shard.count=2"], "shard.count", "taxonomy.review=true"),
        (["model.data_parallel_size=2"], "model.data_parallel_size", "shard"),
    ):
        with pytest.raises(ConfigError) as e:
            compose(*overrides).validate()
        assert e.value.key == key and words in str(e.value), str(e.value)
    # More shards than disciplines: refused before any engine starts.
    eng = FakeEngine()
    with pytest.raises(ConfigError) as e:
        _run(compose, fake_model, tmp_path / "s", f"taxonomy.file={tax_file}", "shard.count=4", engine=eng)
    assert e.value.key == "shard.count" and "shard.count=3" in str(e.value) and eng.submitted == []


# --- shards and merge ----------------------------------------------------------------------------

def _shards(compose, fake_model, tmp_path, tax_file, count=2, *extra):
    dirs = []
    for i in range(count):
        d = tmp_path / f"shard{i}"
        _run(compose, fake_model, d, f"taxonomy.file={tax_file}", f"shard.count={count}", f"shard.index={i}",
             "breadth.questions_per_syllabus=3", *extra, engine=FakeEngine(_fail_some))
        dirs.append(d)
    return dirs


def test_two_shards_merged_equal_the_unsharded_run(compose, fake_model, tmp_path, tax_file):
    from glan_local.manifest import read
    from glan_local.verify import verify
    from glan_local.merge import merge

    full, _ = _run(compose, fake_model, tmp_path / "full", f"taxonomy.file={tax_file}",
                   "breadth.questions_per_syllabus=3", engine=FakeEngine(_fail_some))
    dirs = _shards(compose, fake_model, tmp_path, tax_file)
    d0 = {r["discipline"] for r in map(json.loads, (dirs[0] / "levels" / "taxonomy.jsonl").open())}
    d1 = {r["discipline"] for r in map(json.loads, (dirs[1] / "levels" / "taxonomy.jsonl").open())}
    # Three disciplines of equal weight over two shards: 2 and 1, each in one shard only.
    assert not d0 & d1 and len(d0 | d1) == 3 and sorted(map(len, (d0, d1))) == [1, 2]

    out = tmp_path / "merged"
    summary = merge(out, list(reversed(dirs)), quality=False)          # any order of arguments
    for name in COMPARED:
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    assert (out / "levels" / "failures.jsonl").read_text()             # the case is exercised
    assert summary["rows"] == full["rows"] > 0
    for key in ("planned", "failed"):
        assert summary["totals"][key] == full["totals"][key], key
    # Tokens of speculative attempts found unneeded depend on timing; the needed ones do not.
    useful = lambda t: t["output_tokens"] - t["wasted_output_tokens"]
    assert useful(summary["totals"]) == useful(full["totals"])
    for level, figures in full["levels"].items():
        for key in ("planned", "ok", "failed", "retries", "items", "failures"):
            assert summary["levels"][level][key] == figures[key], (level, key)
    assert summary["taxonomy"]["disciplines"] == 3 and len(summary["shards"]) == 2
    man = read(out)
    assert man["config"]["shard"] == {"index": 0, "count": 1}
    assert man["identity_sha256"] == read(tmp_path / "full")["identity_sha256"]
    ok, lines = verify(out)
    assert ok, lines
    # The merged directory is the unsharded run's: the same command resumes there, generating nothing.
    s2, eng = _run(compose, fake_model, out, f"taxonomy.file={tax_file}", "breadth.questions_per_syllabus=3")
    assert eng.submitted == [] and s2["rows"] == full["rows"]


def _merge_cli(*args):
    return subprocess.run([sys.executable, "-m", "glan_local.merge", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_merge_refuses_bad_shard_sets_in_one_line(compose, fake_model, tmp_path, tax_file):
    dirs = _shards(compose, fake_model, tmp_path, tax_file)
    other = tmp_path / "other"
    _run(compose, fake_model, other, f"taxonomy.file={tax_file}", "shard.count=2", "shard.index=1",
         "breadth.questions_per_syllabus=3", "seed=7")
    (tmp_path / "empty").mkdir()
    for args, words in (
        ([dirs[0], dirs[0]], "appears twice"),
        ([dirs[0]], "missing shard indices [1]"),
        ([dirs[0], other], "are not shards of one run: config seed: 0 -> 7"),
        ([dirs[0], tmp_path / "empty"], "no manifest.json"),
    ):
        p = _merge_cli(tmp_path / "out", *args)
        assert p.returncode == 2, p.stderr
        assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "out").exists()
    p = _merge_cli(dirs[0], *dirs)                                    # OUT must be new or empty
    assert p.returncode == 2 and "not empty" in p.stderr
    p = _merge_cli(tmp_path / "out", *dirs, "--no-quality")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "data" / "train.jsonl").exists()


# --- sweep summary ---------------------------------------------------------------------------------

def _job(sweep, num, overrides, status, summary=None, error=""):
    from glan_local.sweep import JOB_FILE, job_record

    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status:
        (d / JOB_FILE).write_text(json.dumps(job_record(num, overrides, str(d), status, error)))
    if summary:
        (d / "summary.json").write_text(json.dumps(summary))


def test_sweep_summary_table_has_a_row_per_job_failed_ones_too(tmp_path):
    from glan_local.sweep import write_summary

    sweep = tmp_path / "sweep"
    totals = {"failed": 1, "generated": 40, "from_cache": 5, "output_tokens_per_s": 12.5, "wall_s": 30.0}
    _job(sweep, 0, ["seed=1"], "COMPLETED", {"rows": 12, "totals": totals})
    _job(sweep, 1, ["seed=2"], "FAILED", error="RuntimeError: sweep job failed (exit 1)")
    _job(sweep, 10, ["seed=3"], None)                                 # killed before its record
    rows = write_summary(sweep)
    assert [r["job"] for r in rows] == [0, 1, 10]
    assert rows[0] | {"run_dir": None} == {"job": 0, "overrides": "seed=1", "status": "ok", "rows": 12, "failed": 1,
                                           "generated": 40, "from_cache": 5, "output_tokens_per_s": 12.5,
                                           "wall_s": 30.0, "run_dir": None}
    assert rows[1]["status"].startswith("FAILED: RuntimeError") and "rows" not in rows[1]
    assert rows[2]["status"].startswith("UNKNOWN")
    assert json.loads((sweep / "sweep_summary.json").read_text())["jobs"] == rows
    md = (sweep / "sweep_summary.md").read_text().splitlines()
    assert md[2].startswith("| job | overrides | status | rows | failed | generated | from cache | output tok/s")
    assert md[4] == "| 0 | seed=1 | ok | 12 | 1 | 40 | 5 | 12.5 | 30.0 |"
    assert md[5].startswith("| 1 | seed=2 | FAILED: RuntimeError")


def test_sweep_callback_records_jobs_only_in_multirun(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from glan_local.sweep import JOB_FILE, SweepSummary

    sweep = tmp_path / "sweep"
    job_dir = sweep / "0"

    def cfg(mode):
        return OmegaConf.create({"out_dir": None, "hydra": {
            "mode": mode, "sweep": {"dir": str(sweep)}, "runtime": {"output_dir": str(job_dir)},
            "job": {"num": 0}, "overrides": {"task": ["seed=4"]}}})

    cb = SweepSummary()
    ret = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom"))
    cb.on_job_end(cfg(RunMode.RUN), ret)
    assert not (job_dir / JOB_FILE).exists()
    cb.on_multirun_start(cfg(RunMode.MULTIRUN))
    cb.on_job_end(cfg(RunMode.MULTIRUN), ret)
    rec = json.loads((job_dir / JOB_FILE).read_text())
    assert rec["status"] == "FAILED" and rec["error"] == "RuntimeError: boom" and rec["overrides"] == ["seed=4"]
    # Written as soon as the job ended: Hydra skips on_multirun_end once a job has failed.
    assert json.loads((sweep / "sweep_summary.json").read_text())["jobs"][0]["status"].startswith("FAILED")


def test_real_sweep_of_failing_jobs_still_gets_its_summary(tmp_path):
    """`glan-local -m` through Hydra, no model: both jobs stop at config validation."""
    sweep = tmp_path / "sweep"
    p = subprocess.run([str(Path(sys.executable).parent / "glan-local"), "-m", "breadth.fields=0,-1",
                        f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    jobs = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [(j["job"], j["overrides"]) for j in jobs] == [(0, "breadth.fields=0"), (1, "breadth.fields=-1")]
    assert all(j["status"].startswith("FAILED") for j in jobs)


# --- Hydra: launcher and callback configs --------------------------------------------------------

def _hydra_compose(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from glan_local.cli import register_resolvers
    from glan_local.config import register

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_config_composes_without_a_cluster(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _hydra_compose("hydra/launcher=slurm", "shard.count=4", "shard.index=1",
                         f"taxonomy.file={tmp_path / 't.yaml'}", "hydra.launcher.partition=gpu")
    la = cfg.hydra.launcher
    assert la._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # GPUs per job from the model preset on the gpu platform; none for the CPU build.
    assert cfg.platform.name == "cpu" and (la.gpus_per_node, la.tasks_per_node, la.nodes, la.partition) == \
        (None, 1, 1, "gpu")
    for preset, gpus in (("llama-3.3-70b-instruct", 8), ("llama-3.3-70b-instruct-4gpu", 4), ("qwen2.5-7b-instruct", 1)):
        assert _hydra_compose("hydra/launcher=slurm", "platform=gpu", f"model={preset}").hydra.launcher.gpus_per_node == gpus
    assert la.name == "glan-local" and la.signal_delay_s > 0 and la.max_num_timeout > 0
    assert la.timeout_min > 0 and la.array_parallelism > 0 and la.mem_gb > 0 and la.cpus_per_task > 0
    assert cfg.shard.count == 4 and cfg.shard.index == 1
    assert cfg.hydra.callbacks.sweep_summary._target_ == "glan_local.sweep.SweepSummary"
    from hydra.utils import get_class

    assert get_class(la._target_).__name__ == "SlurmLauncher"


# --- the paper-scale arithmetic ---------------------------------------------------------------------

def test_scale_arithmetic_script_prints_the_documented_table():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "scale_arithmetic.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "9,984,000" in out                        # 128 disciplines x 150 subjects x 520 questions
    page = (ROOT / "docs" / "sweeps-and-clusters.md").read_text()
    # The page pastes this output: it must be the script's, to the character.
    assert out.strip() in page, "docs/sweeps-and-clusters.md's scale table is stale: paste " \
        "scripts/scale_arithmetic.py's output"
