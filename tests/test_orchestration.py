"""Orchestration with the FAKE engine (tests/fakes.py): no model runs here. The real engine is
exercised in test_engine_e2e.py."""
import json

import pytest

from fakes import FakeEngine
from glan_local.config import CannotProduce
from glan_local.run import generate

LEVELS = ["taxonomy", "subjects", "syllabus", "questions", "answers"]


def _run(compose, fake_model, out, *overrides, engine=None):
    cfg = compose(f"model.path={fake_model}", *overrides)
    engine = engine or FakeEngine()
    summary = generate(cfg, out, engine_factory=lambda p: engine)
    return summary, engine


def _read(path):
    return [json.loads(line) for line in open(path)]


def test_full_tree_counts_and_provenance(compose, fake_model, tmp_path):
    s, _ = _run(compose, fake_model, tmp_path / "run", "breadth.questions_per_syllabus=3")
    lv = s["levels"]
    for name in LEVELS:
        assert lv[name]["planned"] == lv[name]["ok"] + lv[name]["failed"]
    assert lv["taxonomy"]["planned"] == 1 + 2 + 2          # fields, sub-fields, disciplines requests
    assert lv["subjects"]["planned"] == 2 * 2               # 2 disciplines x 2 queries
    assert lv["syllabus"]["planned"] == 2 * 2               # capped at 2 subjects per discipline
    assert lv["questions"]["planned"] == 4 * 3
    assert s["rows"] == lv["answers"]["ok"] == 12
    rows = _read(tmp_path / "run" / "data" / "train.jsonl")
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    for r in rows:
        for k in ("field", "subfield", "discipline", "subject", "subject_level", "session_titles",
                  "key_concepts", "question", "answer", "question_seed", "answer_seed",
                  "question_request", "answer_request", "syllabus_request", "model", "strategy"):
            assert r[k] not in (None, "", []), k
        assert r["messages"] == [{"role": "user", "content": r["question"]},
                                 {"role": "assistant", "content": r["answer"]}]
    assert (tmp_path / "run" / "data" / "train-00000-of-00001.parquet").exists()
    assert (tmp_path / "run" / "taxonomy.yaml").exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rows"] == 12


def test_bad_replies_are_retried_then_recorded_never_rows(compose, fake_model, tmp_path):
    def fault(req):
        if req.level == "questions" and req.messages[-1]["content"].count("Session 1:"):
            seed = req.sampling["seed"]
            if seed % 3 == 0:
                return ('{"question": "cut', "length")
            if seed % 3 == 1:
                return ('{"question": "   "}', "stop")
            return ('{"question": 7}', "stop")
        return None
    # Every question fails: the run ends with one line and exit 3 (cli), after writing what it did.
    with pytest.raises(CannotProduce, match="every request of the questions level failed"):
        _run(compose, fake_model, tmp_path / "run", "engine.max_attempts=3", engine=FakeEngine(fault))
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    q = s["levels"]["questions"]
    assert q["failed"] == q["planned"] and q["ok"] == 0
    assert q["attempts"] == 3 * q["planned"] and q["retries"] == 2 * q["planned"]
    assert sum(q["failures"].values()) == q["failed"]
    assert set(q["failures"]) <= {"cut at max_tokens", "invalid"}
    assert s["rows"] == 0
    fails = _read(tmp_path / "run" / "levels" / "failures.jsonl")
    assert len(fails) == q["failed"] and all(f["attempts"] == 3 for f in fails)


