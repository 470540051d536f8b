"""language=, a prompt override, include/exclude and a flat discipline list, in ONE run of the
REAL engine with the embedded teacher (one run keeps the CI budget). The same run answers with
a second teacher (answers.model: the embedded model again, under another name), so a second
vLLM engine starts in the process after the first is shut down."""
import json

import pytest

from e2e import TINY, run_glan
from e2e import prompts as stored_prompts
from glan_local.levels import questions, subjects, syllabus

pytestmark = pytest.mark.engine


def test_korean_flat_list_with_override_and_filter(tmp_path, compose):
    disciplines = tmp_path / "disciplines.txt"
    disciplines.write_text("Marine Biology\nAccounting\nCeramics\n")
    tpl = tmp_path / "questions.j2"
    tpl.write_text("[MY-ORG-TEMPLATE] Course {{ subject.name }}, sessions up to {{ last_session }}.\n"
                   "Key concepts: {{ concepts | join(', ') }}.\nWrite one homework question in {{ language }}.\n"
                   'Reply in JSON: {"question": "..."}')
    out = tmp_path / "run"
    overrides = ["language=ko", f"taxonomy.file={disciplines}", "taxonomy.exclude=[Ceramics]",
                 f"prompts.questions={tpl}", "breadth.questions_per_syllabus=2",
                 "model@answers.model=smollm2-135m", "answers.model.name=smollm2-answers"]
    run_glan(out, *overrides)
    s = json.loads((out / "summary.json").read_text())
    assert s["taxonomy"]["dropped"] == ["unspecified/unspecified/Ceramics"]
    rows = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert rows and {r["discipline"] for r in rows} <= {"Marine Biology", "Accounting"}
    assert {(r["language"], r["language_code"]) for r in rows} == {("Korean", "ko")}
    assert {(r["model"], r["answer_model"]) for r in rows} == {("smollm2-135m", "smollm2-answers")}
    assert s["levels"]["answers"]["attempts"] > 0 and "answer_model" in s
    # Every level's saved output still validates: keys stay English whatever the language.
    b = compose(*[a for a in TINY if a.startswith("breadth")]).breadth
    for line in (out / "levels" / "syllabus.jsonl").read_text().splitlines():
        syllabus.schema(b.sessions_min, b.sessions_max, b.concepts_max).model_validate(json.loads(line)["syllabus"])
    for line in (out / "levels" / "subjects.jsonl").read_text().splitlines():
        subj = json.loads(line)["subject"]
        subjects.subject_schema(b.subtopics_max).model_validate({k: v for k, v in subj.items() if k != "query"})
    for r in rows:
        questions.Question.model_validate({"question": r["question"]})
    prompts = [(lvl, m[-1]["content"]) for lvl, _, m in stored_prompts(out)]
    assert all("Korean" in p for _, p in prompts)
    assert all(p.startswith("[MY-ORG-TEMPLATE]") for lvl, p in prompts if lvl == "questions")
    assert not any("Ceramics" in p for _, p in prompts)
