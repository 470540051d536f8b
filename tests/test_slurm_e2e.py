"""The Slurm recipe of docs/sweeps-and-clusters.md, for real: a one-node Slurm cluster on this machine
(scripts/slurm_cluster.sh, started by the `slurm_cluster` fixture), the REAL engine with the
embedded teacher, and `glan-local -m hydra/launcher=slurm ...` exactly as a user types it
(hydra-submitit-launcher calls sbatch; the jobs show up in squeue and sacct).

  1. the taxonomy, reviewed: one Slurm job (`-m` with no sweep is a one-job multirun);
  2. fan-out: two shards as one Slurm array, one at a time (array_parallelism=1: 2 cores here).
     Shard 1 is cancelled with scancel while it generates, then submitted again with the same
     command and only its index: it resumes from its reply store;
  3. glan-local-merge + glan-local-verify on the merged run;
  4. the merged dataset equals an unsharded run of the same config, run directly (no Slurm).
     Every job shares one cache_dir, as docs/sweeps-and-clusters.md suggests, so the unsharded run
     asks the same requests and finds their replies there: what is compared is the tree walk,
     the shard split and the merge, not the teacher's speed.

Slow (four short runs of the teacher): pytest tests/test_slurm_e2e.py -s"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from e2e import BIN, ROOT, TINY, env, run_glan, stored
from slurm import slurm_cluster  # noqa: F401  (the session's cluster)

pytestmark = [pytest.mark.engine, pytest.mark.slurm]

# TINY with one subject list and one question per discipline (four requests each): the taxonomy
# of seed 1 has two disciplines, one per shard.
SMALL = [a for a in TINY if not a.startswith("breadth.questions_per_syllabus")] + [
    "breadth.questions_per_syllabus=1", "breadth.subject_queries=1", "quality.enabled=false"]
COMPARED = ["data/train.jsonl", "data/train-00000-of-00001.parquet", "taxonomy.yaml",
            *(f"levels/{n}.jsonl" for n in ("taxonomy", "subjects", "syllabus", "questions", "answers", "failures"))]
TIMINGS: dict[str, float] = {}
LAUNCHERS: list[subprocess.Popen] = []      # stopped at the end if a failure left one waiting


def launcher(cluster) -> list[str]:
    """The overrides for this one-node cluster: its partition, no GPUs, all its CPUs, and memory
    for the embedded teacher on the CPU (vLLM takes model.gpu_memory_utilization=0.4 of the RAM
    for its KV cache: 11-12 GB MaxRSS per job here)."""
    return [f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.gpus_per_node=null",
            f"hydra.launcher.cpus_per_task={cluster.cpus}",
            f"hydra.launcher.mem_gb={max(1, int(cluster.memory_mb * 0.6) // 1024)}",
            "hydra.launcher.timeout_min=30"]


def submit(log: Path, *overrides: str) -> subprocess.Popen:
    """`glan-local -m hydra/launcher=slurm ...` as a user runs it: it submits and waits."""
    cmd = [str(BIN / "glan-local"), "-m", "hydra/launcher=slurm", *SMALL, *overrides]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=out, stderr=err, start_new_session=True)
    p.log = log  # type: ignore[attr-defined]
    LAUNCHERS.append(p)
    return p


def finish(p: subprocess.Popen, timeout: float = 1800) -> tuple[int, str]:
    try:
        code = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise AssertionError(f"{' '.join(p.args)} still waiting after {timeout} s:\n{read_log(p)}")
    return code, read_log(p)


def read_log(p) -> str:
    return Path(f"{p.log}.out").read_text() + Path(f"{p.log}.err").read_text()


def job_ids(sweep: Path) -> list[str]:
    """Slurm job ids submitted for a sweep, from submitit's folder: one folder per job holding
    <id>_submitted.pkl, <id> a job id or <array id>_<task> for an array's task."""
    sub = sweep / ".submitit"
    found = [d.name for d in sub.iterdir() if (d / f"{d.name}_submitted.pkl").exists()] if sub.exists() else []
    return sorted(found, key=lambda s: [int(x) for x in s.split("_")])


def cmd(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *map(str, args)], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=1800)


