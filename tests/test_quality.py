"""Quality and publishing (glan_local/quality): dedup, decontamination, export + card, report,
the judge level (FAKE engine only), and glan-local-quality on a user's JSONL. No model runs here
except the optional embedding model, and nothing touches the network."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from fakes import FakeEngine
from glan_local.config import ConfigError, DecontamConfig, DedupConfig, QualityConfig
from glan_local.quality import decontam, diversity, publish
from glan_local.quality.dedup import CHUNK, Deduper, chunks
from glan_local.quality.pipeline import run_quality
from glan_local.run import generate


def dedup(rows, cfg, earlier=None):
    """The Deduper over a list, as the quality step streams it: (kept, removed, counts)."""
    d = Deduper(cfg)
    for path, prior in earlier or []:
        d.index_earlier(path, prior)
    kept, removed = [], []
    for chunk in chunks(rows, CHUNK):
        for r, gone in zip(chunk, d.check(chunk)):
            (removed if gone else kept).append(gone or r)
    return SimpleNamespace(kept=kept, removed=removed, counts=d.counts)


def decontaminate(rows, cfg):
    """The Decontaminator over a list: (kept, removed, per_benchmark)."""
    d = decontam.Decontaminator(cfg)
    kept, removed = [], []
    for r in rows:
        r, gone = d.check(r)
        (removed if gone else kept).append(gone or r)
    return SimpleNamespace(kept=kept, removed=removed, per_benchmark=d.per)

FIX = Path(__file__).resolve().parent / "fixtures"
GSM = FIX / "gsm8k_like.jsonl"
MMLU = FIX / "mmlu_like.parquet"
QUALITY = str(Path(sys.executable).parent / "glan-local-quality")

LONG = ("In a chemistry laboratory course a student mixes two solutions of known molarity and records the "
        "temperature change; explain how to compute the enthalpy of the reaction from these measurements")

DISTINCT = ["Why does an ideal gas cool when it expands adiabatically?",
            "State the second law of thermodynamics in two equivalent forms.",
            "Compute the efficiency of a Carnot engine between 300 K and 500 K.",
            "What latent heat is released when 2 kg of steam condenses?",
            "How does osmosis move water across a semipermeable membrane?",
            "Name three factors that change the rate of an enzyme-catalysed reaction.",
            "Predict the offspring ratio of a cross between two heterozygous pea plants.",
            "Explain why most coasts see two high tides each lunar day.",
            "Which forces hold a protein in its folded tertiary structure?",
            "Sketch the supply curve of a competitive firm in the short run."]


def _row(i, question, discipline="Chemistry", answer=None, **kw):
    return {"id": f"{i:05d}", "field": "Natural Sciences", "subfield": "Chemistry", "discipline": discipline,
            "subject": f"Subject {i % 3}", "strategy": "single-session" if i % 2 else "two-session",
            "key_concepts": ["a", "b"][: 1 + i % 2], "question": question,
            "answer": answer or f"Answer number {i}.", **kw}


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _quality(**over):
    q = QualityConfig()
    q.report.embeddings = False
    for dotted, v in over.items():      # dedup__threshold=0.9 sets q.dedup.threshold
        *path, leaf = dotted.split("__")
        target = q
        for k in path:
            target = getattr(target, k)
        setattr(target, leaf, v)
    return q


# --- dedup ----------------------------------------------------------------------------------

def test_exact_and_near_duplicates_are_removed_with_reason_and_original_id():
    rows = [_row(0, LONG), _row(1, "What is the oxidation state of iron in ferric chloride, and why?"),
            _row(2, LONG.upper().replace(";", " !! ")),                          # exact after normalising
            _row(3, LONG.replace("temperature change", "temperature rise")),      # near: one word changed
            _row(4, "Describe the structure of benzene and the evidence for its delocalised electrons.")]
    res = dedup(rows, DedupConfig())
    assert [r["id"] for r in res.kept] == ["00000", "00001", "00004"]
    by_id = {x["row"]["id"]: x for x in res.removed}
    assert by_id["00002"]["reason"] == "exact-duplicate" and by_id["00002"]["duplicate_of"] == "00000"
    assert by_id["00003"]["reason"] == "near-duplicate" and by_id["00003"]["duplicate_of"] == "00000"
    assert 0.7 <= by_id["00003"]["similarity"] < 1.0
    assert res.counts == {"exact": 1, "near": 1, "exact_earlier": 0, "near_earlier": 0}
    # Off: only exact duplicates go; stricter threshold keeps the reworded one.
    assert len(dedup(rows, DedupConfig(near=False)).removed) == 1
    assert len(dedup(rows, DedupConfig(threshold=0.99)).removed) == 1


def test_dedup_against_an_earlier_dataset_and_on_question_answer_pairs(tmp_path):
    earlier = tmp_path / "earlier.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "old-7", "question": LONG, "answer": "x"}]), earlier)
    rows = [_row(0, LONG + "."), _row(1, "A new question about catalysts and reaction rates in industry?")]
    q = _quality(dedup__against=[str(earlier)])
    figures = run_quality(q, tmp_path / "out", source=str(_write_jsonl(tmp_path / "in.jsonl", rows)))
    removed = _jsonl(tmp_path / "out" / "quality" / "removed.jsonl")
    assert [(x["reason"], x["duplicate_of"], x["duplicate_in"]) for x in removed] == \
        [("exact-duplicate", "old-7", str(earlier))]
    assert figures["dedup"]["counts"]["exact_earlier"] == 1 and figures["rows"] == {"train": 1}
    # Exact on pairs: the same question with another answer is kept.
    pair = DedupConfig(fields=["question", "answer"], near=False)
    assert not dedup([_row(0, LONG, answer="A"), _row(1, LONG, answer="B")], pair).removed


# --- decontamination --------------------------------------------------------------------------

def test_planted_benchmark_questions_are_caught_per_benchmark(tmp_path):
    gsm = _jsonl(GSM)[1]["question"]
    import pyarrow.parquet as pq

    mmlu = pq.read_table(MMLU).to_pylist()[2]["question"]
    rows = [_row(0, "Homework: " + gsm + " Show your work step by step."),   # embedded GSM8K-like item
            _row(1, mmlu.lower()),                                          # MMLU-like item, recased
            _row(2, "Which of the following best explains why the tides rise twice a day on most coasts?"),
            _row(3, LONG)]
    q = DecontamConfig(benchmarks=[str(GSM), str(MMLU)])
    res = decontaminate(rows, q)
    assert [r["id"] for r in res.kept] == ["00002", "00003"]     # a shared stock phrase is not a hit
    assert {x["row"]["id"]: x["benchmark"] for x in res.removed} == {"00000": "gsm8k_like", "00001": "mmlu_like"}
    assert res.per_benchmark["gsm8k_like"]["hits"] == 1 and res.per_benchmark["mmlu_like"]["hits"] == 1
    assert res.per_benchmark["gsm8k_like"]["fields"] == ["question"]        # auto-detected
    assert res.removed[0]["benchmark_item"] == 1 and res.removed[0]["similarity"] == 1.0
    # flag mode keeps every row and names the benchmarks.
    flagged = decontaminate(rows, DecontamConfig(benchmarks=[str(GSM), str(MMLU)], mode="flag"))
    assert not flagged.removed and [r["contamination"] for r in flagged.kept] == ["gsm8k_like", "mmlu_like", "", ""]


def test_benchmarks_from_a_save_to_disk_folder_with_named_fields_and_short_items(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "bench"
    DatasetDict({"test": Dataset.from_list([{"prompt": "Name the largest planet.", "solution": "Jupiter"}]),
                 "train": Dataset.from_list([{"prompt": LONG, "solution": "..."}])}).save_to_disk(str(folder))
    rows = [_row(0, "Name the largest planet"), _row(1, "Name the largest planet in our solar system, then "
                                                          "compare its mass with the mass of the Earth."),
            _row(2, "Tell me: " + LONG)]
    res = decontaminate(rows, DecontamConfig(benchmarks=[str(folder)], benchmark_fields=["prompt"]))
    # Short items (< n words) match only the same text; the long train item is found inside row 2.
    assert sorted(x["row"]["id"] for x in res.removed) == ["00000", "00002"]
    with pytest.raises(ValueError, match="not found"):
        decontaminate(rows, DecontamConfig(benchmarks=[str(folder)], benchmark_fields=["nope"]))


# --- export, card, held-out ------------------------------------------------------------------

def test_heldout_split_takes_n_per_discipline_deterministically():
    rows = [_row(i, f"q{i}", discipline=d) for i, d in enumerate(["A"] * 5 + ["B"] * 5 + ["C"] * 2)]
    train, held = publish.heldout_split(rows, 3, seed=0)
    count = lambda rs, d: sum(r["discipline"] == d for r in rs)  # noqa: E731
    assert [count(held, d) for d in "ABC"] == [3, 3, 2] and len(train) == 4
    assert publish.heldout_split(rows, 3, seed=0) == (train, held)
    assert publish.heldout_split(rows, 3, seed=1)[1] != held
    assert publish.heldout_split(rows, 0, seed=0) == (rows, [])


def test_card_header_parses_and_the_folder_loads_back_offline(tmp_path):
    rows = [_row(i, qu, discipline=d, language="English")
            for i, (qu, d) in enumerate(zip(DISTINCT, ["A"] * 4 + ["B"] * 4))]
    q = _quality(publish__heldout_per_discipline=1, publish__shard_rows=4, publish__license="apache-2.0")
    run_quality(q, tmp_path / "out", source=str(_write_jsonl(tmp_path / "in.jsonl", rows)), seed=3)
    out = tmp_path / "out"
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    head = yaml.safe_load(text.split("---\n")[1])
    assert head["license"] == "apache-2.0" and head["language"] == ["en"]
    assert head["size_categories"] == ["n<1K"] and "text-generation" in head["task_categories"]
    assert head["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                {"split": "test", "path": "data/test-*"}]
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "test.jsonl", "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet", "train.jsonl"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = ("import sys, json; from datasets import load_dataset; ds = load_dataset(sys.argv[1]); "
            "print(json.dumps({k: len(v) for k, v in ds.items()})); print(json.dumps(ds['train'][0]['messages']))")
    p = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    sizes, messages = map(json.loads, p.stdout.strip().splitlines()[-2:])
    assert sizes == {"train": 6, "test": 2}
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_push_to_hub_only_with_a_repo_id(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw["private"]))

        def upload_folder(self, **kw):
            calls.append(("upload", kw["repo_id"], sorted(kw["allow_patterns"])))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    src = str(_write_jsonl(tmp_path / "in.jsonl", [_row(0, LONG)]))
    run_quality(_quality(report__enabled=False), tmp_path / "a", source=src)
    assert calls == []
    figures = run_quality(_quality(report__enabled=False, publish__push_to_hub="me/glan"), tmp_path / "b", source=src)
    assert calls == [("create", "me/glan", True), ("upload", "me/glan", ["README.md", "data/*"])]
    assert figures["pushed_to"] == "me/glan"


# --- report -----------------------------------------------------------------------------------

def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


PROBE = """<script>window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var p = document.createElement('pre'); p.id = 'probe'; p.textContent = 'loaded ' + ok + ' of ' + imgs.length;
  document.body.appendChild(p);
});</script>"""


def test_report_renders_in_chromium_with_every_image_loaded(tmp_path):
    rows = [_row(i, qu, discipline=d, judge_clarity=1 + i % 5, judge_answerability=5, judge_correctness=4)
            for i, (d, qu) in enumerate(zip("AABBC" * 2, DISTINCT))]
    rows.append(dict(rows[1], id="dup"))
    q = _quality(decontam__benchmarks=[str(GSM)], judge__min_score=2)
    figures = run_quality(q, tmp_path / "out", source=str(_write_jsonl(tmp_path / "in.jsonl", rows)))
    assert figures["removed"] == {"judge-below-threshold": 2, "exact-duplicate": 1}
    html = (tmp_path / "out" / "report" / "index.html").read_text()
    for heading in ("Coverage", "Questions and answers", "Generation", "Removals", "Judge scores",
                    "Diversity of questions", "distinct-2", "gsm8k_like"):
        assert heading in html, heading
    n_img = html.count("<img ")
    assert n_img >= 8
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not found (scripts/install.sh installs it where it runs as root with apt-get)")
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True, timeout=180)
    assert f'<pre id="probe">loaded {n_img} of {n_img}</pre>' in p.stdout, (p.stdout[-500:], p.stderr[-2000:])


def test_diversity_measures():
    assert diversity.distinct_n(["a b c", "a b d"], 1) == round(4 / 6, 4)
    assert diversity.distinct_n(["a b c", "a b c"], 2) == 0.5
    if diversity.embedding_status() is not None:
        pytest.skip(f"embedding similarity {diversity.embedding_status()}")
    same = diversity.mean_pairwise_cosine(["the cell membrane"] * 3, sample=10)
    mixed = diversity.mean_pairwise_cosine(["the cell membrane", "interest rates and inflation",
                                            "baroque music harmony"], sample=10)
    assert same["value"] == pytest.approx(1.0, abs=1e-3) and mixed["value"] < 0.5


# --- the command, on a user's own JSONL ----------------------------------------------------------

def test_quality_command_on_a_user_jsonl(tmp_path):
    rows = [{"instruction": LONG, "output": "An answer.", "topic": "chem"},
            {"instruction": LONG + "!", "output": "Another.", "topic": "chem"},
            {"instruction": _jsonl(GSM)[0]["question"], "output": "15", "topic": "math"},
            {"instruction": "Explain the difference between weather and climate with two examples.",
             "output": "Weather is...", "topic": "geo"}]
    src = _write_jsonl(tmp_path / "mine.jsonl", rows)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([QUALITY, str(src), "-o", str(tmp_path / "pub"), "--question-field", "instruction",
                        "--answer-field", "output", f"decontam.benchmarks=[{GSM}]", "report.embeddings=false"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = _jsonl(tmp_path / "pub" / "data" / "train.jsonl")
    assert [r["topic"] for r in out] == ["chem", "geo"]
    assert out[0]["messages"] == [{"role": "user", "content": LONG}, {"role": "assistant", "content": "An answer."}]
    reasons = sorted(x["reason"] for x in _jsonl(tmp_path / "pub" / "quality" / "removed.jsonl"))
    assert reasons == ["contaminated", "exact-duplicate"]
    assert (tmp_path / "pub" / "report" / "index.html").exists() and (tmp_path / "pub" / "README.md").exists()
    for option, key in (("dedup.threshold=0", "quality.dedup.threshold"), ("dedup.thresh=0.5", "quality.dedup.thresh")):
        bad = subprocess.run([QUALITY, str(src), option], env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and bad.stderr.strip().startswith(f"config error: {key}"), bad.stderr


# --- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,key", [
    ("quality.dedup.threshold=0", "quality.dedup.threshold"),
    ("quality.dedup.threshold=1.5", "quality.dedup.threshold"),
    ("quality.dedup.num_perm=0", "quality.dedup.num_perm"),
    ("quality.decontam.ngram=0", "quality.decontam.ngram"),
    ("quality.decontam.min_overlap=0", "quality.decontam.min_overlap"),
    ("quality.decontam.benchmarks=[/nonexistent/bench.jsonl]", "quality.decontam.benchmarks"),
    ("quality.dedup.against=[/nonexistent/old.parquet]", "quality.dedup.against"),
    ("quality.judge.min_score=6", "quality.judge.min_score"),
    ("quality.publish.heldout_per_discipline=-1", "quality.publish.heldout_per_discipline"),
    ("quality.publish.push_to_hub=noslash", "quality.publish.push_to_hub"),
    ("quality.language.min_confidence=0.3", "quality.language.min_confidence"),
    ("quality.language.min_confidence=1.5", "quality.language.min_confidence"),
    ("quality.language.fields=[]", "quality.language.fields"),
])
def test_quality_validation_names_the_key(compose, override, key):
    with pytest.raises(ConfigError) as e:
        compose(override).validate()
    assert e.value.key == key and "Fix:" in str(e.value)


def test_quality_defaults():
    q = QualityConfig()
    assert q.dedup.enabled and not q.decontam.benchmarks and not q.judge.enabled and q.report.enabled
    assert q.publish.heldout_per_discipline == 0 and q.publish.push_to_hub is None and q.decontam.ngram == 8
    assert q.language.enabled and q.language.mode == "drop" and q.language.min_confidence == 0.98


# --- with a run (FAKE engine) -----------------------------------------------------------------------

def test_a_run_ends_with_the_quality_step(compose, fake_model, tmp_path):
    import zlib

    def fault(req):      # a third of the answers fail every attempt (their prompt decides, not the seed)
        if req.level == "answers" and zlib.crc32(req.messages[-1]["content"].encode()) % 3 == 0:
            return ("An answer that runs on and", "length")
        return None

    cfg = compose(f"model.path={fake_model}", "quality.report.embeddings=false", "engine.max_attempts=2")
    s = generate(cfg, tmp_path / "run", engine_factory=lambda p: FakeEngine(fault))
    assert s["levels"]["answers"]["failed"] > 0 and s["rows"] > 0
    pub = tmp_path / "run" / "publish"
    assert "judge" not in s["levels"] and not (tmp_path / "run" / "levels" / "judge.jsonl").exists()
    assert s["quality"]["rows"]["train"] == s["rows"] - sum(s["quality"]["removed"].values())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["quality"]["input_rows"] == s["rows"]
    assert (pub / "README.md").exists() and (pub / "report" / "index.html").exists()
    assert (pub / "quality" / "removed.jsonl").exists()
    card = (pub / "README.md").read_text()
    assert "## Generation, per level" in card and "| answers |" in card
    assert 'alt="failures by reason"' in (pub / "report" / "index.html").read_text()


def test_judge_level_grades_every_pair_and_the_threshold_filters(compose, fake_model, tmp_path):
    cfg = compose(f"model.path={fake_model}", "quality.judge.enabled=true", "quality.judge.min_score=3",
                  "quality.report.embeddings=false", "engine.speculate_below=0")   # one request per pair
    eng = FakeEngine()
    s = generate(cfg, tmp_path / "run", engine_factory=lambda p: eng)
    judged = [r for r in eng.submitted if r.level == "judge"]
    assert s["levels"]["judge"]["planned"] == s["levels"]["answers"]["ok"] == len(judged) > 0
    assert list(judged[0].schema["properties"]) == ["rationale", "clarity", "answerability", "correctness"]
    assert "Answer:" in judged[0].messages[-1]["content"]
    rows = _jsonl(tmp_path / "run" / "data" / "train.jsonl")          # from levels/judge.jsonl
    assert len(rows) == s["rows"] == len(judged)
    cols = ("judge_clarity", "judge_answerability", "judge_correctness")
    assert all(r[c] in (1, 2, 3, 4, 5) for r in rows for c in cols) and all(r["judge_rationale"] for r in rows)
    low = [r["id"] for r in rows if min(r[c] for c in cols) < 3]
    removed = _jsonl(tmp_path / "run" / "publish" / "quality" / "removed.jsonl")
    assert sorted(x["row"]["id"] for x in removed if x["reason"] == "judge-below-threshold") == sorted(low)
    published = _jsonl(tmp_path / "run" / "publish" / "data" / "train.jsonl")
    assert all(min(r[c] for c in cols) >= 3 for r in published)
    assert s["quality"]["judge"]["below_threshold"] == len(low)
    assert "Judge scores" in (tmp_path / "run" / "publish" / "report" / "index.html").read_text()


def test_an_unusable_benchmark_stops_the_run_before_the_model_loads(compose, fake_model, tmp_path):
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"foo": "bar"}])
    cfg = compose(f"model.path={fake_model}", f"quality.decontam.benchmarks=[{bad}]")
    started = []
    with pytest.raises(ConfigError) as e:
        generate(cfg, tmp_path / "run", engine_factory=lambda p: started.append(p))
    assert e.value.key == "quality.decontam.benchmarks" and "benchmark_fields" in str(e.value) and not started
