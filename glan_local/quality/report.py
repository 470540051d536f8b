"""report/index.html: one self-contained page per dataset (charts embedded as PNG), for a
person to judge a run at a glance: coverage, the branches that under-produce, shapes, failures,
removals, speed, diversity. It reads counts (stats.Published, the figures), never the rows."""
from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Optional

from ..atomic import atomic_write_text
from . import plots
from .judged import COLUMNS as JUDGE_COLUMNS
from .runinfo import RunInfo
from .stats import Published

MAX_TABLE = 300    # discipline rows in a table; the rest are in quality/summary.json

CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
font-size:.9em}th{background:#f3f5f8}img{max-width:100%;display:block;margin:.6em 0}.note{color:#666;
font-style:italic}.qa{background:#f8f8f8;border-left:3px solid #3b6ea8;padding:.4em .8em;margin:.6em 0;
white-space:pre-wrap;font-size:.9em}"""


def _e(x) -> str:
    return html.escape(str(x))


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(head: Optional[list[str]], rows: list[list]) -> str:
    th = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{th}{body}</table>"


def _coverage(st: Published, info: RunInfo) -> list[str]:
    out = ["<h2>Coverage</h2>"]
    if not st.has_discipline:
        return out + [_note("no field/discipline columns in these rows")]
    out.append(_img(plots.barh(st.fields, "Rows per field", "rows"), "rows per field"))
    out.append(_img(plots.barh(st.disciplines, "Rows per discipline", "rows"), "rows per discipline"))
    if info.subjects:
        subj = Counter(str(s.get("discipline")) for s in info.subjects)
        src = "subjects generated (levels/subjects.jsonl)"
    else:
        subj = st.subjects_per_discipline(full=False)
        src = "distinct subjects among the rows"
    out.append(_img(plots.barh(subj, f"Subjects per discipline: {src}", "subjects"), "subjects per discipline"))
    if info.syllabi:
        out.append(_img(plots.hists([("Sessions per syllabus", [s["sessions"] for s in info.syllabi])],
                                    "class sessions", integer=True), "sessions per syllabus"))
    else:
        out.append(_note("sessions per syllabus: no levels/syllabus.jsonl (not a run directory)"))
    return out


def _shapes(st: Published) -> list[str]:
    out = ["<h2>Questions and answers</h2>"]
    out.append(_img(plots.hists([("Question length", list(st.q_len)), ("Answer length", list(st.a_len))], "words"),
                    "length distributions"))
    if st.has_strategy:
        strat = st.strategy
        total = sum(strat.values())
        labels = sorted(strat)
        out.append(_img(plots.bars(labels, [round(100 * strat[k] / total, 1) for k in labels],
                                   "Questions by strategy (% of rows)", "% of rows"), "strategy share"))
    if st.has_concepts:
        out.append(_img(plots.hists([("Key concepts per question", list(st.concepts))], "concepts", integer=True),
                        "concepts per question"))
    return out


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def _failed(d: dict) -> str:
    return "; ".join(f"{lv}: {_counts(c)}" for lv, c in d.items()) or "-"


def _name(e: dict) -> str:
    return " / ".join(str(e[k]) for k in ("field", "subfield", "discipline") if e.get(k)) or f"node {e.get('id')}"


def _branches(cov: dict) -> list[str]:
    return ['<section id="coverage-per-branch">', *_branch_parts(cov), "</section>"]


def _branch_parts(cov: dict) -> list[str]:
    out = ["<h2>Coverage per branch</h2>"]
    if not cov or not cov.get("disciplines"):
        return out + [_note("no field/discipline columns in these rows")]
    basis = cov["basis"]
    if basis == "planned":
        out.append(_note(f"planned: {cov['planned_per_discipline']} rows per discipline, from the breadth (an upper "
                         "bound: subjects merged as duplicates and syllabi with few concept combinations lower it); "
                         "share: published / planned"))
    else:
        out.append(_note("no plan known (not a run directory): share is published / produced"))
    fields = cov["fields"][: plots.MAX_BARS]
    parts = {"published": [f["published"] for f in fields],
             "removed": [f["produced"] - f["published"] for f in fields]}
    title = "Rows per field: published, removed by the quality step"
    if basis == "planned":
        parts["not produced"] = [max(0, (f["planned"] or 0) - f["produced"]) for f in fields]
        title += ", planned but not produced"
    out.append(_img(plots.stacked([_name(f) for f in fields], parts, title, xlabel="rows", legend=None),
                    "rows per field against the plan"))
    under = cov.get("under_producing", [])
    out.append(f"<h3>Under-producing branches: share below {cov['under_threshold']:.0%}, worst first</h3>")
    if under:
        out.append(_table(["level", "branch", "planned", "produced", "published", "share"],
                          [[u["level"], _name(u), u["planned"] if u["planned"] is not None else "-", u["produced"],
                            u["published"], f"{u['share']:.0%}"] for u in under[:MAX_TABLE]]))
    else:
        out.append(_note("none"))
    head = ["branch", "planned", "produced", "published", "share", "removed", "failed requests", "judge (mean)"]

    def row(e):
        judge = ", ".join(f"{k} {v}" for k, v in (e.get("judge") or {}).items()) or "-"
        return [_name(e), e["planned"] if e["planned"] is not None else "-", e["produced"], e["published"],
                f"{e['share']:.0%}", _counts(e["removed"]), _failed(e["failed"]), judge]
    out.append("<h3>Per field</h3>")
    out.append(_table(head, [row(f) for f in cov["fields"]]))
    disc = cov["disciplines"]
    out.append("<h3>Per discipline</h3>")
    out.append(_table(head, [row(d) for d in disc[:MAX_TABLE]]))
    if len(disc) > MAX_TABLE:
        out.append(_note(f"first {MAX_TABLE} of {len(disc)} disciplines; all are in quality/summary.json"))
    if cov.get("failed_outside_fields"):
        out.append(_note("failed above every field (the taxonomy's first request): "
                         + _failed(cov["failed_outside_fields"])))
    return out


def _generation(info: RunInfo) -> list[str]:
    out = ["<h2>Generation</h2>"]
    levels = (info.summary or {}).get("levels")
    if not levels:
        return out + [_note("no summary.json: generation figures are only known for a run directory")]
    names = list(levels)
    reasons = sorted({k for v in levels.values() for k in v.get("failures", {})})
    if reasons:
        by = {r: [levels[n].get("failures", {}).get(r, 0) for n in names] for r in reasons}
        out.append(_img(plots.stacked(names, by, "Failures by reason, per level"), "failures by reason"))
    else:
        out.append(_note("no request failed all its attempts at any level"))
    out.append(_table(["level", "requests", "ok", "failed", "retries", "output tokens", "wall s", "tokens/s"],
                      [[n, v["planned"], v["ok"], v["failed"], v["retries"], v["output_tokens"], v["wall_s"],
                        v["output_tokens_per_s"]] for n, v in levels.items()]))
    out.append(_img(plots.bars(names, [float(levels[n]["output_tokens_per_s"]) for n in names],
                               "Output tokens/s per level (over the level's active span; levels overlap)",
                               "tokens/s"), "output tokens per second"))
    return out


def _language(lg: dict) -> list[str]:
    if not lg:
        return []
    if lg.get("note"):
        return [_note(f"language check: {lg['note']}")]
    out = [f"<p>Language check ({_e(lg['mode'])}, {_e(lg['detector'])}) of {_e(', '.join(lg['fields']))}: a text is "
           f"in the wrong language when the detector is at least {lg['min_confidence']} sure it is not in the "
           f"expected one.</p>"]
    rows = [["rows checked, by expected language", _counts(lg["expected"])],
            ["rows in another language", lg["wrong"]],
            ["their detected language", _counts(lg["detected"])],
            ["wrong, per column", _counts(lg["by_field"])],
            ["texts too short or not prose (kept)", _counts(lg["not_judged"])]]
    rows += [[f"not checked: {k} (unknown to the detector)", v] for k, v in lg["not_checked"].items()]
    return out + [_table(None, rows)]


def _quality(quality: dict) -> list[str]:
    out = ["<h2>Removals</h2>"]
    removed = quality.get("removed", {})
    if removed:
        out.append(_img(plots.bars(list(removed), list(removed.values()), "Rows removed, by reason", "rows"),
                        "removals by reason"))
    else:
        out.append(_note("no row was removed"))
    d = quality.get("dedup")
    if d:
        c = d["counts"]
        out.append(_table(["dedup", "within the dataset", "against earlier datasets"],
                          [["exact (normalised text)", c["exact"], c["exact_earlier"]],
                           [f"near (MinHash Jaccard >= {d['threshold']})", c["near"], c["near_earlier"]]]))
    else:
        out.append(_note("dedup: off"))
    out += _language(quality.get("language") or {})
    dc = quality.get("decontam")
    if dc:
        out.append(f"<p>Decontamination ({_e(dc['mode'])}): {dc['ngram']}-gram overlap, hit when at least "
                   f"{dc['min_overlap']} of a benchmark item's n-grams appear in {_e(', '.join(dc['fields']))}.</p>")
        out.append(_table(["benchmark", "source", "items", "fields", "rows hit"],
                          [[n, b["source"], b["items"], ", ".join(b["fields"]), b["hits"]]
                           for n, b in dc["benchmarks"].items()]))
    else:
        out.append(_note("decontamination: not run (no benchmark files given)"))
    j = quality.get("judge") or {}
    if j.get("scores"):
        out.append("<h2>Judge scores</h2>")
        # All graded pairs, the ones the threshold removed included.
        series = [(c.replace("judge_", ""), [float(k) for k, n in j["scores"][c].items() for _ in range(n)])
                  for c in JUDGE_COLUMNS]
        out.append(_img(plots.hists(series, "score (1-5)", integer=True), "judge scores"))
        out.append(f"<p>{j['graded']} pairs graded; kept those with every score &gt;= {j['min_score']}: "
                   f"{j['below_threshold']} below, {j['unscored']} ungraded.</p>")
    return out


def _diversity(div: dict, published: int) -> list[str]:
    out = ["<h2>Diversity of questions</h2>"]
    emb = div.get("embedding") or {}
    val = emb.get("value")
    out.append(_table(["measure", "value"], [
        ["distinct-1", div.get("distinct_1")], ["distinct-2", div.get("distinct_2")],
        ["distinct-3", div.get("distinct_3")],
        ["mean pairwise cosine, all-MiniLM-L6-v2 (lower: more diverse)",
         f"{val} over {emb.get('n')} questions" if val is not None else "-"]]))
    if val is None and emb.get("note"):
        out.append(_note(f"embedding similarity {emb['note']}"))
    n = div.get("distinct_over")
    out.append(_note("distinct-n: distinct word n-grams / all word n-grams over "
                     + (f"a seeded sample of {n} questions" if n and n < published else "all questions")))
    return out


def _samples(rows: list[dict]) -> list[str]:
    out = ["<h2>Samples</h2>"]
    for r in rows:
        where = " / ".join(str(r[c]) for c in ("discipline", "subject") if r.get(c))
        q, a = str(r.get("question", "")), str(r.get("answer", ""))
        out.append(f"<p><b>{_e(r.get('id', ''))}</b> {_e(where)}</p>"
                   f'<div class="qa"><b>Q:</b> {_e(q[:800])}\n\n<b>A:</b> {_e(a[:800])}</div>')
    return out


def write(out_dir: Path, st: Published, info: RunInfo, quality: dict, title: Optional[str] = None) -> Path:
    splits = quality.get("rows", {})
    overview = [["source", quality.get("source", "")], ["rows in", quality.get("input_rows", 0)]]
    overview += [[f"published: {s}", n] for s, n in splits.items()]
    overview += [[f"removed: {k}", v] for k, v in quality.get("removed", {}).items()]
    if info.summary.get("model"):
        overview.append(["teacher", info.summary["model"].get("name", "")])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title or 'glan-local report')}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title or 'glan-local dataset report')}</h1>",
             _table(None, overview)]
    parts += _coverage(st, info) + _branches(quality.get("coverage") or {}) + _shapes(st) + _generation(info)
    parts += _quality(quality) + _diversity(quality.get("diversity") or {}, st.n) + _samples(st.samples())
    parts.append("</body></html>")
    d = out_dir / "report"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "index.html"
    atomic_write_text(path, "\n".join(parts))
    return path
