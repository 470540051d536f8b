"""Trustworthy keys and shared storage, with the FAKE engine (tests/fakes.py): model identity
from content, network file systems (their answer faked), portable verify, merge of a running
shard. The real-engine counterpart (a kill during model load) is in test_durability_e2e.py."""
import fcntl
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from fakes import FakeEngine
from glan_local import store
from glan_local.config import ConfigError
from glan_local.engine import engine_identity
from glan_local.model import model_identity
from glan_local.run import generate

ROOT = Path(__file__).resolve().parent.parent


def _model(d: Path, seed: int) -> Path:
    """A model folder whose weights are real safetensors: same names and sizes for every seed."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file({f"layers.{i}.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(3)},
              str(d / "model.safetensors"))
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "chat_template.jinja").write_text("{{ messages }}")
    return d


def test_identity_is_the_content_not_the_folder(tmp_path):
    run1, run2 = _model(tmp_path / "run1" / "final", 1), _model(tmp_path / "run2" / "final", 2)
    assert (run1 / "model.safetensors").stat().st_size == (run2 / "model.safetensors").stat().st_size
    assert model_identity(run1)["identity"] != model_identity(run2)["identity"]     # same name and sizes
    renamed = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(run1, renamed)
    (renamed / "README.md").write_text("notes added later\n")
    assert model_identity(renamed)["identity"] == model_identity(run1)["identity"]
    # One changed number in one tensor's middle changes the identity.
    raw = bytearray((run1 / "model.safetensors").read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    raw[header + 64 * 64 * 4 * 3 // 2] ^= 0xFF
    (renamed / "model.safetensors").write_bytes(bytes(raw))
    assert model_identity(renamed)["identity"] != model_identity(run1)["identity"]


def test_a_hugging_face_snapshot_is_named_and_its_blobs_are_their_sha256(tmp_path):
    """A hub cache snapshot: its files are symlinks to blobs/<sha256>, taken as their digests
    (a whole file only); the manifest names the snapshot's commit beside the content identity."""
    import hashlib
    import os

    commit = "0123456789abcdef0123456789abcdef01234567"
    src = _model(tmp_path / "src", 3)
    repo = tmp_path / "hub" / "models--Org--Some-Model"
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in src.iterdir():
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    ident = model_identity(snap)
    assert ident["hf_snapshot"] == f"Org/Some-Model@{commit}"
    assert ident["identity"] == model_identity(src)["identity"]       # the same bytes, by their names
    # A blob named by a sha256 it does not match (a truncated download) is hashed, not trusted.
    weights = (repo / "blobs" / ident["files"]["model.safetensors"])
    weights.write_bytes(weights.read_bytes()[:-64])
    assert model_identity(snap)["files"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_output_changing_extra_keys_are_in_the_key(compose):
    m = compose().model
    base = engine_identity(m, "outlines")
    m.extra = {"kv_cache_dtype": "fp8", "distributed_executor_backend": "ray"}
    assert engine_identity(m, "outlines") == {**base, "extra": {"kv_cache_dtype": "fp8"}}


def test_a_renamed_model_folder_resumes_with_nothing_regenerated(compose, tmp_path):
    model = _model(tmp_path / "model", 1)
    out = tmp_path / "run"
    # No speculative attempts: every stored reply is then needed, and the resume takes them all.
    first = generate(compose(f"model.path={model}", "quality.enabled=false", "engine.speculate_below=0"), out,
                     engine_factory=lambda p: FakeEngine())
    moved = tmp_path / "moved-model"
    model.rename(moved)
    (moved / "README.md").write_text("moved\n")
    eng = FakeEngine()
    again = generate(compose(f"model.path={moved}", "model.name=model", "quality.enabled=false",
                             "engine.speculate_below=0"), out, engine_factory=lambda p: eng)
    assert eng.submitted == [] and again["totals"]["generated"] == 0
    assert again["totals"]["from_store"] == first["totals"]["generated"] > 0
    assert again["rows"] == first["rows"]


def _fake_fs(monkeypatch, kind, options=()):
    monkeypatch.setattr(store, "filesystem", lambda path: (kind, frozenset(options)))


def test_a_store_on_nfs_uses_a_rollback_journal(monkeypatch, tmp_path):
    _fake_fs(monkeypatch, "nfs4", ["rw", "hard"])
    s = store.Store(tmp_path / "store.sqlite")
    assert s.network and s.db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    s.close()
    monkeypatch.undo()
    local = store.Store(tmp_path / "local.sqlite")
    assert not local.network and local.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    local.close()


def test_lustre_without_flock_is_refused_before_the_model(compose, fake_model, monkeypatch, tmp_path):
    _fake_fs(monkeypatch, "lustre", ["rw", "localflock"])
    started = []
    with pytest.raises(ConfigError) as e:
        generate(compose(f"model.path={fake_model}"), tmp_path / "run", engine_factory=lambda p: started.append(p))
    msg = str(e.value)
    assert e.value.key == "out_dir" and "-o localflock" in msg and "Fix:" in msg and "\n" not in msg
    assert started == []
    _fake_fs(monkeypatch, "lustre", ["rw", "flock"])           # cluster-wide locks: accepted, safe mode
    generate(compose(f"model.path={fake_model}", "quality.enabled=false"), tmp_path / "run",
             engine_factory=lambda p: FakeEngine())


def test_a_cache_dir_on_a_network_fs_is_written_one_file_per_writer(compose, fake_model, monkeypatch, tmp_path):
    """Two jobs (here one after the other, as processes on two nodes would) share cache_dir: each
    writes a file of its own, and the second takes the first's replies from the first's file."""
    _fake_fs(monkeypatch, "nfs4")
    cache = tmp_path / "cache"
    a = generate(compose(f"model.path={fake_model}", "quality.enabled=false", f"cache_dir={cache}"),
                 tmp_path / "a", engine_factory=lambda p: FakeEngine())
    eng = FakeEngine()
    b = generate(compose(f"model.path={fake_model}", "quality.enabled=false", f"cache_dir={cache}",
                         "breadth.questions_per_syllabus=3"), tmp_path / "b", engine_factory=lambda p: eng)
    files = sorted(cache.glob("replies-*.sqlite"))
    assert len(files) == 2 and not (cache / "replies.sqlite").exists()
    assert b["levels"]["syllabus"]["from_cache"] == b["levels"]["syllabus"]["attempts"] > 0 and a["rows"]
    assert {r.level for r in eng.submitted} <= {"questions", "answers"}
    for f in files:           # each a complete database in rollback-journal mode, no WAL files beside it
        con = sqlite3.connect(f)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        con.close()
    assert not list(cache.glob("*-wal")) and not list(cache.glob("*-shm"))


def test_verify_works_on_a_copy_without_the_taxonomy_file_and_templates(compose, fake_model, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    tax = inputs / "disciplines.txt"
    tax.write_text("Marine Biology\nAccounting\n")
    tpl = inputs / "questions.j2"
    tpl.write_text("Course {{ subject.name }} up to session {{ last_session }}: {{ concepts | join(', ') }}. "
                   'Reply in JSON: {"question": "..."}')
    run = tmp_path / "run"
    generate(compose(f"model.path={fake_model}", "quality.enabled=false", f"taxonomy.file={tax}",
                     f"prompts.questions={tpl}"), run, engine_factory=lambda p: FakeEngine())
    elsewhere = tmp_path / "other-machine" / "run"
    shutil.copytree(run, elsewhere)
    shutil.rmtree(inputs)
    shutil.rmtree(fake_model)
    p = subprocess.run([str(Path(sys.executable).parent / "glan-local-verify"), str(elsewhere)], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 0 and "OK:" in p.stdout, p.stdout + p.stderr[-2000:]
    man = json.loads((elsewhere / "manifest.json").read_text())
    assert set(man["inputs"]) == {"taxonomy.file", "prompts.questions"}


def test_merge_refuses_a_shard_that_is_still_running(compose, fake_model, tmp_path):
    tax = tmp_path / "taxonomy.yaml"
    tax.write_text(yaml.safe_dump({"fields": [{"name": "F", "subfields": [{"name": "S", "disciplines": ["A", "B"]}]}]}))
    dirs = []
    for i in (0, 1):
        d = tmp_path / f"shard{i}"
        generate(compose(f"model.path={fake_model}", "quality.enabled=false", f"taxonomy.file={tax}",
                         "shard.count=2", f"shard.index={i}"), d, engine_factory=lambda p: FakeEngine())
        dirs.append(d)
    merge = [str(Path(sys.executable).parent / "glan-local-merge"), str(tmp_path / "out"), *map(str, dirs)]
    with open(dirs[1] / ".lock", "w") as held:          # shard 1 still running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = subprocess.run(merge, capture_output=True, text=True)
    assert p.returncode == 2 and "still using it" in p.stderr and str(dirs[1]) in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    p = subprocess.run([*merge, "--no-quality"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
