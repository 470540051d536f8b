import pytest

from glan_local.config import ConfigError
from glan_local.levels import subjects, taxonomy
from glan_local.seeds import derive_seed


def test_seed_derivation_is_deterministic_and_identity_sensitive():
    s = derive_seed(0, "questions", "00001.00002", 0, 0)
    assert s == derive_seed(0, "questions", "00001.00002", 0, 0)
    others = {derive_seed(1, "questions", "00001.00002", 0, 0), derive_seed(0, "answers", "00001.00002", 0, 0),
              derive_seed(0, "questions", "00001.00003", 0, 0), derive_seed(0, "questions", "00001.00002", 1, 0),
              derive_seed(0, "questions", "00001.00002", 0, 1)}
    assert s not in others and len(others) == 5
    assert 0 <= s < 2**31


def test_subject_merge_normalizes_dedups_and_caps():
    lists = [[{"name": "Organic Chemistry"}, {"name": "Calculus"}],
             [{"name": "organic  chemistry!"}, {"name": "Thermodynamics"}, {"name": "Calculus"}],
             [{"name": "Quantum Mechanics"}]]
    merged = subjects.merge(lists, cap=10)
    assert [m["name"] for m in merged] == ["Organic Chemistry", "Calculus", "Thermodynamics", "Quantum Mechanics"]
    assert [m["query"] for m in merged] == [0, 0, 1, 2]
    assert len(subjects.merge(lists, cap=2)) == 2
    assert subjects.normalize("  Ｃａｌｃｕｌｕｓ  I ") == "calculus i"


def test_schemas_reject_blank_and_repeated_names():
    Names = taxonomy.schema(2)
    assert Names.model_validate_json('{"names": ["A", "B"]}').names == ["A", "B"]
    for bad in ('{"names": ["A", "  "]}', '{"names": ["A", "a"]}', '{"names": ["A"]}', '{"names": []}'):
        with pytest.raises(ValueError):
            Names.model_validate_json(bad)
    S = subjects.schema(3, 2)
    with pytest.raises(ValueError):
        S.model_validate_json('{"subjects": []}')
    schema = S.model_json_schema()
    assert "maxLength" not in str(schema)   # outlines compiles maxLength slowly: never emitted


@pytest.mark.parametrize("override,key", [
    ("breadth.fields=0", "breadth.fields"),
    ("breadth.questions_per_syllabus=-1", "breadth.questions_per_syllabus"),
    ("breadth.sessions_min=9", "breadth.sessions_min"),
    ("breadth.two_session_fraction=1.5", "breadth.two_session_fraction"),
    ("sampling.answers.top_p=0", "sampling.answers.top_p"),
    ("sampling.syllabus.temperature=-1", "sampling.syllabus.temperature"),
    ("sampling.answers.max_tokens=5000", "sampling.answers.max_tokens"),
    ("engine.max_attempts=0", "engine.max_attempts"),
    ("model.gpu_memory_utilization=1.5", "model.gpu_memory_utilization"),
])
def test_validation_names_the_key(compose, override, key):
    cfg = compose(override)
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert e.value.key == key
    assert "\n" not in str(e.value) and "Fix:" in str(e.value)


def test_defaults_and_presets_validate(compose):
    for overrides in ([], ["breadth=small"], ["breadth=paper", "model.max_model_len=8192"], ["model=qwen2.5-7b-instruct"],
                      ["model=llama-3.3-70b-instruct", "engine.backend=xgrammar"]):
        compose(*overrides).validate()
    assert compose("model=llama-3.3-70b-instruct").model.tensor_parallel_size == 8


def test_taxonomy_file_round_trip_and_errors(tmp_path):
    recs = [{"field": "F", "subfield": "S", "discipline": "D1"}, {"field": "F", "subfield": "S", "discipline": "D2"},
            {"field": "G", "subfield": "T", "discipline": "E"}]
    import yaml
    p = tmp_path / "tax.yaml"
    p.write_text(yaml.safe_dump(taxonomy.to_file(recs)))
    nodes = taxonomy.load(str(p))
    part = taxonomy.name_part
    assert [(n.path, n.data["discipline"]) for n in nodes] == [
        ((part("F"), part("S"), part("D1")), "D1"), ((part("F"), part("S"), part("D2")), "D2"),
        ((part("G"), part("T"), part("E")), "E")]
    for text in ("fields: [", "{}", "fields: []", "fields: [{name: F, subfields: [{name: S, disciplines: []}]}]",
                 "fields: [{name: F, subfields: [{name: S, disciplines: [A, a]}]}]"):
        p.write_text(text)
        with pytest.raises(ConfigError) as e:
            taxonomy.load(str(p))
        assert e.value.key == "taxonomy.file" and str(p) in str(e.value)


