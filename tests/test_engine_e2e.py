"""End to end with the REAL vLLM CPU engine and the embedded SmolLM2-135M teacher.

One tiny run through all five levels, started as a user would (the `glan-local` command), then
checked: every saved level validates against its schema, provenance is complete, and at every
level planned = produced + recorded failures.
"""
import json
import re
from pathlib import Path

import pytest
import yaml

from e2e import TINY
from glan_local.levels import questions, subjects, syllabus, taxonomy

pytestmark = pytest.mark.engine


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_summary_accounts_for_every_request(tiny_run):
    out, p = tiny_run
    s = json.loads((out / "summary.json").read_text())
    assert "level" in p.stdout and "rows:" in p.stdout           # the summary table was printed
    # A first run a person can read: no vLLM logs by default (verbose=true shows them), and without
    # a terminal, plain progress lines at most one per 10 s.
    assert not re.search(r"\((EngineCore|MainProcess|Worker)[^)]*\) (INFO|WARNING)", p.stderr), p.stderr[-3000:]
    seconds = [int(x) for x in re.findall(r"^\[glan-local\] progress at (\d+) s: taxonomy", p.stderr, re.M)]
    assert seconds and all(b - a >= 10 for a, b in zip(seconds, seconds[1:])), p.stderr[-3000:]
    for name, lv in s["levels"].items():
        assert lv["planned"] > 0, name
        assert lv["planned"] == lv["ok"] + lv["failed"], name
        assert sum(lv["failures"].values()) == lv["failed"], name
        assert lv["output_tokens"] > 0 and lv["wall_s"] > 0, name
    assert s["levels"]["taxonomy"]["planned"] == 5               # 1 + 2 fields + 2 sub-fields
    assert s["levels"]["subjects"]["planned"] == 2 * s["levels"]["taxonomy"]["items"]
    assert s["levels"]["questions"]["planned"] <= 3 * s["levels"]["syllabus"]["items"]
    assert s["rows"] == s["levels"]["answers"]["ok"] > 0
    # out_dir= is hydra.run.dir: .hydra/ (config, overrides) is in the run directory itself.
    assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text())[-1] == f"out_dir={out}"
    assert yaml.safe_load((out / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["output_dir"] == str(out)
    assert yaml.safe_load((out / ".hydra" / "config.yaml").read_text())["out_dir"] == str(out)
    fails = _jsonl(out / "levels" / "failures.jsonl")
    assert len(fails) == s["totals"]["failed"]


def test_every_saved_level_validates_against_its_schema(tiny_run, compose):
    out, _ = tiny_run
    b = compose(*[a for a in TINY if a.startswith("breadth")]).breadth
    tax = _jsonl(out / "levels" / "taxonomy.jsonl")
    assert tax and all(t["field"] and t["subfield"] and t["discipline"] for t in tax)
    assert taxonomy.load(str(out / "taxonomy.yaml"))             # the editable file loads back
    Subject = subjects.subject_schema(b.subtopics_max)
    for rec in _jsonl(out / "levels" / "subjects.jsonl"):
        Subject.model_validate({k: v for k, v in rec["subject"].items() if k != "query"})
    Syl = syllabus.schema(b.sessions_min, b.sessions_max, b.concepts_max)
    syls = _jsonl(out / "levels" / "syllabus.jsonl")
    assert syls
    for rec in syls:
        Syl.model_validate(rec["syllabus"])
    for rec in _jsonl(out / "levels" / "questions.jsonl"):
        questions.Question.model_validate({"question": rec["question"]})


def test_rows_have_full_provenance_and_load_with_datasets(tiny_run):
    out, _ = tiny_run
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"))["train"]
    syllabi = {r["id"]: r["syllabus"] for r in _jsonl(out / "levels" / "syllabus.jsonl")}
    assert len(ds) == len(_jsonl(out / "data" / "train.jsonl")) > 0
    for r in ds:
        for k in ("field", "subfield", "discipline", "subject", "subject_level", "question", "answer",
                  "model", "question_request", "answer_request", "syllabus_request"):
            assert isinstance(r[k], str) and r[k].strip(), k
        assert r["strategy"] in ("single-session", "two-session")
        assert len(r["session_indices"]) == (1 if r["strategy"] == "single-session" else 2)
        syl = syllabi[r["id"].rsplit(".", 1)[0]]
        titles = [syl["sessions"][i]["title"] for i in r["session_indices"]]
        assert r["session_titles"] == titles
        allowed = {c for i in r["session_indices"] for c in syl["sessions"][i]["key_concepts"]}
        assert set(r["key_concepts"]) <= allowed and r["key_concepts"]
        assert r["messages"][0] == {"role": "user", "content": r["question"]}
        assert r["messages"][1] == {"role": "assistant", "content": r["answer"]}


def test_prompts_and_replies_are_in_the_store(tiny_run):
    out, _ = tiny_run
    from e2e import prompts

    rows = prompts(out)
    s = json.loads((out / "summary.json").read_text())
    assert len(rows) == sum(lv["attempts"] for lv in s["levels"].values())
    q = [m for lvl, st, m in rows if lvl == "questions"]
    assert q and all("students have learned the course up to session" in m[-1]["content"] for m in q)
    assert all("Syllabus:" in m[-1]["content"] for m in q)        # the full syllabus is in the prompt


def _bytes(d: Path) -> dict:
    import hashlib

    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def test_the_run_and_its_model_moved_resume_with_nothing_generated_and_an_edited_model_is_refused(tiny_run, tmp_path):
    """The real run directory and the real teacher copied elsewhere: the same run (nothing is
    generated, no engine even starts). Then 4 bytes of one tensor change: refused by name."""
    import shutil

    from e2e import run_glan
    from glan_local.embedded import embedded_model_dir

    out, _ = tiny_run
    run, model = tmp_path / "moved" / "run", tmp_path / "moved" / "teacher"
    shutil.copytree(out, run)
    shutil.copytree(embedded_model_dir(), model)
    p = run_glan(run, f"model.path={model}", "model.name=smollm2-135m")
    s = json.loads((run / "summary.json").read_text())
    assert s["totals"]["generated"] == 0 and s["totals"]["engine_start_s"] == 0 and "starting the teacher" not in p.stderr
    assert (run / "data" / "train.jsonl").read_bytes() == (out / "data" / "train.jsonl").read_bytes()
    weights = model / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 3)
        f.write(b"\x01\x02\x03\x04")
    before = _bytes(run)
    p = run_glan(run, f"model.path={model}", "model.name=smollm2-135m", check=False)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "hashing" not in ln and "hashed" not in ln]
    assert p.returncode == 2 and len(lines) == 1 and "input model changed" in lines[0] and "overwrite=true" in lines[0], \
        p.stderr[-2000:]
    assert _bytes(run) == before


def test_verify_reads_a_damaged_copy_of_the_real_run_without_writing(tiny_run, tmp_path):
    import shutil
    import sqlite3
    import subprocess
    import sys

    out, _ = tiny_run
    run = tmp_path / "copy"
    shutil.copytree(out, run)
    verify = [str(Path(sys.executable).parent / "glan-local-verify"), str(run)]
    before = _bytes(run)
    assert subprocess.run(verify, capture_output=True, text=True).returncode == 0
    assert _bytes(run) == before
    row = json.loads((run / "data" / "train.jsonl").read_text().splitlines()[0])
    con = sqlite3.connect(run / "store.sqlite")
    con.execute("DELETE FROM replies WHERE key=?", (row["answer_request"],))
    con.commit()
    con.close()
    before = _bytes(run)
    p = subprocess.run(verify, capture_output=True, text=True)
    assert p.returncode == 1 and "1 reply the run used is missing (answers 1" in p.stdout, p.stdout + p.stderr
    assert _bytes(run) == before
