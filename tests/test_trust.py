"""Nothing a check does can lose data, and a run is its content (issue 22), with the FAKE engine
(tests/fakes.py) where a model would only slow the test down: verify only reads and gives a
verdict for any input; a run's identity is content, not paths; merge carries every shard's
rounds; node ids follow names; engine errors are transient; every run has a glan.log; the
embedded conversion happens once however many processes ask for it."""
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from fakes import FakeEngine
from glan_local.config import ConfigError
from glan_local.run import generate

BIN = Path(sys.executable).parent
TAXONOMY = {"fields": [
    {"name": "Natural Sciences", "subfields": [{"name": "Chemistry", "disciplines": ["Organic Chemistry",
                                                                                   "Physical Chemistry"]}]},
    {"name": "Services", "subfields": [{"name": "Retail", "disciplines": ["Retailing", "Logistics"]}]},
]}


def _model(d: Path, seed: int = 1) -> Path:
    """A model folder with real safetensors weights (the FAKE engine never loads them)."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file({f"layers.{i}.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(3)},
              str(d / "model.safetensors"))
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "chat_template.jinja").write_text("{{ messages }}")
    return d


def _run(compose, model, out, *overrides, engine=None):
    engine = engine or FakeEngine()
    cfg = compose(f"model.path={model}", "quality.enabled=false", "engine.speculate_below=0", *overrides)
    return generate(cfg, out, engine_factory=lambda p: engine), engine


def _tax(path: Path, taxonomy: dict = TAXONOMY) -> Path:
    path.write_text(yaml.safe_dump(taxonomy, sort_keys=False))
    return path


def _bytes(d: Path) -> dict[str, str]:
    """Every file under d (hidden ones and the store's -wal/-shm too) by content."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _verify(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "glan-local-verify"), str(run)], capture_output=True, text=True, timeout=300)


def _one_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr + p.stdout and len(lines) == 1, p.stderr[-3000:]
    return lines[0]


# --- 1. verify only reads, and always gives a verdict ----------------------------------------------

@pytest.fixture
def finished(compose, tmp_path):
    model = _model(tmp_path / "model")
    run = tmp_path / "run"
    _run(compose, model, run, "quality.enabled=true", "quality.report.enabled=false")
    return model, run


def test_verify_of_an_intact_run_changes_no_byte(finished):
    _, run = finished
    before = _bytes(run)
    p = _verify(run)
    assert p.returncode == 0 and "OK:" in p.stdout, p.stdout + p.stderr
    assert _bytes(run) == before


def test_verify_of_a_store_missing_a_reply_writes_nothing_and_the_resume_regenerates_it(compose, finished):
    model, run = finished
    rows = (run / "data" / "train.jsonl").read_text().splitlines()
    gone = json.loads(rows[0])["answer_request"]
    con = sqlite3.connect(run / "store.sqlite")
    con.execute("DELETE FROM replies WHERE key=?", (gone,))
    con.commit()
    con.close()
    before = _bytes(run)
    p = _verify(run)
    assert p.returncode == 1 and "MISMATCH" in p.stdout, p.stdout + p.stderr
    assert "store.sqlite: 1 reply the run used is missing (answers 1; e.g. answers " + gone in p.stdout
    assert "data/train.jsonl: differs from the replay: 1 row only in the run directory" in p.stdout
    assert _bytes(run) == before, "verify wrote into the run directory"
    # The gap is repairable: the same command asks that one reply again, and every row is back.
    s, eng = _run(compose, model, run, "quality.enabled=true", "quality.report.enabled=false")
    assert [r.key for r in eng.submitted] == [gone] and s["rows"] == len(rows)
    assert _verify(run).returncode == 0


def test_verify_names_every_kind_of_tampering(finished):
    _, run = finished
    pristine = run.parent / "pristine"
    shutil.copytree(run, pristine)

    def fresh():
        shutil.rmtree(run)
        shutil.copytree(pristine, run)

    # An edited row: named by file, id and field, with the store entry it came from.
    rows = [json.loads(x) for x in (run / "levels" / "answers.jsonl").read_text().splitlines()]
    rows[1]["answer"] = "something else"
    (run / "levels" / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = _verify(run)
    assert p.returncode == 1 and f"levels/answers.jsonl: differs from the replay: 1 row edited (e.g. {rows[1]['id']} " \
        f"(answer; store entry {rows[1]['answer_request']}))" in p.stdout, p.stdout
    # A reply edited in the store: the rows it made differ from the files.
    fresh()
    con = sqlite3.connect(run / "store.sqlite")
    con.execute("UPDATE replies SET text='changed' WHERE key=?", (rows[2]["answer_request"],))
    con.commit()
    con.close()
    p = _verify(run)
    assert p.returncode == 1 and "data/train.jsonl: differs from the replay: 1 row edited" in p.stdout, p.stdout
    # The manifest's config edited: its identity no longer matches, and the replay misses replies.
    fresh()
    man = json.loads((run / "manifest.json").read_text())
    man["config"]["seed"] = 5
    (run / "manifest.json").write_text(json.dumps(man))
    p = _verify(run)
    assert p.returncode == 1 and "its identity and its own config or inputs disagree: config seed: 0 -> 5" in p.stdout
    # A fingerprint edited, a published file edited, a level file deleted.
    fresh()
    man = json.loads((run / "manifest.json").read_text())
    man["fingerprints"]["taxonomy.yaml"] = "0" * 64
    (run / "manifest.json").write_text(json.dumps(man))
    (run / "publish" / "quality" / "removed.jsonl").write_text("{}\n")
    (run / "levels" / "questions.jsonl").unlink()
    p = _verify(run)
    assert p.returncode == 1
    assert "taxonomy.yaml: the same as the replay, but not as the manifest recorded it" in p.stdout
    assert "publish/quality/removed.jsonl: edited since the quality step wrote it" in p.stdout
    assert "levels/questions.jsonl: missing from the run directory" in p.stdout


@pytest.mark.parametrize("damage", ["garbage-manifest", "not-a-manifest", "garbage-store", "empty-store",
                                    "no-store", "no-directory", "a-file"])
def test_verify_of_unreadable_input_is_one_line_and_exit_2(finished, damage):
    _, run = finished
    target = run
    if damage == "garbage-manifest":
        (run / "manifest.json").write_bytes(os.urandom(300))
    elif damage == "not-a-manifest":
        (run / "manifest.json").write_text("[1, 2, 3]")
    elif damage == "garbage-store":
        (run / "store.sqlite").write_bytes(os.urandom(8192))
    elif damage == "empty-store":
        (run / "store.sqlite").write_bytes(b"")
    elif damage == "no-store":
        (run / "store.sqlite").unlink()
    elif damage == "no-directory":
        target = run.parent / "nowhere"
    else:
        target = run / "manifest.json"
    before = _bytes(run)
    p = _verify(target)
    line = _one_line(p)
    assert p.returncode == 2 and line.startswith("[glan-local-verify] cannot verify: "), line
    name = {"garbage-manifest": "manifest.json", "not-a-manifest": "manifest.json", "garbage-store": "store.sqlite",
            "empty-store": "store.sqlite", "no-store": "store.sqlite", "no-directory": "nowhere",
            "a-file": "manifest.json"}[damage]
    assert name in line, line
    assert _bytes(run) == before


def test_verify_refuses_a_run_being_written_without_waiting_or_writing(finished):
    import fcntl

    _, run = finished
    before = _bytes(run)
    with open(run / ".lock", "r+") as held:          # a glan-local run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = _verify(run)
    line = _one_line(p)
    assert p.returncode == 2 and "still using it" in line and str(run) in line, line
    assert _bytes(run) == before


def test_verify_reads_replies_still_in_the_write_ahead_log_without_writing(finished, tmp_path):
    """A run killed after its last commit leaves replies in store.sqlite-wal: verify reads a
    copy of both, and the directory keeps exactly the files it had."""
    _, run = finished
    copy = tmp_path / "killed"
    shutil.copytree(run, copy)
    # Move every reply into the WAL: delete them, checkpoint, then add them back uncheckpointed
    # and end the writer without closing (as SIGKILL would).
    code = textwrap.dedent(f"""
        import os, sqlite3
        con = sqlite3.connect({str(copy / 'store.sqlite')!r}, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TEMP TABLE keep AS SELECT * FROM replies")
        con.execute("DELETE FROM replies")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("INSERT INTO replies SELECT * FROM keep")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (copy / "store.sqlite-wal").stat().st_size > 0
    before = _bytes(copy)
    p = _verify(copy)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _bytes(copy) == before


def test_cfg_job_writes_nothing(tmp_path):
    (tmp_path / "cwd").mkdir()
    p = subprocess.run([str(BIN / "glan-local"), "--cfg", "job", f"out_dir={tmp_path / 'run'}"],
                       cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "breadth:" in p.stdout, p.stderr
    assert list((tmp_path / "cwd").iterdir()) == [] and not (tmp_path / "run").exists()


# --- 2. one content identity ---------------------------------------------------------------------

def test_a_run_directory_and_its_model_moved_elsewhere_resume_with_nothing_generated(compose, tmp_path):
    model, run = _model(tmp_path / "a" / "teacher"), tmp_path / "a" / "run"
    tax = _tax(tmp_path / "a" / "taxonomy.yaml")
    first, _ = _run(compose, model, run, f"taxonomy.file={tax}")
    shutil.move(tmp_path / "a", tmp_path / "b")
    b = tmp_path / "b"
    again, eng = _run(compose, b / "teacher", b / "run", f"taxonomy.file={b / 'taxonomy.yaml'}")
    assert eng.submitted == [] and again["totals"]["generated"] == 0 and again["rows"] == first["rows"] > 0
    assert json.loads((b / "run" / "manifest.json").read_text())["identity_sha256"] == \
        json.loads((b / "run" / "run-config.json").read_text())["identity_sha256"]


@pytest.mark.parametrize("what", ["taxonomy.file", "prompts.questions", "model"])
def test_an_input_edited_in_place_is_refused_naming_it(compose, tmp_path, what):
    model, run = _model(tmp_path / "teacher"), tmp_path / "run"
    tax = _tax(tmp_path / "taxonomy.yaml")
    tpl = tmp_path / "questions.j2"
    tpl.write_text((Path(__file__).resolve().parent.parent / "prompts" / "questions.j2").read_text())
    ov = (f"taxonomy.file={tax}", f"prompts.questions={tpl}")
    _run(compose, model, run, *ov)
    before = (run / "data" / "train.jsonl").read_bytes()
    if what == "taxonomy.file":
        tax.write_text(tax.read_text().replace("Logistics", "Shipping"))
    elif what == "prompts.questions":
        tpl.write_text(tpl.read_text() + "\nBe brief.\n")
    else:
        with open(model / "model.safetensors", "r+b") as f:    # 4 bytes inside one tensor
            f.seek(os.path.getsize(model / "model.safetensors") - 1000)
            f.write(b"\x01\x02\x03\x04")
    with pytest.raises(ConfigError) as e:
        _run(compose, model, run, *ov)
    msg = str(e.value)
    assert e.value.key == "out_dir" and f"input {what} changed" in msg and "overwrite=true" in msg \
        and "out_dir=" in msg and "\n" not in msg, msg
    assert (run / "data" / "train.jsonl").read_bytes() == before


def test_a_four_byte_weight_edit_gets_no_reply_of_the_original_model(compose, tmp_path):
    model, cache = _model(tmp_path / "teacher"), tmp_path / "cache"
    first, _ = _run(compose, model, tmp_path / "run1", f"cache_dir={cache}")
    with open(model / "model.safetensors", "r+b") as f:    # inside the second tensor, away from its ends and middle
        f.seek(8 + int.from_bytes(f.read(8), "little") + 64 * 64 * 4 + 4000)
        f.write(b"\xde\xad\xbe\xef")
    second, eng = _run(compose, model, tmp_path / "run2", f"cache_dir={cache}")
    assert second["totals"]["from_cache"] == 0 and len(eng.submitted) == first["totals"]["generated"]


def test_a_models_digest_is_remembered_and_a_hidden_edit_is_still_seen(tmp_path, monkeypatch):
    from glan_local import hashing
    from glan_local.model import model_identity

    monkeypatch.setenv("GLAN_LOCAL_CACHE", str(tmp_path / "cache"))
    model = _model(tmp_path / "teacher")
    save_file({"big": np.ones((1024, 1024), dtype=np.float32)}, str(model / "model.safetensors"))  # 4 MB: remembered
    first = model_identity(model)
    hashed = []
    monkeypatch.setattr(hashing, "open", lambda p, *a, **k: hashed.append(Path(p).name) or open(p, *a, **k),
                        raising=False)
    assert model_identity(model)["identity"] == first["identity"]
    assert "model.safetensors" not in hashed                            # a second run pays nothing for it
    st = os.stat(model / "model.safetensors")
    with open(model / "model.safetensors", "r+b") as f:
        f.seek(2 << 20)
        f.write(b"\x00\x00\x00\x01")
    os.utime(model / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))     # the mtime put back
    assert model_identity(model)["identity"] != first["identity"] and "model.safetensors" in hashed


# --- 3. merge carries every shard's rounds ------------------------------------------------------------

def test_merge_carries_every_shards_regeneration_rounds(compose, tmp_path):
    import zlib

    from glan_local import regen
    from glan_local.merge import merge

    def cut_some(req):
        if req.level == "answers" and req.sampling["max_tokens"] < 1000 and \
                zlib.crc32(req.messages[-1]["content"].encode()) % 2 == 0:
            return ("An answer that runs on and", "length")
        return None

    model, tax = _model(tmp_path / "teacher"), _tax(tmp_path / "taxonomy.yaml")
    dirs = []
    for i in range(2):
        d = tmp_path / f"shard{i}"
        _run(compose, model, d, f"taxonomy.file={tax}", "shard.count=2", f"shard.index={i}",
             engine=FakeEngine(cut_some))
        dirs.append(d)
    # Shard 1 alone asks its cut answers again: its rounds differ from shard 0's (none).
    cfg, rounds = regen.new_round(dirs[1], ["answers"], ["cut"], None, [], None, ["sampling.answers.max_tokens=1024"])
    assert rounds[0]["scope"] == {"index": 1, "count": 2}
    generate(cfg, dirs[1], engine_factory=lambda p: FakeEngine(cut_some), rounds=rounds)
    rows = sum(json.loads((d / "summary.json").read_text())["rows"] for d in dirs)
    out = tmp_path / "merged"
    s = merge(out, dirs, quality=False)
    assert s["rows"] == rows
    man = json.loads((out / "manifest.json").read_text())
    assert [r["scope"] for r in man["regenerated"]] == [{"index": 1, "count": 2}]
    assert _verify(out).returncode == 0
    again, eng = _run(compose, model, out, f"taxonomy.file={tax}")
    assert eng.submitted == [] and again["rows"] == rows


def test_merge_refuses_shards_of_another_run_naming_the_difference(compose, tmp_path):
    from glan_local.merge import MergeError, merge

    model, tax = _model(tmp_path / "teacher"), _tax(tmp_path / "taxonomy.yaml")
    other = _model(tmp_path / "other-teacher", seed=2)
    _run(compose, model, tmp_path / "s0", f"taxonomy.file={tax}", "shard.count=2", "shard.index=0")
    _run(compose, other, tmp_path / "s1", f"taxonomy.file={tax}", "shard.count=2", "shard.index=1",
         "model.name=teacher")
    with pytest.raises(MergeError) as e:
        merge(tmp_path / "out", [tmp_path / "s0", tmp_path / "s1"], quality=False)
    assert "not shards of one run: input model changed" in str(e.value)


# --- 4. node ids from names ----------------------------------------------------------------------

def test_pruning_a_discipline_asks_nothing_and_adding_one_asks_only_its_subtree(compose, tmp_path):
    model, cache = _model(tmp_path / "teacher"), tmp_path / "cache"
    full = _tax(tmp_path / "full.yaml")
    first, _ = _run(compose, model, tmp_path / "full", f"taxonomy.file={full}", f"cache_dir={cache}")
    pruned = json.loads(json.dumps(TAXONOMY))
    pruned["fields"][0]["subfields"][0]["disciplines"].remove("Organic Chemistry")
    s, eng = _run(compose, model, tmp_path / "pruned", f"taxonomy.file={_tax(tmp_path / 'p.yaml', pruned)}",
                  f"cache_dir={cache}")
    assert eng.submitted == [] and s["totals"]["generated"] == 0 and 0 < s["rows"] < first["rows"]
    grown = json.loads(json.dumps(TAXONOMY))
    grown["fields"][1]["subfields"][0]["disciplines"].insert(0, "Wholesale")
    s, eng = _run(compose, model, tmp_path / "grown", f"taxonomy.file={_tax(tmp_path / 'g.yaml', grown)}",
                  f"cache_dir={cache}")
    assert eng.submitted and {r.messages[-1]["content"].count("Wholesale") > 0 for r in eng.submitted
                              if r.level == "subjects"} == {True}
    subtree = {json.loads(x)["id"] for x in (tmp_path / "grown" / "levels" / "taxonomy.jsonl").read_text().splitlines()
               if json.loads(x)["discipline"] == "Wholesale"}
    rows = [json.loads(x) for x in (tmp_path / "grown" / "data" / "train.jsonl").read_text().splitlines()]
    new_keys = {r.key for r in eng.submitted}
    for r in rows:
        assert (r["answer_request"] in new_keys) == any(r["id"].startswith(d) for d in subtree)


# --- 5. engine errors are transient --------------------------------------------------------------

class Flaky(FakeEngine):
    """Fails each request's first two tries (finish_reason error): an engine hiccup, not a reply."""

    def __init__(self, fail: int = 2, **kw):
        super().__init__(**kw)
        self.seen: dict = {}
        self.fail = fail

    def _answer(self, req):
        from dataclasses import replace

        c = super()._answer(req)
        self.seen[req.key] = self.seen.get(req.key, 0) + 1
        if req.level == "questions" and self.seen[req.key] <= self.fail:
            return replace(c, text="", finish_reason="error", error="EngineCore: worker restarted")
        return c


def test_engine_errors_are_retried_and_never_stored(compose, tmp_path):
    model = _model(tmp_path / "teacher")
    s, eng = _run(compose, model, tmp_path / "run", "engine.error_backoff_s=0", engine=Flaky())
    q = s["levels"]["questions"]
    assert q["engine_retried"] == 2 * q["planned"] and q["failed"] == 0 and s["rows"] == q["planned"]
    con = sqlite3.connect(tmp_path / "run" / "store.sqlite")
    assert con.execute("SELECT COUNT(*) FROM replies WHERE status='failed'").fetchone() == (0,)
    assert s["totals"]["attempts_by_reason"]["engine_retried"] == 2 * q["planned"]


def test_an_engine_that_dies_stops_the_run_resumably(compose, tmp_path):
    from glan_local.errors import EngineFailed

    class Dies(FakeEngine):
        def step(self):
            if any(r.level == "syllabus" for r in self.submitted):
                raise RuntimeError("EngineDeadError: engine core died")
            return super().step()

    model = _model(tmp_path / "teacher")
    with pytest.raises(EngineFailed) as e:
        _run(compose, model, tmp_path / "run", engine=Dies())
    assert "the teacher's engine failed (RuntimeError: EngineDeadError" in str(e.value) \
        and "run the same command again to resume" in str(e.value)
    con = sqlite3.connect(tmp_path / "run" / "store.sqlite")
    assert con.execute("SELECT COUNT(*) FROM replies WHERE level='syllabus'").fetchone() == (0,)
    kept = con.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    assert kept > 0
    s, eng = _run(compose, model, tmp_path / "run")
    assert s["rows"] > 0 and s["totals"]["from_store"] == kept


# --- 6. a log of each run ------------------------------------------------------------------------

def test_each_run_keeps_a_detailed_log_and_errors_say_where_it_is(compose, tmp_path, monkeypatch, capsys):
    from glan_local import cli

    model = _model(tmp_path / "teacher")
    cfg = compose(f"model.path={model}", "quality.enabled=false", "engine.error_backoff_s=0", "engine.error_retries=1")
    monkeypatch.setattr("glan_local.run.generate.__defaults__", (lambda p: Flaky(fail=5), None, None))
    with pytest.raises(SystemExit) as e:
        cli.run_or_exit(lambda: generate(cfg, tmp_path / "run"), str(tmp_path / "run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 3 and err[-1].endswith(f"(details: {tmp_path / 'run' / 'glan.log'})"), err[-1]
    text = (tmp_path / "run" / "glan.log").read_text()
    assert "DEBUG" in text and "run identity" in text and "Traceback (most recent call last)" in text


# --- 7. the embedded conversion, once ------------------------------------------------------------

def test_two_processes_preparing_the_embedded_teacher_convert_it_once(tmp_path):
    """A stand-in conversion (2 s, writes the folder) in two processes started together: both
    succeed with the same folder, and the conversion ran once."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from glan_local import embedded
        def convert(gguf, target):
            with open({str(tmp_path / 'conversions')!r}, "a") as f:
                f.write("1")
            time.sleep(2)
            tmp = target.with_name(target.name + ".x")
            tmp.mkdir()
            (tmp / "config.json").write_text("{{}}")
            (tmp / ".complete").write_text(embedded._stamp())
            tmp.rename(target)
        embedded.convert = convert
        embedded.fetch_gguf = lambda: Path("unused.gguf")
        print(embedded.embedded_model_dir())
    """)
    env = {**os.environ, "GLAN_LOCAL_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and (tmp_path / "conversions").read_text() == "1"


# --- garbage in the other commands' inputs: one line, never a traceback ------------------------------

GARBAGE = [
    ("merge", "manifest.json"), ("merge", "summary.json"), ("merge", "store.sqlite"), ("merge", "levels/answers.jsonl"),
    ("regen", "manifest.json"), ("regen", "regenerated.json"), ("regen", "levels/failures.jsonl"),
    ("quality", "data/train.jsonl"), ("quality", "file.jsonl"),
]


@pytest.mark.parametrize("command,name", GARBAGE, ids=[f"{c}-{n}" for c, n in GARBAGE])
def test_garbage_inputs_to_merge_regen_and_quality_are_one_line(finished, tmp_path, command, name):
    _, run = finished
    target = tmp_path / name if name == "file.jsonl" else run / name
    target.write_bytes(b"\x00\x9f garbage {" + os.urandom(64) + b"\n" + b"[1, 2\n")
    if name == "data/train.jsonl":      # a run's rows are read from its parquet
        shutil.copy(target, next((run / "data").glob("*.parquet")))
    if command == "merge":
        args = ["glan-local-merge", str(tmp_path / "merged"), str(run)]
    elif command == "regen":
        args = ["glan-local-regen", str(run), "--reason", "cut", "sampling.answers.max_tokens=64"]
    else:
        args = ["glan-local-quality", str(tmp_path / name if name == "file.jsonl" else run), "-o", str(tmp_path / "pub")]
    p = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("[glan-local-merge] merging")]
    assert len(lines) == 1, p.stderr        # progress before it, then one line for the error
    line = lines[0]
    assert p.returncode in (1, 2), (p.returncode, line)
    assert not (tmp_path / "merged").exists(), p.stderr
    assert name.split("/")[-1] in line or command == "quality", line
