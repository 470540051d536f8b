"""Coverage per taxonomy node in quality/summary.json and the report (issue 17, item 3), and the
quality step's streaming (item 5): the same files whatever the chunk size."""
import json
import random
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from glan_local.config import QualityConfig
from glan_local.quality import dedup, pipeline, publish, rows
from glan_local.quality.pipeline import run_quality

WORDS = ("energy momentum collision light glass surface harmony music series inflation economy cell membrane "
         "proof root number water cycle budget enzyme digestion force mass charge field wave graph sample error "
         "mean variance market price trade culture plant soil crop animal disease court contract tax").split()


def _q(i):
    """An English-looking question sharing no 3-word run with another one."""
    return "Explain why " + " ".join(random.Random(i).sample(WORDS, 14)) + "?"


def _a(i):
    return "Because " + " ".join(random.Random(-i - 1).sample(WORDS, 20)) + "."


def _row(node, i, scores=(5, 5, 5), question=None):
    f, s, d = node
    names = {(0, 0, 0): ("Sciences", "Physics", "Mechanics"), (0, 0, 1): ("Sciences", "Physics", "Optics"),
             (1, 0, 0): ("Arts", "Music", "Harmony")}[node]
    return {"id": f"{f:05d}.{s:05d}.{d:05d}.{i:05d}.00000", **dict(zip(("field", "subfield", "discipline"), names)),
            "subject": "S", "question": question or _q(i), "answer": _a(i), "language": "English",
            "language_code": "en",
            **dict(zip(("judge_clarity", "judge_answerability", "judge_correctness"), scores)), "judge_rationale": "ok"}


def _write_jsonl(path, items):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in items))


def _run_dir(tmp_path):
    run = tmp_path / "run"
    _write_jsonl(run / "levels" / "taxonomy.jsonl", [
        {"id": "00000.00000.00000", "field": "Sciences", "subfield": "Physics", "discipline": "Mechanics"},
        {"id": "00000.00000.00001", "field": "Sciences", "subfield": "Physics", "discipline": "Optics"},
        {"id": "00001.00000.00000", "field": "Arts", "subfield": "Music", "discipline": "Harmony"}])
    _write_jsonl(run / "levels" / "failures.jsonl", [
        {"level": "answers", "node": "00000.00000.00001.00003.00000", "reason": "cut: max_tokens"},
        {"level": "answers", "node": "00000.00000.00001.00004.00000", "reason": "cut: max_tokens"},
        {"level": "answers", "node": "00001.00000.00000.00000.00000", "reason": "invalid: schema"},
        {"level": "subjects", "node": "00001.00000.00000", "reason": "backend error: boom"},
        {"level": "taxonomy", "node": "00002", "reason": "invalid: not JSON"}])     # field 2's sub-fields
    # 1 subject query x 2 subjects (cap 2) x 2 questions per syllabus: 4 rows planned per discipline.
    (run / "run-config.json").write_text(json.dumps({"config": {
        "language": "English", "seed": 0, "quality": {"judge": {"enabled": True}},
        "breadth": {"name": "t", "subject_queries": 1, "subjects_per_query": 2, "max_subjects_per_discipline": 2,
                    "questions_per_syllabus": 2}}}))
    data = [_row((0, 0, 0), i) for i in range(3)] + [_row((0, 0, 0), 3, question=_q(0))]    # an exact duplicate
    data += [_row((0, 0, 1), 10), _row((0, 0, 1), 11, scores=(1, 4, 4))]                    # one below threshold
    _write_jsonl(run / "data" / "train.jsonl", data)
    return run


def _quality():
    q = QualityConfig()
    q.report.embeddings = False
    return q


def test_coverage_per_field_and_discipline_in_the_summary(tmp_path):
    run = _run_dir(tmp_path)
    figures = run_quality(_quality(), run / "publish", run_dir=run)
    cov = json.loads((run / "publish" / "quality" / "summary.json").read_text())["coverage"]
    assert cov == figures["coverage"] and cov["planned_per_discipline"] == 4 and cov["basis"] == "planned"
    d = {x["discipline"]: x for x in cov["disciplines"]}
    assert [x["id"] for x in cov["disciplines"]] == ["00000.00000.00000", "00000.00000.00001", "00001.00000.00000"]
    assert (d["Mechanics"]["produced"], d["Mechanics"]["published"], d["Mechanics"]["share"]) == (4, 3, 0.75)
    assert d["Mechanics"]["removed"] == {"exact-duplicate": 1} and d["Mechanics"]["failed"] == {}
    assert d["Optics"]["removed"] == {"judge-below-threshold": 1} and d["Optics"]["failed"] == {"answers": {"cut": 2}}
    assert d["Optics"]["judge"] == {"clarity": 3.0, "answerability": 4.5, "correctness": 4.5}
    assert d["Harmony"]["failed"] == {"answers": {"invalid": 1}, "subjects": {"backend error": 1}}
    assert (d["Harmony"]["produced"], d["Harmony"]["share"]) == (0, 0.0)
    f = {x["id"]: x for x in cov["fields"]}
    assert (f["00000"]["field"], f["00000"]["disciplines"], f["00000"]["planned"], f["00000"]["published"]) == \
        ("Sciences", 2, 8, 4)
    assert f["00002"]["failed"] == {"taxonomy": {"invalid": 1}} and f["00002"]["disciplines"] == 0
    # Worst first; a share of exactly half is not under-producing.
    assert [(u["level"], u["id"]) for u in cov["under_producing"]] == [
        ("field", "00001"), ("field", "00002"), ("discipline", "00001.00000.00000"),
        ("discipline", "00000.00000.00001")]
    assert "1 of 3 disciplines" not in (run / "publish" / "README.md").read_text()
    assert "2 of 3 disciplines published less than 50%" in (run / "publish" / "README.md").read_text()