def test_pipelined_and_level_by_level_give_identical_outputs(compose, fake_model, tmp_path):
    _run(compose, fake_model, tmp_path / "a", "engine.pipelined=true", "engine.max_in_flight=4")
    _run(compose, fake_model, tmp_path / "b", "engine.pipelined=false")
    for name in ("taxonomy.yaml", "levels/syllabus.jsonl", "levels/questions.jsonl", "data/train.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name


def test_pipelining_keeps_more_requests_in_flight_than_level_by_level(compose, fake_model, tmp_path):
    """The fake engine finishes 3 requests per step, so whatever waits piles up in flight:
    without level barriers the next level's requests join while the current one drains."""
    piped, _ = _run(compose, fake_model, tmp_path / "a", "engine.pipelined=true", "engine.speculate_below=0")
    level, _ = _run(compose, fake_model, tmp_path / "b", "engine.pipelined=false", "engine.speculate_below=0")
    p, lv = piped["totals"], level["totals"]
    assert p["generated"] == lv["generated"] > 0
    assert p["mean_in_flight"] > lv["mean_in_flight"] > 0
    assert 0 <= p["engine_step_s"] <= p["generation_s"] + 0.1


def _flaky(req):
    """Replies that fail by seed (so by attempt), on two levels: some asks need a retry or two,
    some fail every attempt."""
    if req.level in ("syllabus", "questions") and req.sampling["seed"] % 5 < 3:
        return ('{"cut', "length") if req.sampling["seed"] % 2 else ('{"sessions": []}', "stop")
    return None


def test_speculative_retries_change_nothing_but_the_waiting(compose, fake_model, tmp_path):
    """Later attempts started ahead of need: the same attempt wins each ask as when every retry
    waits for the attempt before it, unneeded ones are aborted or counted as wasted."""
    OUT = ("taxonomy.yaml", "levels/syllabus.jsonl", "levels/questions.jsonl", "levels/failures.jsonl",
           "data/train.jsonl")
    few = "engine.min_level_attempts=1"      # engine.max_attempts for every ask: some fail them all
    waits, _ = _run(compose, fake_model, tmp_path / "a", "engine.speculate_below=0", few, engine=FakeEngine(_flaky))
    ahead, eng = _run(compose, fake_model, tmp_path / "b", "engine.speculate_below=64", few,
                      engine=FakeEngine(_flaky, batch=2))
    for name in OUT:
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    w, a = waits["totals"], ahead["totals"]
    assert w["speculative"] == w["wasted"] == 0
    assert a["speculative"] > 0 and a["wasted"] > 0 and a["generated"] > w["generated"]
    assert a["failed"] == w["failed"] > 0 and a["output_tokens"] - a["wasted_output_tokens"] == w["output_tokens"]
    for lv in ("syllabus", "questions"):
        assert ahead["levels"][lv]["retries"] == waits["levels"][lv]["retries"] > 0
    # Aborted attempts never reached the store; every stored reply is one the engine finished.
    assert sum(ahead["levels"][lv]["aborted"] for lv in LEVELS) == len(getattr(eng, "aborted", []))
    # The run's store replays to the same files (speculative leftovers are ignored).
    again, e2 = _run(compose, fake_model, tmp_path / "b", "engine.speculate_below=64", few, engine=FakeEngine(_flaky))
    assert e2.submitted == [] and (tmp_path / "b" / "data" / "train.jsonl").read_text() == \
        (tmp_path / "a" / "data" / "train.jsonl").read_text()


def test_second_run_replays_the_store_and_generates_nothing(compose, fake_model, tmp_path):
    s1, e1 = _run(compose, fake_model, tmp_path / "run")
    first = (tmp_path / "run" / "data" / "train.jsonl").read_text()
    s2, e2 = _run(compose, fake_model, tmp_path / "run")
    assert e2.submitted == [] and s2["totals"]["from_store"] == s1["totals"]["planned"]
    assert (tmp_path / "run" / "data" / "train.jsonl").read_text() == first


def test_review_stops_after_taxonomy_and_edited_file_continues(compose, fake_model, tmp_path):
    s, eng = _run(compose, fake_model, tmp_path / "review", "taxonomy.review=true")
    assert {r.level for r in eng.submitted} == {"taxonomy"} and s["rows"] == 0
    tax = (tmp_path / "review" / "taxonomy.yaml").read_text()
    import yaml
    data = yaml.safe_load(tax)
    data["fields"] = data["fields"][:1]                      # a reviewer prunes a field
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data))
    s2, eng2 = _run(compose, fake_model, tmp_path / "cont", f"taxonomy.file={edited}")
    assert "taxonomy" not in {r.level for r in eng2.submitted}
    rows = _read(tmp_path / "cont" / "data" / "train.jsonl")
    assert rows and {r["field"] for r in rows} == {data["fields"][0]["name"]}


