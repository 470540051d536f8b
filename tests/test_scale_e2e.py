"""A sweep with the REAL vLLM CPU engine and the embedded teacher, as a user runs it:
`glan-local -m` walks its jobs through one engine (glan_local/launcher.py). One sweep of two good
jobs and a bad one, killed in the middle and run again: the bad job is refused before the engine
starts while the others run, the same command resumes every job from its own directory, each
job's directory verifies alone and the job at the default temperature equals the tiny run of
the other end-to-end tests. Shards through a real Slurm are in tests/test_slurm_e2e.py.
Slow: pytest -m engine tests/test_scale_e2e.py"""
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from e2e import BIN, ROOT, TINY, env, run_glan, stored, stored_at
from glan_local.manifest import fingerprints
from glan_local.verify import verify

pytestmark = pytest.mark.engine

# Job 0 is the tiny run itself (the preset's answer temperature), job 1 another answer
# temperature (shares every request above the answers), job 2 is refused (negative temperature).
SWEEP = ["-m", *TINY, "sampling.answers.temperature=0.7,0.3,-1"]


def test_a_sweep_in_one_engine_killed_and_resumed_equals_its_jobs_run_alone(tiny_run, tmp_path):
    reference, _ = tiny_run
    sweep = tmp_path / "sweep"
    cmd = [str(BIN / "glan-local"), *SWEEP, f"hydra.sweep.dir={sweep}"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    t0 = time.monotonic()
    try:     # killed as a batch scheduler would, once both good jobs have answers stored
        while not (stored(sweep / "0", "answers") and stored(sweep / "1", "answers")):
            assert p.poll() is None, f"the sweep ended (exit {p.returncode}) before it was killed"
            assert time.monotonic() - t0 < 1500, "no answers within 1500 s"
            time.sleep(0.5)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    killed = {job: stored_at(sweep / job) for job in ("0", "1")}

    again = run_glan(None, f"hydra.sweep.dir={sweep}", args=SWEEP, check=False)       # the same command
    lines = [ln for ln in again.stderr.splitlines() if ln.strip()]
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert any(ln.startswith("[glan-local] job 2 (sampling.answers.temperature=-1): config error: "
                             "sampling.answers.temperature") for ln in lines), lines
    assert lines[-1].startswith("[glan-local] 1 of 3 sweep jobs failed: job 2"), lines[-1]
    assert not (sweep / "2" / "store.sqlite").exists()           # refused before anything ran
    engines = [ln for ln in lines if "starting the teacher" in ln]
    assert len(engines) == 1, engines                                # one engine for both jobs

    summaries = {job: json.loads((sweep / job / "summary.json").read_text()) for job in ("0", "1")}
    for job, s in summaries.items():
        after = stored_at(sweep / job)
        assert {k: after[k] for k in killed[job]} == killed[job], job   # nothing stored was asked again
        assert s["rows"] > 0 and 0 < s["totals"]["from_store"] <= len(killed[job]), job
        ok, why = verify(sweep / job)
        assert ok, (job, why)
        # What a Hydra job gets: its .hydra/ with its own overrides, its number.
        hydra = yaml.safe_load((sweep / job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["job"]["num"] == int(job) and hydra["runtime"]["output_dir"] == str(sweep / job), job
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert overrides[-1] == f"sampling.answers.temperature={SWEEP[-1].split('=')[1].split(',')[int(job)]}", job
        assert yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())["sampling"]["answers"][
            "temperature"] == float(overrides[-1].split("=")[1]), job
    assert fingerprints(sweep / "0") == fingerprints(reference)          # the job as it runs alone
    table = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [(j["job"], j["status"][:6]) for j in table] == [(0, "ok"), (1, "ok"), (2, "FAILED")], table
    print(f"\nsweep killed with {sum(map(len, killed.values()))} replies stored; the resume generated "
          f"{sum(s['totals']['generated'] for s in summaries.values())} and took "
          f"{sum(s['totals']['from_cache'] for s in summaries.values())} from the other job")
