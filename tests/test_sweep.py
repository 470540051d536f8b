"""A sweep's jobs through one engine (glan_local/forest.py), with the FAKE engine (tests/fakes.py):
every job a standalone run equal to the job run alone, shared requests made once, failures
isolated. The real engine and Hydra's -m are in test_scale_e2e.py."""
import json
from pathlib import Path

import pytest

from fakes import FakeEngine
from glan_local.forest import Job, run_forest
from glan_local.run import generate

COMPARED = ["data/train.jsonl", "taxonomy.yaml", *(f"levels/{n}.jsonl" for n in
                                                    ("taxonomy", "subjects", "syllabus", "questions", "answers",
                                                     "failures"))]
SWEEP = [("breadth.questions_per_syllabus=1", "sampling.answers.temperature=0.3"),
         ("breadth.questions_per_syllabus=1", "sampling.answers.temperature=0.7"),
         ("breadth.questions_per_syllabus=2", "sampling.answers.temperature=0.3"),
         ("breadth.questions_per_syllabus=2", "sampling.answers.temperature=0.7")]


def _jobs(compose, model, root: Path, sweep, *common):
    return [Job(f"job {n}", list(ov), compose(f"model.path={model}", "quality.enabled=false", *common, *ov),
                root / str(n)) for n, ov in enumerate(sweep)]


class Counting(FakeEngine):
    started: list = []

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        Counting.started.append(self)


def _factory(fault=None):
    Counting.started = []
    return lambda path: Counting(fault)


def test_every_job_of_a_forest_equals_the_job_run_alone_and_shared_requests_are_made_once(compose, fake_model,
                                                                                          tmp_path):
    from glan_local.verify import verify

    jobs = _jobs(compose, fake_model, tmp_path / "sweep", SWEEP, "engine.speculate_below=0")
    run_forest(jobs, _factory())
    assert [j.error for j in jobs] == [None] * 4
    assert len(Counting.started) == 1                          # one engine for the four jobs
    engine = Counting.started[0]
    keys = [r.key for r in engine.submitted]
    assert len(keys) == len(set(keys))                         # every request once, shared or not
    # What the engine generated is what the jobs generated; the rest they took from each other.
    assert sum(j.summary["totals"]["generated"] for j in jobs) == len(keys)
    # The taxonomy (5 requests) is the same in every job: generated once, taken by the three others.
    tax = [j.summary["levels"]["taxonomy"] for j in jobs]
    assert sum(t["attempts"] - t["from_cache"] for t in tax) == 5 and sum(t["from_cache"] for t in tax) == 15
    single = []
    for j, ov in zip(jobs, SWEEP):
        eng = FakeEngine()
        s = generate(compose(f"model.path={fake_model}", "quality.enabled=false", "engine.speculate_below=0", *ov),
                     tmp_path / "alone" / j.run_dir.name, engine_factory=lambda p: eng)
        single.append(s)
        for name in COMPARED:
            assert (j.run_dir / name).read_bytes() == (tmp_path / "alone" / j.run_dir.name / name).read_bytes(), name
        ok, lines = verify(j.run_dir)
        assert ok, lines
    # The engine saw more at once than any job alone did.
    assert jobs[0].summary["totals"]["mean_in_flight"] > max(s["totals"]["mean_in_flight"] for s in single)


def test_a_bad_job_is_refused_and_a_failing_job_stops_alone(compose, fake_model, tmp_path):
    def fault(req):     # the answers of one job, and only that job, are cut every time
        if req.level == "answers" and req.sampling["temperature"] == 0.9:
            return ("An answer that runs on and", "length")
        return None

    sweep = [("sampling.answers.temperature=0.3",), ("breadth.fields=0",), ("sampling.answers.temperature=0.9",)]
    jobs = _jobs(compose, fake_model, tmp_path / "sweep", sweep)
    run_forest(jobs, _factory(fault))
    ok, bad, failing = jobs
    assert ok.error is None and ok.summary["rows"] > 0
    assert "breadth.fields" in str(bad.error) and not (bad.run_dir / "store.sqlite").exists()
    assert "every request of the answers level failed" in str(failing.error)
    assert json.loads((failing.run_dir / "summary.json").read_text())["error"]


def test_a_job_whose_engine_requests_keep_failing_stops_alone_and_resumes(compose, fake_model, tmp_path):
    from glan_local.errors import EngineFailed

    def fault(req):
        if req.level == "questions" and req.sampling["temperature"] == 0.9:
            return ("", "error")
        return None

    sweep = [("sampling.questions.temperature=0.5",), ("sampling.questions.temperature=0.9",)]
    jobs = _jobs(compose, fake_model, tmp_path / "sweep", sweep, "engine.error_retries=1", "engine.error_backoff_s=0")
    run_forest(jobs, _factory(fault))
    assert jobs[0].error is None and jobs[0].summary["rows"] > 0
    assert isinstance(jobs[1].error, EngineFailed) and not (jobs[1].run_dir / "manifest.json").exists()
    # The same sweep again, the engine well: the first job generates nothing, the second resumes.
    again = _jobs(compose, fake_model, tmp_path / "sweep", sweep, "engine.error_retries=1", "engine.error_backoff_s=0")
    run_forest(again, _factory())
    assert [j.error for j in again] == [None, None]
    assert again[0].summary["totals"]["generated"] == 0
    assert again[1].summary["totals"]["from_store"] > 0 and again[1].summary["rows"] > 0


@pytest.mark.parametrize("answers_model", [False, True])
def test_jobs_of_other_teachers_get_engines_of_their_own_one_at_a_time(compose, fake_model, tmp_path, answers_model):
    other = tmp_path / "other-model"
    other.mkdir()
    for f in fake_model.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "config.json").write_text('{"other": 1}')
    sweep = [(), (f"model.path={other}",)] if not answers_model else \
        [(), ("model@answers.model=smollm2-135m", f"answers.model.path={other}")]
    jobs = [Job(f"job {n}", list(ov), compose(f"model.path={fake_model}", "quality.enabled=false", *ov),
                tmp_path / str(n)) for n, ov in enumerate(sweep)]
    run_forest(jobs, _factory())
    assert [j.error for j in jobs] == [None, None]
    # Two groups: the first job's engine, then the second's (and its answer teacher's).
    assert len(Counting.started) == (2 if not answers_model else 3)