def test_verify_replays_the_store_and_catches_tampering(compose, fake_model, tmp_path):
    from glan_local.verify import verify

    run = tmp_path / "run"
    _run(compose, fake_model, run)
    ok, lines = verify(run)
    assert ok and lines == [], lines
    rows = (run / "data" / "train.jsonl").read_text().splitlines()
    (run / "data" / "train.jsonl").write_text("\n".join(rows[:-1]) + "\n")     # a row goes missing
    ok, lines = verify(run)
    assert not ok and lines == [f"data/train.jsonl: differs from the replay: 1 row only in the replay (e.g. {json.loads(rows[-1])['id']})"]


def test_run_dir_of_another_config_is_refused_unless_overwrite(compose, fake_model, tmp_path):
    from glan_local.config import ConfigError

    run = tmp_path / "run"
    _run(compose, fake_model, run)
    before = (run / "data" / "train.jsonl").read_text()
    with pytest.raises(ConfigError) as e:
        _run(compose, fake_model, run, "breadth.questions_per_syllabus=1")
    assert e.value.key == "out_dir" and "overwrite=true" in str(e.value)
    assert (run / "data" / "train.jsonl").read_text() == before            # nothing touched
    # Settings that only change how a run goes are not a different config.
    _run(compose, fake_model, run, "engine.max_in_flight=2")
    s, eng = _run(compose, fake_model, run, "breadth.questions_per_syllabus=1", "overwrite=true")
    # The store was kept: only the answers of... nothing upstream is generated again.
    assert {r.level for r in eng.submitted} <= {"questions", "answers"} and s["rows"] > 0


def test_shared_cache_reuses_upstream_levels_across_runs(compose, fake_model, tmp_path):
    cache = tmp_path / "cache"
    s1, _ = _run(compose, fake_model, tmp_path / "a", f"cache_dir={cache}")
    s2, eng = _run(compose, fake_model, tmp_path / "b", f"cache_dir={cache}", "breadth.questions_per_syllabus=3")
    lv = s2["levels"]
    for name in ("taxonomy", "subjects", "syllabus"):
        assert lv[name]["from_cache"] == lv[name]["attempts"] > 0
    assert {r.level for r in eng.submitted} == {"questions", "answers"}
    assert s2["totals"]["from_cache"] > 0 and s1["totals"]["from_cache"] == 0


def test_answers_by_a_second_teacher_after_the_first_is_stopped(compose, fake_model, tmp_path):
    """answers.model: the question teacher generates every level up to the questions and is
    closed; only then does the answer teacher start, and it gets only the answers."""
    from glan_local.verify import verify

    answer_model = tmp_path / "answer-model"
    answer_model.mkdir()
    for f in fake_model.iterdir():
        (answer_model / f.name).write_bytes(f.read_bytes())
    (answer_model / "config.json").write_text('{"other": 1}')   # another model: another identity
    log = []

    class Logged(FakeEngine):
        def __init__(self, name):
            super().__init__()
            self.name = name
            log.append(("start", name))

        def submit(self, req):
            if req.level != "self-check":       # the backend's start-up check, not a level of the tree
                log.append((self.name, req.level))
            super().submit(req)

        def close(self):
            log.append(("close", self.name))

    engines = {}

    def factory(path):
        engines[path.name] = Logged(path.name)
        return engines[path.name]

    ov = ["model@answers.model=smollm2-135m", f"answers.model.path={answer_model}", "answers.model.name=answerer"]
    cfg = compose(f"model.path={fake_model}", *ov)
    run = tmp_path / "run"
    summary = generate(cfg, run, engine_factory=factory)
    first_answer = log.index(("start", "answer-model"))
    assert ("close", "fake-model") in log[:first_answer]
    assert {lv for who, lv in log[:first_answer] if who == "fake-model"} == {"taxonomy", "subjects", "syllabus", "questions"}
    assert {lv for who, lv in log[first_answer:] if who == "answer-model"} == {"answers"}
    rows = _read(run / "data" / "train.jsonl")
    # model.path without a name: the rows name the folder (the preset's name would mislabel them).
    assert rows and all(r["answer_model"] == "answerer" and r["model"] == "fake-model" for r in rows)
    assert summary["answer_model"]["name"] == "answer-model"
    ok, lines = verify(run)
    assert ok, lines

    # The same config with one teacher asks the same questions; the answers are other requests.
    _, single = _run(compose, fake_model, tmp_path / "single")
    by_level = lambda reqs, lv: {r.key for r in reqs if r.level == lv}
    assert by_level(single.submitted, "questions") == by_level(engines["fake-model"].submitted, "questions")
    assert not by_level(single.submitted, "answers") & by_level(engines["answer-model"].submitted, "answers")

    # Resumed with every reply stored: no teacher is even started.
    log.clear()
    again = generate(compose(f"model.path={fake_model}", *ov), run, engine_factory=factory)
    assert log == [] and again["totals"]["generated"] == 0


