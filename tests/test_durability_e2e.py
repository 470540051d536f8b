"""Crash, resume and reproduce with the REAL engine and the embedded teacher.

A run is killed with SIGKILL (the whole process group, vLLM's workers included) during the
subjects level, then during the questions level, then during export; each restart resumes
without generating anything that was stored, and the last one produces a dataset identical to
the uninterrupted run's.
"""
import json
import os
import re
import signal
import subprocess
import time

import psutil
import pytest

from e2e import BIN, ROOT, TINY, env, kill_when, run_glan, stored, stored_at
from glan_local.manifest import fingerprints
from glan_local.verify import verify

pytestmark = pytest.mark.engine


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _resume_and_compare(tiny_run, out, killed):
    """killed: {key: when stored} at the kill. After resuming, nothing stored was generated
    again (a regenerated reply would be stored anew), and the files equal the reference's."""
    reference, _ = tiny_run
    run_glan(out)                                      # the same command again: resume
    s = _summary(out)
    after = stored_at(out)
    assert {k: after[k] for k in killed} == killed
    # Not every stored reply need be taken: a speculative retry stored ahead of need is
    # unneeded once the attempt before it turns out valid.
    assert 0 < s["totals"]["from_store"] <= len(killed)
    assert fingerprints(out) == fingerprints(reference)
    print(f"\nkilled with {len(killed)} replies stored; resume generated {s['totals']['generated']}")
    return s["totals"]["generated"]


def _kept(out, killed):
    """Every reply stored at a kill is still there, written when it was: none was generated again."""
    after = stored_at(out)
    assert {k: after.get(k) for k in killed} == killed
    return after


def test_a_run_killed_in_subjects_then_questions_then_export_resumes_to_the_same_dataset(tiny_run, tmp_path):
    """A second fresh run of the uninterrupted run's config, SIGKILLed (the whole process group)
    three times by the same command: during subjects, during questions, and mid-write of the
    export. Each restart resumes without generating a stored reply again; the last one generates
    nothing, its files equal the uninterrupted run's (two fresh runs give identical datasets),
    and the manifest check passes. One chain, so the CI pays for one extra run, not three."""
    out = tmp_path / "run"
    kill_when(out, "subjects")
    assert not (out / "data" / "train.jsonl").exists()
    killed = stored_at(out)
    kill_when(out, "questions")                       # the same command again: resumes, killed again
    killed = _kept(out, killed)
    p = run_glan(out, check=False, extra_env={"GLAN_FAILPOINT": "export"})
    assert p.returncode == -9
    killed = _kept(out, killed)
    # The killed export left no file that looks complete: the dataset is absent or whole.
    assert not (out / "data" / "train.jsonl").exists()
    assert list((out / "data").glob("*.tmp"))                 # it was killed mid-write
    assert _resume_and_compare(tiny_run, out, killed) == 0
    ok, lines = verify(out)
    assert ok, lines


def test_engine_processes_end_when_glan_local_alone_is_killed(tmp_path):
    """`kill -9 PID` (or the OOM killer) on the glan-local process alone, not its group: vLLM's
    engine core must not live on holding its memory, waiting for a client that is gone."""
    out = tmp_path / "run"
    p = subprocess.Popen([str(BIN / "glan-local"), *TINY, f"out_dir={out}"], cwd=ROOT, env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not stored(out) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert p.poll() is None and stored(out), "the run ended or stalled before its first reply"
        kids = psutil.Process(p.pid).children(recursive=True)
        assert kids                                        # vLLM's engine core, at least
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        _, alive = psutil.wait_procs(kids, timeout=30)
        assert not alive, [(k.pid, k.name()) for k in alive]
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_kill_during_model_load_leaves_no_engine_process(tmp_path):
    """`kill -9` of glan-local alone while vLLM is still loading the model (the longest exposed
    window with a 70B teacher): the watchdog runs from before vLLM starts, so the engine
    processes it started, and those they start afterwards, are gone within 30 s."""
    out = tmp_path / "run"
    log = tmp_path / "stderr.log"
    # verbose=true: vLLM's own logs are shown (quiet by default), which this test also checks.
    # They go to stdout (VLLM_LOGGING_STREAM), unbuffered so that a SIGKILL loses none.
    p = subprocess.Popen([str(BIN / "glan-local"), *TINY, f"out_dir={out}", "verbose=true"], cwd=ROOT,
                         env=env(PYTHONUNBUFFERED="1"), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        main = psutil.Process(p.pid)
        deadline = time.monotonic() + 600
        core = []
        while not core and p.poll() is None and time.monotonic() < deadline:
            core = [k for k in main.children(recursive=True) if "EngineCore" in " ".join(k.cmdline() or [k.name()])
                    or k.name().startswith("VLLM")]
            time.sleep(0.05)
        assert core and not stored(out), "the engine core never appeared, or the model was already serving"
        kids = main.children(recursive=True)
        os.kill(p.pid, signal.SIGKILL)                     # glan-local alone, mid-load
        p.wait()
        time.sleep(2)                                      # what the core starts after the kill counts too
        later = {c for k in kids if k.is_running() for c in k.children(recursive=True)}
        _, alive = psutil.wait_procs(list(set(kids) | later), timeout=30)
        assert not alive, [(k.pid, k.name()) for k in alive]
        # vLLM's own log lines, with verbose=true: the main process's start at column 0, the
        # engine core's after its "(EngineCore pid=N) " prefix.
        assert re.search(r"(?m)^(\([^)]*\) )?INFO ", log.read_text()), log.read_text()[-3000:]
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