PROBE = """<script>window.addEventListener('load', function () {
  var s = document.getElementById('coverage-per-branch');
  var imgs = Array.from(s.querySelectorAll('img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var rows = s.querySelectorAll('tr').length;
  var p = document.createElement('pre'); p.id = 'probe';
  p.textContent = 'images ' + ok + ' of ' + imgs.length + ', table rows ' + rows + ', height ' +
                  (s.getBoundingClientRect().height > 300 ? 'ok' : 'small');
  document.body.appendChild(p);
});</script>"""


def test_coverage_section_renders_in_chromium(tmp_path):
    run = _run_dir(tmp_path)
    run_quality(_quality(), run / "publish", run_dir=run)
    html = (run / "publish" / "report" / "index.html").read_text()
    section = html.split('<section id="coverage-per-branch">')[1].split("</section>")[0]
    assert "Under-producing branches" in section and "Arts / Music / Harmony" in section
    assert "subjects: backend error 1" in section and "node 00002" in section
    n_rows = section.count("<tr>")
    chromium = next((c for c in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if c), None)
    if chromium is None:
        pytest.skip("chromium not found (scripts/install.sh installs it where it runs as root with apt-get)")
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000"]
    p = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert f'<pre id="probe">images 1 of 1, table rows {n_rows}, height ok</pre>' in p.stdout, \
        (p.stdout[-500:], p.stderr[-2000:])


# --- streaming ---------------------------------------------------------------------------------

def _rows_for_streaming():
    out = []
    for i in range(40):
        q = _q(i) if i % 7 else _q(i - 3)                     # exact duplicates across chunks
        if i % 11 == 5:
            q = _q(i - 2)[:-1] + " today?"                        # near duplicates
        out.append({"id": f"{i:05d}", "discipline": "ABC"[i % 3], "question": q, "answer": _a(i), "n": i,
                    **({"extra": [i]} if i > 30 else {})})                 # a ragged column, late
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_chunk_size_changes_nothing(tmp_path, monkeypatch, fmt):
    data = _rows_for_streaming()
    src = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        _write_jsonl(src, data)
    else:
        pq.write_table(pa.Table.from_pylist(data), src)
    _write_jsonl(tmp_path / "earlier.jsonl", [{"id": "old", "question": _q(2)}])

    def go(out):
        q = _quality()
        q.publish.heldout_per_discipline, q.publish.shard_rows = 2, 9
        q.dedup.against = [str(tmp_path / "earlier.jsonl")]
        return run_quality(q, out, source=str(src), seed=5)

    big = go(tmp_path / "big")
    for mod in (pipeline, dedup):
        monkeypatch.setattr(mod, "CHUNK", 4)
    monkeypatch.setattr(rows, "BATCH", 3)
    monkeypatch.setattr(publish.Writer, "GROUP_BYTES", 300)
    small = go(tmp_path / "small")
    assert big["removed"] == small["removed"] and big["removed"] == {"exact-duplicate": 7, "near-duplicate": 3}
    assert big["dedup"]["counts"]["exact_earlier"] == 1
    assert big["rows"] == small["rows"] == {"train": 40 - sum(big["removed"].values()) - 6, "test": 6}
    names = sorted(p.name for p in (tmp_path / "big" / "data").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "small" / "data").iterdir())
    assert "train-00002-of-00003.parquet" in names
    for rel in [f"data/{n}" for n in names if n.endswith(".jsonl")] + ["quality/removed.jsonl"]:
        assert (tmp_path / "big" / rel).read_bytes() == (tmp_path / "small" / rel).read_bytes(), rel
    for n in names:
        if n.endswith(".parquet"):
            a, b = pq.read_table(tmp_path / "big" / "data" / n), pq.read_table(tmp_path / "small" / "data" / n)
            assert a.equals(b) and a.schema.equals(b.schema, check_metadata=True), n
    assert pq.ParquetFile(tmp_path / "small" / "data" / "train-00000-of-00003.parquet").metadata.num_row_groups > 1
    if fmt == "parquet":
        return
    # A ragged column that comes late is in the schema, null where absent.
    first = pq.read_table(tmp_path / "big" / "data" / "train-00000-of-00003.parquet")
    assert "extra" in first.column_names and first.column("extra").null_count == first.num_rows