def test_level_files_are_sorted_by_external_merge(tmp_path, monkeypatch):
    import json
    import random

    from glan_local import export

    monkeypatch.setattr(export, "CHUNK", 3)          # force several sorted runs and a merge
    (tmp_path / "levels").mkdir()
    ids = [f"{i:05d}.{j:05d}" for i in range(4) for j in range(5)]
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    (tmp_path / "levels" / "questions.jsonl.part").write_text(
        "".join(json.dumps({"id": i, "question": f"q{i}"}) + "\n" for i in shuffled))
    counts = export.finalize_levels(tmp_path, ["questions"])
    out = [json.loads(line)["id"] for line in (tmp_path / "levels" / "questions.jsonl").read_text().splitlines()]
    assert out == ids and counts["questions"] == 20
    assert sorted(p.name for p in (tmp_path / "levels").iterdir()) == ["failures.jsonl", "questions.jsonl"]


def test_run_names_stay_short_and_distinct():
    from glan_local.cli import _run_name

    long_a = ",".join(f"sampling.answers.max_tokens={i}" for i in range(30))
    long_b = long_a.replace("=29", "=31")
    a, b = _run_name("m", "tiny", long_a), _run_name("m", "tiny", long_b)
    assert len(a) <= 120 and a != b
    assert _run_name("m", "tiny", "breadth.fields=3,engine.max_in_flight=8") == "m_tiny_breadth.fields=3"


def test_small_levels_get_more_attempts(compose):
    """engine.min_level_attempts: the root is one ask alone, so it gets 12 tries; a group of n asks
    gives each max(engine.max_attempts, ceil(12 / n))."""
    from glan_local.levels.base import Node
    from glan_local.plan import asks_per_group, attempts_rule

    cfg = compose("breadth=tiny")                       # 2 fields x 1 sub-field x 1 discipline
    groups = asks_per_group(cfg)
    assert groups[("taxonomy", 0)] == 1 and groups[("taxonomy", 1)] == 2 and groups[("taxonomy", 2)] == 2
    # Below the taxonomy, one discipline's asks of a level are a group, however many disciplines.
    assert groups[("subjects", 3)] == 2 and groups[("syllabus", 4)] == 2 and groups[("questions", 5)] == 2 * 2
    rule = attempts_rule(cfg)
    p = ("a", "b", "c", "d", "e")
    assert rule(Node("taxonomy", ())) == 12 and rule(Node("taxonomy", p[:1])) == 6
    assert rule(Node("subjects", p[:3])) == 6 and rule(Node("answers", p)) == 4
    assert rule(Node("taxonomy", p[:3])) == 12          # a flat list's parents ask: one per discipline
    one = attempts_rule(compose("breadth=tiny", "engine.min_level_attempts=1", "engine.max_attempts=2"))
    assert one(Node("taxonomy", ())) == 2


def test_progress_is_a_bar_per_level_on_a_terminal_and_a_line_per_10_s_elsewhere(monkeypatch):
    from glan_local import progress
    from glan_local.scheduler import LevelStats

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    said = []
    p = progress.Progress(said.append, tty=False)
    st = LevelStats(planned=4, ok=1)
    for t in (101, 105, 109.9, 110, 111, 125):
        now[0] = t
        p("subjects", st)
    assert said == ["progress at 10 s: subjects 1/4", "progress at 25 s: subjects 1/4"]
    import io

    out = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", out)
    bars = progress.Progress(said.append, tty=True)
    bars("taxonomy", LevelStats(planned=5, ok=5))
    bars("subjects", LevelStats(planned=4, ok=2, failed=1))
    bars.close()
    assert set(bars.bars) == {"taxonomy", "subjects"} and len(said) == 2
    assert "failed=1" in out.getvalue()


def test_atomic_write_keeps_the_old_file_on_failure_and_tolerates_a_refused_directory_fsync(tmp_path, monkeypatch):
    import errno
    import os

    from glan_local import atomic

    target = tmp_path / "summary.json"
    atomic.atomic_write_text(target, "old")
    with pytest.raises(OSError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    # CIFS and some FUSE mounts refuse fsync on a directory (EINVAL): the write still lands.
    real, seen = os.fsync, []

    def fsync(fd):
        seen.append(fd)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic.atomic_write_text(target, "new", shared=True)
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["summary.json"] and len(seen) == 2