def test_a_bad_answer_teacher_is_refused_before_anything_runs(compose, fake_model, tmp_path):
    from glan_local.config import ConfigError

    cfg = compose(f"model.path={fake_model}", "model@answers.model=smollm2-135m",
                  f"answers.model.path={tmp_path / 'missing'}")
    with pytest.raises(ConfigError) as e:
        generate(cfg, tmp_path / "run", engine_factory=lambda p: FakeEngine())
    assert e.value.key == "answers.model.path"
    assert not (tmp_path / "run" / "levels").exists()


def test_regeneration_reasks_only_the_picked_asks_with_new_settings(compose, fake_model, tmp_path):
    """glan-local-regen's round, with the FAKE engine: cut answers asked again with more
    max_tokens under new seeds; everything else from the store; verify still passes; the
    run's own command afterwards keeps the round and generates nothing."""
    import zlib

    from glan_local import regen
    from glan_local.verify import verify

    def cut_some(req):   # some answers are cut whatever the seed, unless asked with more max_tokens
        if req.level == "answers" and req.sampling["max_tokens"] < 1000 and \
                zlib.crc32(req.messages[-1]["content"].encode()) % 2 == 0:
            return ("An answer that runs on and", "length")
        return None

    run = tmp_path / "run"
    ov = ("engine.speculate_below=0", "quality.enabled=false")
    first, _ = _run(compose, fake_model, run, *ov, engine=FakeEngine(cut_some))
    cut = [f for f in _read(run / "levels" / "failures.jsonl") if f["reason"] == "cut at max_tokens"]
    assert cut and {f["level"] for f in cut} == {"answers"} and first["rows"] < first["levels"]["answers"]["planned"]
    stored_before = first["totals"]["generated"]

    cfg, rounds = regen.new_round(run, ["answers"], ["cut"], None, [], None, ["sampling.answers.max_tokens=1024"])
    eng = FakeEngine(cut_some)
    s = generate(cfg, run, engine_factory=lambda p: eng, rounds=rounds)
    assert {r.level for r in eng.submitted} == {"answers"}
    assert {(r.sampling["max_tokens"]) for r in eng.submitted} == {1024}
    assert len(eng.submitted) == len(cut) == s["regenerated"]["asks"]       # one attempt each: none is cut now
    assert s["totals"]["generated"] == len(cut) and s["totals"]["from_store"] == \
        sum(lv["attempts"] for lv in s["levels"].values()) - len(cut)
    assert s["rows"] == first["levels"]["answers"]["planned"] and not _read(run / "levels" / "failures.jsonl")
    man = json.loads((run / "manifest.json").read_text())
    assert man["regenerated"][0]["settings"] == {"sampling": {"answers": {"max_tokens": 1024}}}
    assert len(man["regenerated"][0]["asks"]) == len(cut)
    import sqlite3

    assert sqlite3.connect(run / "store.sqlite").execute("SELECT COUNT(*) FROM replies").fetchone()[0] == \
        stored_before + len(cut)                                            # the cut attempts are kept
    ok, lines = verify(run)
    assert ok, lines
    rows = (run / "data" / "train.jsonl").read_text()
    eng2 = FakeEngine(cut_some)
    again = generate(compose(f"model.path={fake_model}", *ov), run, engine_factory=lambda p: eng2)
    assert eng2.submitted == [] and again["regenerated"]["rounds"] == 1
    assert (run / "data" / "train.jsonl").read_text() == rows