def wait_until(what: str, cond, timeout: float, poll: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def reaches(cluster, job: str, state: str, timeout: float = 60) -> bool:
    """Whether sacct shows the job in `state` within `timeout`: submitit returns once the job's
    result file is written, a moment before the job itself ends and its state is accounted."""
    try:
        wait_until(f"job {job} to be {state} in sacct", lambda: cluster.state(job) == state, timeout, 1)
        return True
    except AssertionError:
        return False


@pytest.fixture(scope="module")
def recipe(slurm_cluster, tmp_path_factory):  # noqa: F811
    yield {"S": tmp_path_factory.mktemp("slurm"), "cluster": slurm_cluster}
    for p in LAUNCHERS:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    print("\n[slurm] timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()), flush=True)


@pytest.fixture(scope="module")
def taxonomy_job(recipe):
    """1. The taxonomy as one Slurm job; a person would review taxonomy.yaml here."""
    S, cluster = recipe["S"], recipe["cluster"]
    t0 = time.monotonic()
    p = submit(S / "logs/taxonomy", *launcher(cluster), "taxonomy.review=true", f"hydra.sweep.dir={S}/taxonomy")
    code, log = finish(p)
    TIMINGS["taxonomy job"] = time.monotonic() - t0
    assert code == 0, log[-4000:]
    return S / "taxonomy", log


@pytest.fixture(scope="module")
def shards(recipe, taxonomy_job):
    """2. Two shards as a Slurm array, one at a time; shard 1 is cancelled while it generates and
    submitted again with only its index, as the docs say."""
    S, cluster = recipe["S"], recipe["cluster"]
    tax = taxonomy_job[0] / "0" / "taxonomy.yaml"
    fan_out = [*launcher(cluster), f"taxonomy.file={tax}", "shard.count=2", f"cache_dir={S}/cache",
               f"hydra.sweep.dir={S}/shards",
               "hydra.sweep.subdir=shard${shard.index}"]
    t0 = time.monotonic()
    first = submit(S / "logs/shards", *fan_out, "shard.index=0,1", "hydra.launcher.array_parallelism=1")
    ids = wait_until("the array's two tasks to be submitted", lambda: len(job_ids(S / "shards")) == 2 and job_ids(S / "shards"),
                     120)
    assert [i.split("_")[1] for i in ids] == ["0", "1"], ids
    queue = cluster.run("squeue", "-h", "-r", "-o", "%i %T").stdout
    assert all(i in queue for i in ids) or cluster.state(ids[0]) == "COMPLETED", queue

    # Shard 1 starts after shard 0 (array_parallelism=1). Cancel it once it stores a syllabus
    # reply: its subject list is then stored and needed (a lone stored reply may be a speculative
    # attempt that the resumed run does not need), and its questions and answers are still to come.
    shard1 = S / "shards" / "shard1"
    before = wait_until("shard 1 to store a syllabus reply", lambda: stored(shard1, "syllabus") and len(stored(shard1)),
                        1500, 0.2)
    assert reaches(cluster, ids[0], "COMPLETED"), cluster.sacct(*ids)
    assert cluster.state(ids[1]) == "RUNNING", cluster.sacct(*ids)
    cluster.run("scancel", ids[1])
    t_cancel = time.monotonic()
    wait_until("shard 1 to be CANCELLED in sacct", lambda: cluster.state(ids[1]) == "CANCELLED", 120)
    assert not (shard1 / "summary.json").exists()     # unfinished
    kept = len(stored(shard1))
    assert kept >= before

    # The same command with only the dead shard's index; meanwhile the first submission notices.
    again = submit(S / "logs/shard1-again", *fan_out, "shard.index=1")
    code, log = finish(again)
    TIMINGS["shards (2 array tasks, one cancelled, resubmitted)"] = time.monotonic() - t0
    assert code == 0, log[-4000:]
    first_code, first_log = finish(first, timeout=900)
    TIMINGS["first submission noticed the cancel after"] = time.monotonic() - t_cancel
    assert first_code != 0, first_log[-3000:]        # its array had a cancelled task
    resubmitted = [i for i in job_ids(S / "shards") if i not in ids]
    assert len(resubmitted) == 1 and reaches(cluster, resubmitted[0], "COMPLETED"), cluster.sacct()
    summary = json.loads((shard1 / "summary.json").read_text())
    assert summary["totals"]["from_store"] > 0, summary["totals"]
    print(f"\n[slurm] jobs {ids} then {resubmitted}: shard 1 cancelled with {kept} replies stored, "
          f"resumed with {summary['totals']['from_store']} from its store and {summary['totals']['generated']} "
          f"generated\n[slurm] the first submission ended with exit {first_code}: "
          f"{[ln for ln in first_log.splitlines() if ln.strip()][-1:]}")
    return {"dirs": [S / "shards" / "shard0", shard1], "ids": ids + resubmitted, "tax": tax}


def test_taxonomy_is_one_slurm_job_seen_by_sacct(recipe, taxonomy_job):
    sweep, log = taxonomy_job
    cluster = recipe["cluster"]
    ids = job_ids(sweep)
    assert len(ids) == 1, ids
    assert reaches(cluster, ids[0], "COMPLETED"), cluster.sacct()
    assert (sweep / "0" / "taxonomy.yaml").exists()
    assert not (sweep / "0" / "data").exists()      # review: stops after the taxonomy
    jobs = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["ok"], jobs
    assert "sweep summary" in log


def test_shards_run_as_a_slurm_array_and_a_cancelled_shard_resumes(shards, recipe):
    cluster = recipe["cluster"]
    out = cluster.sacct(*shards["ids"])
    assert "CANCELLED" in out and "COMPLETED" in out, out
    for i, d in enumerate(shards["dirs"]):
        assert json.loads((d / "summary.json").read_text())["rows"] > 0, d
        assert (d / "manifest.json").exists()


def test_merged_shards_verify_and_equal_the_unsharded_run(shards, recipe):
    S = recipe["S"]
    t0 = time.monotonic()
    p = cmd("glan-local-merge", S / "merged", *reversed(shards["dirs"]))
    assert p.returncode == 0, p.stderr[-3000:]
    p = cmd("glan-local-verify", S / "merged")
    assert p.returncode == 0 and "OK:" in p.stdout, p.stdout + p.stderr[-2000:]
    TIMINGS["merge + verify"] = time.monotonic() - t0

    t0 = time.monotonic()
    run_glan(S / "full", f"taxonomy.file={shards['tax']}", f"cache_dir={S}/cache", args=SMALL)   # directly, no Slurm
    TIMINGS["unsharded run (direct)"] = time.monotonic() - t0
    for name in COMPARED:
        assert (S / "merged" / name).read_bytes() == (S / "full" / name).read_bytes(), name
    full = json.loads((S / "full/summary.json").read_text())
    merged = json.loads((S / "merged/summary.json").read_text())
    assert merged["rows"] == full["rows"] > 0
    # The unsharded run asked what the shards asked: its replies came from their cache.
    assert full["totals"]["from_cache"] > 0, full["totals"]
    print(f"\n[slurm] unsharded run: {full['totals']['from_cache']} replies from the shards' cache, "
          f"{full['totals']['generated']} generated")
