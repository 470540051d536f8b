"""End to end with the REAL vLLM CPU engine and the embedded SmolLM2-135M teacher.

One tiny run through all five levels, started as a user would (the `glan-local` command), then
checked: every saved level validates against its schema, provenance is complete, and at every
level planned = produced + recorded failures.
"""
import json
import re
from pathlib import Path

import pytest

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
